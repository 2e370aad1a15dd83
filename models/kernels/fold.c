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
#include <string.h>
#include "kernels.h"

#define CHUNK 16 /* columns of H a thread owns in the backward's scatter (one AVX-512 vector) */

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

MULTIVERSION
void fold_backward(const float *dz, const int64_t *rows, const int64_t *row_field, const float *tail,
                   int64_t ld_tail, const float *table, const float *w, int64_t ld, float *g, float *tail_acc,
                   float *dtable, float *dw, int64_t ld_dw, float *dbias, int64_t n_rows, int64_t dim,
                   int64_t fields, int64_t n_tail, int64_t width, int64_t batch) {
    const int64_t h = width;
#pragma omp parallel
    {
        /* G, dbias and A, each thread over its own columns of H: no two threads write one place */
#pragma omp for schedule(static)
        for (int64_t c0 = 0; c0 < h; c0 += CHUNK) {
            const int64_t c1 = c0 + CHUNK < h ? c0 + CHUNK : h;
            for (int64_t r = 0; r < n_rows; r++)
                for (int64_t i = c0; i < c1; i++) g[r * h + i] = 0.0f;
            for (int64_t i = c0; i < c1; i++) dbias[i] = 0.0f;
            for (int64_t c = 0; c < n_tail; c++)
                for (int64_t i = c0; i < c1; i++) tail_acc[c * h + i] = 0.0f;
            for (int64_t b = 0; b < batch; b++) {
                const float *d = dz + b * h;
                const int64_t *r = rows + b * fields;
                for (int64_t f = 0; f < fields; f++) {
                    float *gr = g + r[f] * h;
                    for (int64_t i = c0; i < c1; i++) gr[i] += d[i];
                }
                for (int64_t i = c0; i < c1; i++) dbias[i] += d[i];
                for (int64_t c = 0; c < n_tail; c++) {
                    const float x = tail[b * ld_tail + c];
                    float *acc = tail_acc + c * h;
                    for (int64_t i = c0; i < c1; i++) acc[i] += x * d[i];
                }
            }
        }
        /* dtable[r] = W_{field(r)}^T G[r]: a D-vector accumulated over H, in W's own layout */
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n_rows; r++) {
            float *out = dtable + r * dim;
            const float *gr = g + r * h;
            const int64_t col = row_field[r] * dim;
            for (int64_t d = 0; d < dim; d++) out[d] = 0.0f;
            for (int64_t i = 0; i < h; i++)
                for (int64_t d = 0; d < dim; d++) out[d] += gr[i] * w[i * ld + col + d];
        }
        /* dW_f[i] = sum over the rows r of field f of G[r, i] e(r) */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < h; i++) {
            float *out = dw + i * ld_dw;
            for (int64_t j = 0; j < fields * dim; j++) out[j] = 0.0f;
            for (int64_t r = 0; r < n_rows; r++) {
                const float x = g[r * h + i], *e = table + r * dim;
                float *o = out + row_field[r] * dim;
                for (int64_t d = 0; d < dim; d++) o[d] += x * e[d];
            }
        }
    }
}
