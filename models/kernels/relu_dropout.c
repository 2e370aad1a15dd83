/* Inverted dropout, optionally fused with the ReLU before it, in one pass over the
 * activations (see models/kernels/relu_dropout.py, which holds the same computation in torch ops
 * and checks that both give the same bits).
 *
 * The mask is a counter-based random function of (key, element index): element i is kept
 * when mix32(mix32(i ^ k1) ^ k2) >= drop, so it depends neither on the number of threads
 * nor on the order of the work, and the backward pass recomputes it instead of storing it.
 * mix32 is "lowbias32" from Chris Wellons' hash-prospector (two multiply-xorshift rounds).
 *
 *   forward:  y[i] = keep(i) && (!relu || x[i] > 0) ? x[i] * scale : 0
 *   backward: dx[i] = (relu ? y[i] > 0 : keep(i)) ? dy[i] * scale : 0
 * (after a ReLU, y > 0 exactly where the element was kept and x > 0, as scale >= 1).
 *
 * float32 and bfloat16 (stored as uint16; products rounded to nearest even, as torch does).
 * No loop has a branch: each computes the product and masks its bits (select_f32). GCC
 * vectorizes `keep && x > 0 ? x * scale : 0` only with AVX-512's masked operations; on an
 * AVX2 CPU (AMD Zen 3) that loop stayed scalar, with a mispredicted branch per element:
 * 2.0 ms for (1024, 256) instead of tens of microseconds.
 * Large tensors are split across torch's own OpenMP threads (see native.py: the library links
 * libgomp.so.1, which resolves to the copy torch has loaded, so torch.set_num_threads holds). */
#include <stddef.h>
#include <stdint.h>
#include "kernels.h"

/* Elementwise, so any split gives the same bits; small tensors stay on one thread. */
#define PARALLEL _Pragma("omp parallel for schedule(static) if(n >= 65536)")

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static inline int keep(int64_t i, uint32_t k1, uint32_t k2, uint32_t drop) {
    return mix32(mix32((uint32_t)i ^ k1) ^ k2) >= drop;
}

static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even; a NaN stays a (quiet) NaN */
    union { float f; uint32_t u; } v = {f};
    uint32_t nan = -(uint32_t)(f != f);
    return (uint16_t)((((v.u >> 16) | 0x40U) & nan) | (((v.u + 0x7fffU + ((v.u >> 16) & 1U)) >> 16) & ~nan));
}

/* value where pass is 1, +0 where it is 0, by masking the bits: the product is computed
 * either way, so there is no branch (GCC does not speculate a float multiply into a select). */
static inline float select_f32(int pass, float value) {
    union { float f; uint32_t u; } v = {value};
    v.u &= -(uint32_t)pass;
    return v.f;
}

static inline uint16_t select_bf16(int pass, uint16_t value) {
    return (uint16_t)(value & -(uint32_t)pass);
}

MULTIVERSION
void relu_dropout_forward_f32(const float *x, float *y, int64_t n, uint32_t k1, uint32_t k2,
                              uint32_t drop, float scale, int relu) {
    if (relu) {
        PARALLEL
        for (int64_t i = 0; i < n; i++)
            y[i] = select_f32(keep(i, k1, k2, drop) & (x[i] > 0.0f), x[i] * scale);
    } else {
        PARALLEL
        for (int64_t i = 0; i < n; i++)
            y[i] = select_f32(keep(i, k1, k2, drop), x[i] * scale);
    }
}

MULTIVERSION
void relu_dropout_backward_f32(const float *dy, const float *y, float *dx, int64_t n, uint32_t k1,
                               uint32_t k2, uint32_t drop, float scale, int relu) {
    if (relu) {
        PARALLEL
        for (int64_t i = 0; i < n; i++)
            dx[i] = select_f32(y[i] > 0.0f, dy[i] * scale);
    } else {
        PARALLEL
        for (int64_t i = 0; i < n; i++)
            dx[i] = select_f32(keep(i, k1, k2, drop), dy[i] * scale);
    }
}

MULTIVERSION
void relu_dropout_forward_bf16(const uint16_t *x, uint16_t *y, int64_t n, uint32_t k1, uint32_t k2,
                               uint32_t drop, float scale, int relu) {
    PARALLEL
    for (int64_t i = 0; i < n; i++) {
        float v = bf16_to_f32(x[i]);
        y[i] = select_bf16(keep(i, k1, k2, drop) & (!relu | (v > 0.0f)), f32_to_bf16(v * scale));
    }
}

MULTIVERSION
void relu_dropout_backward_bf16(const uint16_t *dy, const uint16_t *y, uint16_t *dx, int64_t n, uint32_t k1,
                                uint32_t k2, uint32_t drop, float scale, int relu) {
    PARALLEL
    for (int64_t i = 0; i < n; i++) {
        int pass = relu ? bf16_to_f32(y[i]) > 0.0f : keep(i, k1, k2, drop);
        dx[i] = select_bf16(pass, f32_to_bf16(bf16_to_f32(dy[i]) * scale));
    }
}
