/* Training-mode BatchNorm -> 2x2 max pool -> ReLU on channels-last CPU tensors, fused.
 *
 * Eager PyTorch makes about 13 passes over the full-resolution conv output per block and
 * step (BN statistics, normalize, pool, pool backward's zero fill and scatter, BN backward's
 * two passes...); on a memory-bound CPU those passes are most of the step. Because BN's
 * per-channel affine is monotonic when its scale is >= 0 (the caller folds the sign of gamma
 * into the conv weights), pool(bn(z)) == bn(pool(z)): the forward reads z once (statistics
 * and pool together) and the backward reads z once and writes its gradient once.
 *
 * Layout: z is (N, H, W, C) in memory (channels_last), pooled tensors (N, H/2, W/2, C).
 * The argmax within a window follows PyTorch's CPU max pool: first maximum in row-major
 * order, and a NaN replaces the running maximum. Types: float32 and bfloat16 (uint16 bits,
 * rounded to nearest even as PyTorch does); reductions accumulate in float per output row
 * and in double across rows.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef uint16_t bf16_t;

static inline float bf16_to_float(bf16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline bf16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16;
    return (bf16_t)(f != f ? 0x7FC0 : rounded);  /* branch-free, so the loops vectorize */
}

#define LOAD_f32(v) (v)
#define STORE_f32(v) (v)
#define LOAD_bf16(v) bf16_to_float(v)
#define STORE_bf16(v) float_to_bf16(v)

/* Adds per-thread partial sums (nthreads x width doubles) into out (width doubles). */
static void reduce_partials(const double *partial, int nthreads, int64_t width, double *out) {
    for (int t = 0; t < nthreads; t++)
        for (int64_t i = 0; i < width; i++) out[i] += partial[t * width + i];
}

/* The per-pixel and per-window loops run over the C contiguous channels; `restrict` and
 * branch-free selects let the compiler vectorize them (5x over indexed, branching code). */
#define DEFINE_TYPE(T, S)                                                                       \
static inline void stats_pool_window_##S(const T *restrict z0, const T *restrict z1,           \
        const T *restrict z2, const T *restrict z3, T *restrict pooled, float *restrict s,     \
        float *restrict q, int64_t C) {                                                        \
    for (int64_t c = 0; c < C; c++) {                                                          \
        float v0 = LOAD_##S(z0[c]), v1 = LOAD_##S(z1[c]), v2 = LOAD_##S(z2[c]), v3 = LOAD_##S(z3[c]); \
        s[c] += (v0 + v1) + (v2 + v3);                                                         \
        q[c] += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3);                                     \
        float m = v0;                                                                          \
        m = (v1 > m || v1 != v1) ? v1 : m;                                                     \
        m = (v2 > m || v2 != v2) ? v2 : m;                                                     \
        m = (v3 > m || v3 != v3) ? v3 : m;                                                     \
        pooled[c] = STORE_##S(m);                                                              \
    }                                                                                          \
}                                                                                              \
static inline void stats_pixel_##S(const T *restrict z, float *restrict s, float *restrict q,  \
        int64_t C) {                                                                           \
    for (int64_t c = 0; c < C; c++) {                                                          \
        float v = LOAD_##S(z[c]);                                                              \
        s[c] += v;                                                                             \
        q[c] += v * v;                                                                         \
    }                                                                                          \
}                                                                                              \
static inline void grad_window_##S(const T *restrict z0, const T *restrict z1,                 \
        const T *restrict z2, const T *restrict z3, const T *restrict grad_out,                \
        const T *restrict out, T *restrict g0, T *restrict g1, T *restrict g2, T *restrict g3, \
        const float *restrict a, const float *restrict c1, const float *restrict c2, int64_t C) { \
    for (int64_t c = 0; c < C; c++) {                                                          \
        float v0 = LOAD_##S(z0[c]), v1 = LOAD_##S(z1[c]), v2 = LOAD_##S(z2[c]), v3 = LOAD_##S(z3[c]); \
        float m = v0;                                                                          \
        int t1 = v1 > m || v1 != v1; m = t1 ? v1 : m;                                          \
        int t2 = v2 > m || v2 != v2; m = t2 ? v2 : m;                                          \
        int t3 = v3 > m || v3 != v3;                                                           \
        float g = LOAD_##S(out[c]) > 0.0f ? a[c] * LOAD_##S(grad_out[c]) : 0.0f;               \
        /* the argmax is the last position whose test passed; the shares are separate         \
         * statements because gcc 12 does not vectorize the loop with them inline */           \
        float s3 = t3 ? g : 0.0f, s2 = (t2 && !t3) ? g : 0.0f;                                 \
        float s1 = (t1 && !t2 && !t3) ? g : 0.0f, s0 = (!t1 && !t2 && !t3) ? g : 0.0f;         \
        g0[c] = STORE_##S(c2[c] * v0 + c1[c] + s0);                                            \
        g1[c] = STORE_##S(c2[c] * v1 + c1[c] + s1);                                            \
        g2[c] = STORE_##S(c2[c] * v2 + c1[c] + s2);                                            \
        g3[c] = STORE_##S(c2[c] * v3 + c1[c] + s3);                                            \
    }                                                                                          \
}                                                                                              \
static inline void grad_pixel_##S(const T *restrict z, T *restrict g, const float *restrict c1, \
        const float *restrict c2, int64_t C) {                                                 \
    for (int64_t c = 0; c < C; c++) g[c] = STORE_##S(c2[c] * LOAD_##S(z[c]) + c1[c]);          \
}                                                                                              \
                                                                                               \
