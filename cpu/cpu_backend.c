/* cpu/cpu_backend.c - the CPU implementation of the backend ops table. */
#include "cpu/cpu_backend.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct cpu_ctx {
    int threads;
    float *scores;     /* attention scratch [QB, seqlen] */
    size_t scores_cap;
} cpu_ctx;

static void *cpu_alloc(qs_backend *be, size_t bytes) {
    (void)be;
    void *p = NULL;
    return posix_memalign(&p, 64, bytes ? bytes : 64) == 0 ? p : NULL;
}

static void cpu_free(qs_backend *be, void *p) {
    (void)be;
    free(p);
}

static int cpu_copy(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
    (void)be;
    (void)err;
    memcpy(dst, src, bytes);
    return 0;
}

static void cpu_gemm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc) {
    (void)be;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda,
                b, ldb, beta, c, ldc);
}

static void cpu_rmsnorm(qs_backend *be, float *y, const float *x, const float *g, int rows, int dim, float eps) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double ss = 0; /* fixed order: deterministic whatever the thread count */
        for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / dim + eps));
        for (int i = 0; i < dim; i++) yr[i] = xr[i] * inv * g[i];
    }
}

static void cpu_rope(qs_backend *be, float *x, int n_tok, int n_heads, int hd, int stride, const int *pos,
                     const float *cos_t, const float *sin_t) {
    (void)be;
    int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < n_tok; t++) {
        const float *c = cos_t + (size_t)pos[t] * half, *s = sin_t + (size_t)pos[t] * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (size_t)t * stride + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

/* Causal attention in query blocks of QB rows: block [i0, i1) only meets keys [0, i1), so the
 * masked upper triangle is (almost) never computed. */
#define QB 256
static int cpu_attention(qs_backend *be, float *out, const float *q, const float *k, const float *v, int L,
                         int n_heads, int n_kv, int hd) {
    cpu_ctx *c = be->ctx;
    size_t need = (size_t)QB * L;
    if (need > c->scores_cap) {
        free(c->scores);
        c->scores = malloc(need * sizeof(float));
        c->scores_cap = c->scores ? need : 0;
        if (!c->scores) return -ENOMEM;
    }
    float *S = c->scores;
    int qs = n_heads * hd, ks = n_kv * hd, group = n_heads / n_kv;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_heads; h++) {
        const float *qh = q + (size_t)h * hd, *kh = k + (size_t)(h / group) * hd, *vh = v + (size_t)(h / group) * hd;
        for (int i0 = 0; i0 < L; i0 += QB) {
            int nb = L - i0 < QB ? L - i0 : QB, nk = i0 + nb;
            /* S[nb, nk] = scale * Q_h[i0:i0+nb] K_h[0:nk]^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, nk, hd, scale, qh + (size_t)i0 * qs, qs, kh, ks,
                        0.0f, S, nk);
#pragma omp parallel for schedule(static)
            for (int r = 0; r < nb; r++) {
                int i = i0 + r;
                float *row = S + (size_t)r * nk, mx = row[0];
                for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
                double sum = 0;
                for (int j = 0; j <= i; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j <= i; j++) row[j] *= inv;
                for (int j = i + 1; j < nk; j++) row[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, hd, nk, 1.0f, S, nk, vh, ks, 0.0f,
                        out + (size_t)i0 * qs + (size_t)h * hd, qs);
        }
    }
    return 0;
}

static void cpu_swiglu(qs_backend *be, float *y, const float *g, const float *u, size_t n) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void cpu_add(qs_backend *be, float *y, const float *x, size_t n) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void cpu_add_bias(qs_backend *be, float *y, const float *b, int rows, int cols) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < cols; i++) y[(size_t)r * cols + i] += b[i];
}

static void cpu_destroy(qs_backend *be) {
    if (!be) return;
    cpu_ctx *c = be->ctx;
    free(c->scores);
    free(c);
    free(be);
}

static const qs_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .gemm = cpu_gemm,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .add_bias = cpu_add_bias,
};

int qs_cpu_backend_create(qs_backend **out, int threads, qs_error *err) {
    *out = NULL;
    qs_backend *be = calloc(1, sizeof *be);
    cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    c->threads = threads > 0 ? threads : omp_get_num_procs();
    omp_set_num_threads(c->threads);
    openblas_set_num_threads(c->threads);
    be->ops = &cpu_ops;
    be->ctx = c;
    *out = be;
    return 0;
}
