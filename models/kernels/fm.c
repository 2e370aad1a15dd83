/* The pairwise term of a factorization machine over field vectors (models/interactions.py
 * FactorizationMachine; see models/kernels/fm.py), one pass over a row's (F, D) vectors:
 *
 *   forward:  s_d = sum_f v_fd,   y = 0.5 * sum_f sum_d v_fd (s_d - v_fd)
 *   backward: dv_fd = g * (s_d - v_fd)
 *
 * (sum_f v_f . (s - v_f) is the sum over ordered pairs of fields, twice the pairwise term;
 * unlike the square of the sum minus the sum of squares it does not subtract large numbers,
 * and one field gives exactly 0 whether or not the compiler fuses multiply and add.)
 * Rows are independent and run on torch's OpenMP threads; each row's sums run in field
 * order, so the results do not depend on the thread count. float32 only. */
#include <stdint.h>
#include "kernels.h"

static inline void accumulate(float *restrict s, const float *restrict v, int64_t d) {
    for (int64_t i = 0; i < d; i++) s[i] += v[i];
}

static inline float pairs(const float *restrict v, const float *restrict s, int64_t d) {
    float acc = 0.0f;
    for (int64_t i = 0; i < d; i++) acc += v[i] * (s[i] - v[i]);
    return acc;
}

static inline void row_backward(float *restrict dv, const float *restrict v, const float *restrict s, float g,
                                int64_t d) {
    for (int64_t i = 0; i < d; i++) dv[i] = g * (s[i] - v[i]);
}

/* v: (B, F, D); y: (B,); s: (B, D) gets the field sums. */
MULTIVERSION
void fm_forward(const float *restrict v, float *restrict y, float *restrict s, int64_t rows, int64_t fields,
                int64_t dim) {
    #pragma omp parallel for schedule(static) if(rows * fields * dim >= 32768)
    for (int64_t r = 0; r < rows; r++) {
        const float *vr = v + r * fields * dim;
        float *sr = s + r * dim;
        for (int64_t i = 0; i < dim; i++) sr[i] = 0.0f;
        for (int64_t f = 0; f < fields; f++) accumulate(sr, vr + f * dim, dim);
        float acc = 0.0f;
        for (int64_t f = 0; f < fields; f++) acc += pairs(vr + f * dim, sr, dim);
        y[r] = 0.5f * acc;
    }
}

/* g: (B,) the gradient of y; writes dv (B, F, D). */
MULTIVERSION
void fm_backward(const float *restrict g, const float *restrict v, const float *restrict s, float *restrict dv,
                 int64_t rows, int64_t fields, int64_t dim) {
    #pragma omp parallel for schedule(static) if(rows * fields * dim >= 32768)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t f = 0; f < fields; f++) {
            int64_t at = (r * fields + f) * dim;
            row_backward(dv + at, v + at, s + r * dim, g[r], dim);
        }
}
