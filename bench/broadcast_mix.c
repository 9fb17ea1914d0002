/* The instruction mixes of the sparse kernel's micro-kernels on an x86 core with AVX2/FMA, one thread: why the
 * direct mode (8 filters as one vector: one broadcast input per FMA) lost to filter passes of 4 filters x 3 position
 * vectors (4 broadcast weights and 3 input vectors per 12 FMAs, the dense kernel's mix) on Zen 3.
 * Run: gcc -O3 -march=native bench/broadcast_mix.c -o /tmp/broadcast_mix && /tmp/broadcast_mix
 * Prints GFLOP/s of each mix (12 accumulators each, operands from L1). */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static float x[4096] __attribute__((aligned(64)));
static float w[4096] __attribute__((aligned(64)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float total(const __m256 *a, int n) {
    float s = 0, tmp[8];
    for (int i = 0; i < n; i++) {
        _mm256_storeu_ps(tmp, a[i]);
        s += tmp[0];
    }
    return s;
}

int main(void) {
    const long n = 20000000;
    for (int i = 0; i < 4096; i++) {
        x[i] = 1e-3f * (i % 7);
        w[i] = 1e-3f * (i % 5);
    }
    __m256 a[12];
    /* direct mode: one weight vector (8 filters), 12 positions, each input broadcast for one FMA */
    for (int i = 0; i < 12; i++) a[i] = _mm256_setzero_ps();
    double t0 = now();
    for (long it = 0; it < n; it++) {
        const float *xo = x + (it & 63) * 16;
        __m256 wv = _mm256_load_ps(w + (it & 31) * 8);
        for (int p = 0; p < 12; p++) a[p] = _mm256_fmadd_ps(wv, _mm256_broadcast_ss(xo + p * 3), a[p]);
    }
    double t = now() - t0;
    printf("12 positions x 1 filter vector (12 broadcasts / 12 FMAs): %.1f GFLOP/s (%g)\n", n * 12 * 16 / t / 1e9,
           total(a, 12));
    /* filter pass: 4 filters broadcast x 3 vectors of positions */
    for (int i = 0; i < 12; i++) a[i] = _mm256_setzero_ps();
    t0 = now();
    for (long it = 0; it < n; it++) {
        const float *xo = x + (it & 63) * 16, *wo = w + (it & 31) * 8;
        __m256 x0 = _mm256_loadu_ps(xo), x1 = _mm256_loadu_ps(xo + 8), x2 = _mm256_loadu_ps(xo + 16);
        for (int f = 0; f < 4; f++) {
            __m256 b = _mm256_broadcast_ss(wo + f);
            a[f * 3] = _mm256_fmadd_ps(b, x0, a[f * 3]);
            a[f * 3 + 1] = _mm256_fmadd_ps(b, x1, a[f * 3 + 1]);
            a[f * 3 + 2] = _mm256_fmadd_ps(b, x2, a[f * 3 + 2]);
        }
    }
    t = now() - t0;
    printf("4 filters x 3 position vectors (4 broadcasts / 12 FMAs): %.1f GFLOP/s (%g)\n", n * 12 * 16 / t / 1e9,
           total(a, 12));
    return 0;
}