/* Forward pass 1: per-channel sum and sum of squares of z (sums: 2*C doubles, zeroed by the   \
 * caller) and the raw 2x2 max of z into pooled. */                                            \
void stats_pool_##S(const T *z, T *pooled, double *sums, int64_t N, int64_t C, int64_t H,      \
        int64_t W, int nthreads) {                                                             \
    const int64_t Ho = H / 2, Wo = W / 2, rows = N * Ho;                                       \
    double *partial = calloc((size_t)nthreads * 2 * C, sizeof(double));                        \
    _Pragma("omp parallel num_threads(nthreads)")                                              \
    {                                                                                          \
        double *ps = partial + (int64_t)omp_get_thread_num() * 2 * C, *pq = ps + C;            \
        float *s = malloc(sizeof(float) * 2 * C), *q = s + C;                                  \
        _Pragma("omp for schedule(static)")                                                    \
        for (int64_t r = 0; r < rows; r++) {                                                   \
            const int64_t n = r / Ho, ho = r % Ho;                                             \
            /* the last pooled row also owns an odd input row that no window covers */         \
            const int64_t h_end = (ho == Ho - 1) ? H : 2 * ho + 2;                             \
            memset(s, 0, sizeof(float) * 2 * C);                                               \
            for (int64_t wo = 0; wo < Wo; wo++) {                                              \
                const T *z0 = z + ((n * H + 2 * ho) * W + 2 * wo) * C, *z2 = z0 + W * C;       \
                stats_pool_window_##S(z0, z0 + C, z2, z2 + C, pooled + ((n * Ho + ho) * Wo + wo) * C, s, q, C); \
            }                                                                                  \
            for (int64_t h = 2 * ho; h < h_end; h++)                                           \
                for (int64_t w = (h < 2 * ho + 2) ? 2 * Wo : 0; w < W; w++)                    \
                    stats_pixel_##S(z + ((n * H + h) * W + w) * C, s, q, C);                   \
            for (int64_t c = 0; c < C; c++) { ps[c] += s[c]; pq[c] += q[c]; }                  \
        }                                                                                      \
        free(s);                                                                               \
    }                                                                                          \
    reduce_partials(partial, nthreads, 2 * C, sums);                                           \
    free(partial);                                                                             \
}                                                                                              \
                                                                                               \
/* Forward pass 2: out = max(a * pooled + b, 0) per channel. */                                \
void affine_relu_##S(const T *restrict pooled, T *restrict out, const float *restrict a,       \
        const float *restrict b, int64_t pixels, int64_t C, int nthreads) {                    \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                         \
    for (int64_t p = 0; p < pixels; p++)                                                       \
        for (int64_t c = 0; c < C; c++) {                                                      \
            float v = a[c] * LOAD_##S(pooled[p * C + c]) + b[c];                               \
            out[p * C + c] = STORE_##S((v > 0.0f || v != v) ? v : 0.0f); /* NaN stays, as in relu */ \
        }                                                                                      \
}                                                                                              \
                                                                                               \
