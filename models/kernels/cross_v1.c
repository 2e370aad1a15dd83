/* The cross network of DCN-V1 (models/interactions.py CrossNetV1), all L layers of a row in
 * one go while the row sits in L1, forward and backward (see models/kernels/cross.py):
 *
 *   forward:  s_l = x_l . w_l,   x_{l+1} = x0 * s_l + b_l + x_l          (l = 0..L-1)
 *   backward: with g = dL/dx_{l+1}, from l = L-1 down to 0:
 *             db_l += g,  ds = g . x0,  dx0 += g * s_l,  dw_l += ds * x_l,  g <- g + ds * w_l
 *             and finally dx0 += g (x_0 is x0).
 *
 * Rows are independent in the forward, which runs them on torch's OpenMP threads. The backward
 * sums dw and db over the rows: each block of `block` rows sums its own in row order (into
 * `partial`), then the blocks' sums are added in block order; with the 16 partial sums of each
 * dot product combined the same way every time, no result depends on the thread count.
 * float32 only. In torch ops the backward is some 25 passes over (B, N)
 * tensors per step; here it is one pass over the rows. */
#include <stdint.h>
#include <string.h>
#include "kernels.h"

#define LANES 16

static inline float dot(const float *restrict a, const float *restrict b, int64_t n) {
    float acc[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int k = 0; k < LANES; k++) acc[k] += a[i + k] * b[i + k];
    for (int k = 0; i < n; i++, k++) acc[k] += a[i] * b[i];
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int k = 0; k < width; k++) acc[k] += acc[k + width];
    return acc[0];
}

static inline void layer_forward(float *restrict next, const float *restrict x0, const float *restrict b,
                                 const float *restrict x, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) next[i] = x0[i] * s + b[i] + x[i];
}

/* One layer of one row's backward (restrict, so that GCC vectorizes it: written inline in the
 * row loop it stayed scalar, 1.8 ms for 1,024 x 261 x 3 on an AVX2 CPU). */
static inline void layer_backward(float *restrict db, float *restrict d0, float *restrict dw, float *restrict g,
                                  const float *restrict x, const float *restrict w, float s, float ds, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        db[i] += g[i];
        d0[i] += g[i] * s;
        dw[i] += ds * x[i];
        g[i] += ds * w[i];
    }
}

/* x0, out: (B, N); w, b: (L, N); xs: (L - 1, B, N) gets x_1..x_{L-1}; s: (L, B). */
MULTIVERSION
void cross_v1_forward(const float *restrict x0, const float *restrict w, const float *restrict bias,
                      float *restrict out, float *restrict xs, float *restrict s, int64_t rows, int64_t n,
                      int64_t layers) {
    #pragma omp parallel for schedule(static) if(rows * n * layers >= 32768)
    for (int64_t r = 0; r < rows; r++) {
        const float *x0r = x0 + r * n;
        const float *x = x0r;
        for (int64_t l = 0; l < layers; l++) {
            float sl = dot(x, w + l * n, n);
            s[l * rows + r] = sl;
            float *next = l + 1 < layers ? xs + (l * rows + r) * n : out + r * n;
            const float *bl = bias + l * n;
            layer_forward(next, x0r, bl, x, sl, n);
            x = next;
        }
    }
}

/* g: (B, N) the gradient of out; writes dx0 (B, N) and dw, db (L, N); partial: (blocks, 2, L, N)
 * and work: (blocks, N) floats of scratch, blocks = ceil(B / block) (block: fixed by the caller,
 * so that the order of every sum is fixed). */
MULTIVERSION
void cross_v1_backward(const float *restrict g, const float *restrict x0, const float *restrict w,
                       const float *restrict xs, const float *restrict s, float *restrict dx0,
                       float *restrict dw, float *restrict db, float *restrict partial, float *restrict work,
                       int64_t rows, int64_t n, int64_t layers, int64_t block) {
    int64_t blocks = (rows + block - 1) / block, size = layers * n;
    #pragma omp parallel for schedule(static) if(rows * n * layers >= 32768)
    for (int64_t k = 0; k < blocks; k++) {
        float *pw = partial + k * 2 * size, *pb = pw + size, *wk = work + k * n;
        memset(pw, 0, (size_t)(2 * size) * sizeof(float));
        int64_t end = (k + 1) * block < rows ? (k + 1) * block : rows;
        for (int64_t r = k * block; r < end; r++) {
            const float *x0r = x0 + r * n;
            float *d0 = dx0 + r * n;
            memcpy(wk, g + r * n, (size_t)n * sizeof(float));
            memset(d0, 0, (size_t)n * sizeof(float));
            for (int64_t l = layers - 1; l >= 0; l--) {
                const float *xl = l == 0 ? x0r : xs + ((l - 1) * rows + r) * n;
                const float *wl = w + l * n;
                float *dwl = pw + l * n, *dbl = pb + l * n;
                layer_backward(dbl, d0, dwl, wk, xl, wl, s[l * rows + r], dot(wk, x0r, n), n);
            }
            for (int64_t i = 0; i < n; i++) d0[i] += wk[i];
        }
    }
    #pragma omp parallel for schedule(static) if(blocks * size >= 32768)
    for (int64_t i = 0; i < size; i++) {
        float sw = 0.0f, sb = 0.0f;
        for (int64_t k = 0; k < blocks; k++) {
            sw += partial[k * 2 * size + i];
            sb += partial[k * 2 * size + size + i];
        }
        dw[i] = sw;
        db[i] = sb;
    }
}
