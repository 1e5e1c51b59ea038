/* tests/test_cpu_ops.c - every CPU backend op against a naive double-precision reference on seeded
 * random data (never zeros), odd sizes, GQA with fewer KV heads, attention longer than one query
 * block, and the RoPE tables with LLaMA-3 scaling. Tolerance: max abs error <= 1e-4 x (1 + max
 * |ref|); fp32 sums of <= 300 terms of O(1) values are far inside it. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/registry.h"
#include "model/rope.h"
#include "tests/testutil.h"

static uint64_t s = 0x1234567;
static float rnd(void) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    float v = (float)((s >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
    return v == 0 ? 0.5f : v;
}
static float *rvec(size_t n) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = rnd();
    return v;
}
static void cmp(const char *op, const float *got, const double *ref, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs(got[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    CHECKF(worst <= 1e-4 * (1 + scale), "%s: max error %.3g (scale %.3g)", op, worst, scale);
}

int main(void) {
    qs_backend *be;
    qs_error err = {0};
    CHECKF(qs_backend_create(&be, "cpu", 0, &err) == 0, "%s", err.msg);
    const qs_backend_ops *o = be->ops;
    /* GEMM, all transpositions: C = 0.7 op(A) op(B) + 0.3 C */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int m = 37, n = 29, k = 53;
            float *a = rvec((size_t)m * k), *b = rvec((size_t)k * n), *c = rvec((size_t)m * n);
            double *ref = malloc(sizeof(double) * m * n);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    double acc = 0;
                    for (int p = 0; p < k; p++) acc += (double)(ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
                    ref[i * n + j] = 0.7 * acc + 0.3 * c[i * n + j];
                }
            o->gemm(be, ta, tb, m, n, k, 0.7f, a, ta ? m : k, b, tb ? k : n, 0.3f, c, n);
            char name[32];
            snprintf(name, sizeof name, "gemm ta=%d tb=%d", ta, tb);
            cmp(name, c, ref, (size_t)m * n);
            free(a), free(b), free(c), free(ref);
        }
    /* RMSNorm */
    {
        int rows = 7, dim = 131;
        float *x = rvec((size_t)rows * dim), *g = rvec(dim), *y = malloc(sizeof(float) * rows * dim);
        double *ref = malloc(sizeof(double) * rows * dim);
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
            for (int i = 0; i < dim; i++) ref[r * dim + i] = x[r * dim + i] / sqrt(ss / dim + 1e-5) * g[i];
        }
        o->rmsnorm(be, y, x, g, rows, dim, 1e-5f);
        cmp("rmsnorm", y, ref, (size_t)rows * dim);
        free(x), free(g), free(y), free(ref);
    }
    /* RoPE with LLaMA-3 scaling: tables and rotation vs direct double computation */
    {
        qs_model_config c = {.head_dim = 16, .rope_theta = 500000.0f, .rope_scaling = QS_ROPE_SCALING_LLAMA3,
                             .rope_factor = 8, .rope_low_freq_factor = 1, .rope_high_freq_factor = 4,
                             .rope_original_max_position = 64};
        qs_rope_table rt;
        CHECK(qs_rope_table_init(&rt, &c, 100, &err) == 0);
        int n_tok = 9, heads = 3, hd = 16, half = 8, stride = heads * hd + 5;
        float *x = rvec((size_t)n_tok * stride);
        double *ref = malloc(sizeof(double) * n_tok * stride);
        int pos[9] = {0, 1, 2, 17, 33, 50, 64, 80, 99};
        for (int t = 0; t < n_tok; t++)
            for (int i = 0; i < stride; i++) ref[t * stride + i] = x[t * stride + i];
        for (int i = 0; i < half; i++) {
            double f = pow(500000.0, -2.0 * i / hd), wl = 2 * M_PI / f, lo = 64.0 / 1, hi = 64.0 / 4;
            if (wl > lo) f /= 8;
            else if (wl >= hi) {
                double sm = (64.0 / wl - 1) / (4 - 1);
                f = (1 - sm) * f / 8 + sm * f;
            }
            for (int t = 0; t < n_tok; t++)
                for (int h = 0; h < heads; h++) {
                    double a = x[t * stride + h * hd + i], b = x[t * stride + h * hd + i + half], an = pos[t] * f;
                    ref[t * stride + h * hd + i] = a * cos(an) - b * sin(an);
                    ref[t * stride + h * hd + i + half] = b * cos(an) + a * sin(an);
                }
        }
        o->rope(be, x, n_tok, heads, hd, stride, pos, rt.cos_t, rt.sin_t);
        cmp("rope llama3", x, ref, (size_t)n_tok * stride);
        qs_rope_table_free(&rt);
        free(x), free(ref);
    }
    /* causal GQA attention, longer than one query block */
    {
        int L = 300, H = 4, KVH = 2, hd = 8, qs = H * hd, ks = KVH * hd;
        float *q = rvec((size_t)L * qs), *k = rvec((size_t)L * ks), *v = rvec((size_t)L * ks), *out = malloc(sizeof(float) * L * qs);
        double *ref = malloc(sizeof(double) * L * qs), *p = malloc(sizeof(double) * L);
        for (int h = 0; h < H; h++) {
            int kh = h / (H / KVH);
            for (int i = 0; i < L; i++) {
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += (double)q[i * qs + h * hd + e] * k[j * ks + kh * hd + e];
                    p[j] = d / sqrt(hd);
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j <= i; j++) sum += p[j] = exp(p[j] - mx);
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++) acc += p[j] / sum * v[j * ks + kh * hd + e];
                    ref[i * qs + h * hd + e] = acc;
                }
            }
        }
        CHECK(o->attention(be, out, q, k, v, L, H, KVH, hd) == 0);
        cmp("attention", out, ref, (size_t)L * qs);
        free(q), free(k), free(v), free(out), free(ref), free(p);
    }
    /* SwiGLU, add, bias */
    {
        size_t n = 1001;
        float *g = rvec(n), *u = rvec(n), *y = malloc(sizeof(float) * n);
        double *ref = malloc(sizeof(double) * n);
        for (size_t i = 0; i < n; i++) ref[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
        o->swiglu(be, y, g, u, n);
        cmp("swiglu", y, ref, n);
        for (size_t i = 0; i < n; i++) ref[i] = (double)y[i] + u[i];
        o->add(be, y, u, n);
        cmp("add", y, ref, n);
        for (size_t i = 0; i < 7 * 143; i++) ref[i] = (double)y[i] + g[i % 143];
        o->add_bias(be, y, g, 7, 143);
        cmp("add_bias", y, ref, 7 * 143);
        free(g), free(u), free(y), free(ref);
    }
    be->ops->destroy(be);
    return qs_test_result();
}