/* Backward pass 1: sums[c] = sum of grad_out where out > 0, sums[C + c] = the same weighted   \
 * by (pooled - mean) * invstd. */                                                             \
void backward_reduce_##S(const T *restrict grad_out, const T *restrict out,                    \
        const T *restrict pooled, const float *restrict mean, const float *restrict invstd,    \
        double *sums, int64_t pixels, int64_t C, int nthreads) {                               \
    double *partial = calloc((size_t)nthreads * 2 * C, sizeof(double));                        \
    const int64_t block = 256, blocks = (pixels + block - 1) / block;                          \
    _Pragma("omp parallel num_threads(nthreads)")                                              \
    {                                                                                          \
        double *pb = partial + (int64_t)omp_get_thread_num() * 2 * C, *pg = pb + C;            \
        float *sb = malloc(sizeof(float) * 2 * C), *sg = sb + C;                               \
        _Pragma("omp for schedule(static)")                                                    \
        for (int64_t k = 0; k < blocks; k++) {                                                 \
            memset(sb, 0, sizeof(float) * 2 * C);                                              \
            const int64_t end = (k + 1) * block < pixels ? (k + 1) * block : pixels;           \
            for (int64_t p = k * block; p < end; p++) {                                        \
                const T *go = grad_out + p * C, *o = out + p * C, *pl = pooled + p * C;        \
                for (int64_t c = 0; c < C; c++) {                                              \
                    float g = LOAD_##S(o[c]) > 0.0f ? LOAD_##S(go[c]) : 0.0f;                  \
                    sb[c] += g;                                                                \
                    sg[c] += g * ((LOAD_##S(pl[c]) - mean[c]) * invstd[c]);                    \
                }                                                                              \
            }                                                                                  \
            for (int64_t c = 0; c < C; c++) { pb[c] += sb[c]; pg[c] += sg[c]; }                \
        }                                                                                      \
        free(sb);                                                                              \
    }                                                                                          \
    reduce_partials(partial, nthreads, 2 * C, sums);                                           \
    free(partial);                                                                             \
}                                                                                              \
                                                                                               \
/* Backward pass 2: grad_z = c2 * z + c1 everywhere (the statistics' share) plus, at each      \
 * window's argmax, a * grad_out where out > 0 (the pooled path's share). grad_z may be z:     \
 * every element is read before it is written, at the same index, and never read again. */    \
void backward_input_##S(const T *z, const T *grad_out, const T *out, T *grad_z,                \
        const float *a, const float *c1, const float *c2, int64_t N, int64_t C, int64_t H,     \
        int64_t W, int nthreads) {                                                             \
    const int64_t Ho = H / 2, Wo = W / 2, rows = N * Ho;                                       \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                         \
    for (int64_t r = 0; r < rows; r++) {                                                       \
        const int64_t n = r / Ho, ho = r % Ho;                                                 \
        const int64_t h_end = (ho == Ho - 1) ? H : 2 * ho + 2;                                 \
        for (int64_t wo = 0; wo < Wo; wo++) {                                                  \
            const int64_t i = ((n * H + 2 * ho) * W + 2 * wo) * C, o = ((n * Ho + ho) * Wo + wo) * C; \
            grad_window_##S(z + i, z + i + C, z + i + W * C, z + i + W * C + C, grad_out + o,  \
                            out + o, grad_z + i, grad_z + i + C, grad_z + i + W * C,           \
                            grad_z + i + W * C + C, a, c1, c2, C);                             \
        }                                                                                      \
        for (int64_t h = 2 * ho; h < h_end; h++)                                               \
            for (int64_t w = (h < 2 * ho + 2) ? 2 * Wo : 0; w < W; w++) {                      \
                const int64_t i = ((n * H + h) * W + w) * C;                                   \
                grad_pixel_##S(z + i, grad_z + i, c1, c2, C);                                  \
            }                                                                                  \
    }                                                                                          \
}

DEFINE_TYPE(float, f32)
DEFINE_TYPE(bf16_t, bf16)
