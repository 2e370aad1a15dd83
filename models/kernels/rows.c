/* out = zeros(out_rows, dim); out[index[i]] += src[i] for every i in order (torch's
 * `new_zeros(...).index_add_(0, index, src)`, the backward of an embedding lookup; see
 * models/kernels/rows.py).
 *
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
              int64_t dim, int64_t out_rows) {
    #pragma omp parallel if(n * dim >= 32768)
    {
        int64_t lo = 0, hi = out_rows;
#ifdef _OPENMP
        int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
        lo = out_rows * t / threads;
        hi = out_rows * (t + 1) / threads;
#endif
        memset(out + lo * dim, 0, (size_t)((hi - lo) * dim) * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            int64_t r = index[i];
            if (r >= lo && r < hi) add_row(out + r * dim, src + i * dim, dim);
        }
    }
}
