/* The two sides of an embedding lookup (see models/kernels/rows.py).
 *
 * rows_gather: out[b] = [W[index[b F]], ..., W[index[b F + F - 1]], tail[b]], the looked-up
 * rows of F fields and a tail of T floats per batch row, written straight into one (B, F D + T)
 * matrix (what index_select, view and cat made in three passes); or, with vectors (T, V),
 * [..., tail[b, 0] vectors[0], ..., tail[b, T - 1] vectors[T - 1]]: (B, F D + T V).
 *
 * rows_add: out = zeros(out_rows, dim); out[index[i]] += src row i for every i in order (torch's
 * `new_zeros(...).index_add_(0, index, src)`, the lookup's backward). Row i = b F + f lies at
 * src + b ld + f fs: (ld, fs) = (dim, 0) with F = 1 is a plain (N, dim) matrix; (L, dim) reads the
 * fields' columns of a (B, L) gradient in place; (dim, 0) reads row b for every field (the
 * gradient of a sum over the fields).
 * Each of torch's OpenMP threads owns a range of output rows, zeroes it, and scans the whole
 * index for its rows; a row's sum therefore runs in index order whatever the thread count.
 * Indices must lie in [0, out_rows) (the caller's lookups have already read those rows).
 * float32 only. */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "kernels.h"

static inline void add_row(float *restrict out, const float *restrict src, int64_t dim) {
    for (int64_t d = 0; d < dim; d++) out[d] += src[d];
}

MULTIVERSION
void rows_add(const float *restrict src, const int64_t *restrict index, float *restrict out, int64_t n,
              int64_t dim, int64_t out_rows, int64_t fields, int64_t ld, int64_t fs) {
    #pragma omp parallel if(n * dim >= 32768)
    {
        int64_t lo = 0, hi = out_rows;
#ifdef _OPENMP
        int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
        lo = out_rows * t / threads;
        hi = out_rows * (t + 1) / threads;
#endif
        memset(out + lo * dim, 0, (size_t)((hi - lo) * dim) * sizeof(float));
        for (int64_t i = 0, b = 0; i < n; b++) {
            const float *row = src + b * ld;
            for (int64_t f = 0; f < fields; f++, i++) {
                int64_t r = index[i];
                if (r >= lo && r < hi) add_row(out + r * dim, row + f * fs, dim);
            }
        }
    }
}

MULTIVERSION
void rows_gather(const float *restrict w, const int64_t *restrict index, const float *restrict tail,
                 const float *restrict vectors, float *restrict out, int64_t batch, int64_t fields, int64_t dim,
                 int64_t tail_width, int64_t vector_dim) {
    /* vectors (tail_width, vector_dim): tail value c scales vector c (a continuous field's
     * embedding); NULL: the tail values are copied (vector_dim is then 1). */
    int64_t ld = fields * dim + tail_width * vector_dim;
    #pragma omp parallel for schedule(static) if(batch * ld >= 65536)
    for (int64_t b = 0; b < batch; b++) {
        float *o = out + b * ld;
        const int64_t *ix = index + b * fields;
        for (int64_t f = 0; f < fields; f++)
            memcpy(o + f * dim, w + ix[f] * dim, (size_t)dim * sizeof(float));
        o += fields * dim;
        const float *t = tail + b * tail_width;
        if (vectors) {
            for (int64_t c = 0; c < tail_width; c++)
                for (int64_t d = 0; d < vector_dim; d++)
                    o[c * vector_dim + d] = t[c] * vectors[c * vector_dim + d];
        } else if (tail_width) {
            memcpy(o, t, (size_t)tail_width * sizeof(float));
        }
    }
}
