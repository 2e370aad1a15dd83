/* An MLP's first layer over looked-up embeddings, folded through the table
 * (see models/kernels/fold.py):
 *
 *     z[b] = bias + sum_f W_f e(rows[b F + f]) + T tail[b]      x = [e_1 .. e_F, tail'], z = W x + bias
 *          = bias + sum_f P[rows[b F + f]] + T tail[b]          P[r] = W_{field(r)} e(r)   (R x H)
 *
 * W_f is the H x D block of W's columns for field f; T (H x C) is what the tail's C values are
 * multiplied by (fold.py: W's tail columns, or with a vector per tail value their products). Where a
 * table's R rows are few next to the B F rows a batch looks up, P costs R D H multiply-adds
 * instead of the B F D H of the product with x, and the backward likewise works per table row:
 *
 *     G[r]     = sum over (b, f) with rows[b F + f] = r of dz[b]          (R x H)
 *     dtable[r] = W_{field(r)}^T G[r]      dW_f = sum_{r in f} G[r] e(r)^T      dbias = sum_b dz[b]
 *     A[c]     = sum_b tail[b, c] dz[b]   (C x H, from which fold.py makes the tail's gradients)
 *
 * Every output element is summed in one fixed order (rows, then fields, then the tail; batch
 * rows in order), whatever the number of threads: the same bits at any thread count. */
#include <stdint.h>
#include "kernels.h"

#define CHUNK 64 /* the backward's scatter splits H between the threads in blocks of this many columns */

/* wt (N x H) = the first N columns of w (H x ld), transposed. */
static void transpose(const float *w, int64_t ld, float *wt, int64_t n, int64_t h) {
#pragma omp for schedule(static)
    for (int64_t j0 = 0; j0 < n; j0 += 8)
        for (int64_t i = 0; i < h; i++)
            for (int64_t j = j0; j < j0 + 8 && j < n; j++)
                wt[j * h + i] = w[i * ld + j];
}

MULTIVERSION
void fold_forward(const float *table, const float *w, int64_t ld, const float *bias, const int64_t *rows,
                  const int64_t *row_field, const float *tail, int64_t ld_tail, const float *tail_w, float *wt,
                  float *products, float *z, int64_t n_rows, int64_t dim, int64_t fields, int64_t n_tail,
                  int64_t width, int64_t batch) {
    const int64_t h = width, n = fields * dim;
#pragma omp parallel
    {
        transpose(w, ld, wt, n, h); /* ends in a barrier */
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n_rows; r++) {
            float *p = products + r * h;
            const float *e = table + r * dim, *block = wt + row_field[r] * dim * h;
            for (int64_t i = 0; i < h; i++) p[i] = 0.0f;
            for (int64_t d = 0; d < dim; d++)
                for (int64_t i = 0; i < h; i++) p[i] += e[d] * block[d * h + i];
        }
#pragma omp for schedule(static)
        for (int64_t b = 0; b < batch; b++) {
            float *out = z + b * h;
            const int64_t *r = rows + b * fields;
            for (int64_t i = 0; i < h; i++) out[i] = bias[i];
            for (int64_t f = 0; f < fields; f++) {
                const float *p = products + r[f] * h;
                for (int64_t i = 0; i < h; i++) out[i] += p[i];
            }
            for (int64_t c = 0; c < n_tail; c++) {
                const float x = tail[b * ld_tail + c], *wc = tail_w + c * h;
                for (int64_t i = 0; i < h; i++) out[i] += x * wc[i];
            }
        }
    }
}

/* G, dbias and A over the columns [c0, c0 + cols) of H, the batch rows in order. A thread's
 * share of G (its columns of every table row) stays in the L1 cache while the batch goes by:
 * 64 columns of Adult's 175 rows are 45 KB (one 128-column block per thread, 90 KB, ran the
 * backward in 590 us against 250). */
