/* The cross network of DCN-V1 (models/interactions.py CrossNetV1), all L layers of a row in
 * one go while the row sits in L1, forward and backward (see models/kernels/cross.py):
 *
 *   forward:  s_l = x_l . w_l,   x_{l+1} = x0 * s_l + b_l + x_l          (l = 0..L-1)
 *   backward: with g = dL/dx_{l+1}, from l = L-1 down to 0:
 *             db_l += g,  ds = g . x0,  dx0 += g * s_l,  dw_l += ds * x_l,  g <- g + ds * w_l
 *             and finally dx0 += g (x_0 is x0).
 *
 * Rows are processed in order by one thread and every sum has a fixed order (16 partial sums
 * per dot product, combined the same way each time), so the results do not depend on the
 * thread count. float32 only. In torch ops the backward is some 25 passes over (B, N)
 * tensors per step; here it is one pass over the rows. */
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

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

/* x0, out: (B, N); w, b: (L, N); xs: (L - 1, B, N) gets x_1..x_{L-1}; s: (L, B). */
MULTIVERSION
void cross_v1_forward(const float *restrict x0, const float *restrict w, const float *restrict bias,
                      float *restrict out, float *restrict xs, float *restrict s, int64_t rows, int64_t n,
                      int64_t layers) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x0r = x0 + r * n;
        const float *x = x0r;
        for (int64_t l = 0; l < layers; l++) {
            float sl = dot(x, w + l * n, n);
            s[l * rows + r] = sl;
            float *next = l + 1 < layers ? xs + (l * rows + r) * n : out + r * n;
            const float *bl = bias + l * n;
            for (int64_t i = 0; i < n; i++) next[i] = x0r[i] * sl + bl[i] + x[i];
            x = next;
        }
    }
}

/* g: (B, N) the gradient of out; writes dx0 (B, N); adds into dw, db (L, N), which the caller
 * zeroes; work: N floats. */
MULTIVERSION
void cross_v1_backward(const float *restrict g, const float *restrict x0, const float *restrict w,
                       const float *restrict xs, const float *restrict s, float *restrict dx0,
                       float *restrict dw, float *restrict db, float *restrict work, int64_t rows, int64_t n,
                       int64_t layers) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x0r = x0 + r * n;
        float *d0 = dx0 + r * n;
        memcpy(work, g + r * n, (size_t)n * sizeof(float));
        memset(d0, 0, (size_t)n * sizeof(float));
        for (int64_t l = layers - 1; l >= 0; l--) {
            const float *xl = l == 0 ? x0r : xs + ((l - 1) * rows + r) * n;
            const float *wl = w + l * n;
            float *dwl = dw + l * n, *dbl = db + l * n;
            float ds = dot(work, x0r, n), sl = s[l * rows + r];
            for (int64_t i = 0; i < n; i++) {
                dbl[i] += work[i];
                d0[i] += work[i] * sl;
                dwl[i] += ds * xl[i];
                work[i] += ds * wl[i];
            }
        }
        for (int64_t i = 0; i < n; i++) d0[i] += work[i];
    }
}
