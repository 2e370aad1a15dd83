/* What every kernel source shares (models/kernels/native.py builds each with this directory's
 * headers in its cache key). */
#ifndef RECLOOP_KERNELS_H
#define RECLOOP_KERNELS_H

#include <stdint.h>

/* One clone of each kernel per x86-64 level (AVX-512, AVX2, baseline), picked when the library
 * loads: one build serves every CPU the cache directory may move to. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

#endif