static inline __attribute__((always_inline)) void scatter(
        const float *restrict dz, const int64_t *restrict rows, const float *restrict tail, int64_t ld_tail,
        float *restrict g, float *restrict tail_acc, float *restrict dbias, int64_t n_rows, int64_t fields,
        int64_t n_tail, int64_t h, int64_t batch, int64_t c0, int64_t cols) {
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < cols; i++) g[r * h + c0 + i] = 0.0f;
    for (int64_t i = 0; i < cols; i++) dbias[c0 + i] = 0.0f;
    for (int64_t c = 0; c < n_tail; c++)
        for (int64_t i = 0; i < cols; i++) tail_acc[c * h + c0 + i] = 0.0f;
    for (int64_t b = 0; b < batch; b++) {
        const float *restrict d = dz + b * h + c0;
        const int64_t *r = rows + b * fields;
        for (int64_t f = 0; f < fields; f++) {
            float *restrict gr = g + r[f] * h + c0;
            for (int64_t i = 0; i < cols; i++) gr[i] += d[i];
        }
        for (int64_t i = 0; i < cols; i++) dbias[c0 + i] += d[i];
        for (int64_t c = 0; c < n_tail; c++) {
            const float x = tail[b * ld_tail + c];
            float *restrict acc = tail_acc + c * h + c0;
            for (int64_t i = 0; i < cols; i++) acc[i] += x * d[i];
        }
    }
}

MULTIVERSION
void fold_backward(const float *dz, const int64_t *rows, const int64_t *row_field, const float *tail,
                   int64_t ld_tail, const float *table, const float *w, int64_t ld, float *g, float *tail_acc,
                   float *dtable, float *dw, int64_t ld_dw, float *dbias, int64_t n_rows, int64_t dim,
                   int64_t fields, int64_t n_tail, int64_t width, int64_t batch) {
    const int64_t h = width, n = fields * dim;
#pragma omp parallel
    {
        /* G, dbias and A: each thread over its own columns of H, so no two threads write one
         * place; a constant width lets the compiler unroll the loops */
#pragma omp for schedule(static)
        for (int64_t c0 = 0; c0 < h; c0 += CHUNK) {
            if (c0 + CHUNK <= h)
                scatter(dz, rows, tail, ld_tail, g, tail_acc, dbias, n_rows, fields, n_tail, h, batch, c0, CHUNK);
            else
                scatter(dz, rows, tail, ld_tail, g, tail_acc, dbias, n_rows, fields, n_tail, h, batch, c0, h - c0);
        }
        /* dtable[r] = W_{field(r)}^T G[r]: a D-vector summed over H in four interleaved partial
         * sums (a fixed order; one chain of H dependent adds was the loop's whole time) */
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n_rows; r++) {
            float acc[4][64];
            const float *gr = g + r * h;
            const int64_t col = row_field[r] * dim;
            for (int64_t d0 = 0; d0 < dim; d0 += 64) {
                const int64_t dn = dim - d0 < 64 ? dim - d0 : 64;
                for (int k = 0; k < 4; k++)
                    for (int64_t d = 0; d < dn; d++) acc[k][d] = 0.0f;
                int64_t i = 0;
                for (; i + 4 <= h; i += 4)
                    for (int k = 0; k < 4; k++)
                        for (int64_t d = 0; d < dn; d++) acc[k][d] += gr[i + k] * w[(i + k) * ld + col + d0 + d];
                for (; i < h; i++)
                    for (int64_t d = 0; d < dn; d++) acc[0][d] += gr[i] * w[i * ld + col + d0 + d];
                for (int64_t d = 0; d < dn; d++)
                    dtable[r * dim + d0 + d] = (acc[0][d] + acc[1][d]) + (acc[2][d] + acc[3][d]);
            }
        }
        /* dW_f[i] = sum over the rows r of field f of G[r, i] e(r): 16 rows of dW at a time, which
         * stay in cache while the rows of G go by (a contiguous read of 16 floats each) */
#pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < h; i0 += 16) {
            const int64_t i1 = i0 + 16 < h ? i0 + 16 : h;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = 0; j < n; j++) dw[i * ld_dw + j] = 0.0f;
            for (int64_t r = 0; r < n_rows; r++) {
                const float *e = table + r * dim, *gr = g + r * h;
                const int64_t col = row_field[r] * dim;
                for (int64_t i = i0; i < i1; i++) {
                    const float x = gr[i];
                    float *out = dw + i * ld_dw + col;
                    for (int64_t d = 0; d < dim; d++) out[d] += x * e[d];
                }
            }
        }
    }
}
