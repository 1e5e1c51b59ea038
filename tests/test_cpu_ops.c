/* tests/test_cpu_ops.c - every CPU backend op against a naive double-precision reference on
 * seeded random data in [-1, 1] (never zeros), odd sizes, padded leading dimensions, GQA with
 * fewer KV heads than heads, attention longer than one query block over two windows, RoPE with
 * LLaMA-3 scaling and its inverse; then the same bits with 1 and 2 threads.
 * Tolerance: max |got - ref| <= 2e-5 x (1 + max |ref|). The ops compute in fp32 with sums of at
 * most ~600 terms of O(1) values (relative rounding ~ sqrt(600) x 6e-8 ~ 1.5e-6), and exp with
 * ~2 ulp; 2e-5 is an order of magnitude above that and far below any indexing or formula bug. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/registry.h"
#include "model/rope.h"
#include "tests/testutil.h"

#define TOL 2e-5

static double *dvec(size_t n) { return malloc(n * sizeof(double)); }
static void cmp(const char *op, const float *got, const double *ref, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]);
        worst = d > worst || d != d ? d : worst;
        scale = fmax(scale, fabs(ref[i]));
    }
    CHECKF(worst <= TOL * (1 + scale), "%s: max error %.3g (scale %.3g)", op, worst, scale);
    printf("%-28s max error %.2e (scale %.2f)\n", op, worst, scale);
}

static void test_gemm(qs_backend *be) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int m = 37, n = 29, k = 53, pad = 3;
            int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
            float *a = qs_test_rvec((size_t)(ta ? k : m) * lda, 1), *b = qs_test_rvec((size_t)(tb ? n : k) * ldb, 1), *c = qs_test_rvec((size_t)m * ldc, 1);
            double *ref = dvec((size_t)m * ldc);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < ldc; j++) {
                    double acc = 0;
                    for (int p = 0; p < k && j < n; p++)
                        acc += (double)(ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
                    ref[i * ldc + j] = j < n ? 0.7 * acc + 0.3 * c[i * ldc + j] : c[i * ldc + j]; /* padding kept */
                }
            qs_error err = {0};
            CHECK(be->ops->gemm(be, ta, tb, m, n, k, 0.7f, a, lda, b, ldb, 0.3f, c, ldc, &err) == 0);
            char name[32];
            snprintf(name, sizeof name, "gemm ta=%d tb=%d", ta, tb);
            cmp(name, c, ref, (size_t)m * ldc);
            free(a), free(b), free(c), free(ref);
        }
    qs_error err = {0};
    float x[4];
    CHECK(be->ops->gemm(be, 0, 1, 2, 2, 3, 1.0f, x, 2, x, 3, 0.0f, x, 2, &err) == QS_EUSAGE); /* lda < k */
    CHECK(strstr(err.msg, "leading dimension") != NULL);
}

static void test_rmsnorm(qs_backend *be) {
    int rows = 7, dim = 131;
    float *x = qs_test_rvec((size_t)rows * dim, 1), *g = qs_test_rvec(dim, 1), *y = malloc(sizeof(float) * rows * dim), rstd[7];
    double *ref = dvec((size_t)rows * dim), rref[7];
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
        rref[r] = 1 / sqrt(ss / dim + 1e-5);
        for (int i = 0; i < dim; i++) ref[r * dim + i] = x[r * dim + i] * rref[r] * g[i];
    }
    qs_error err = {0};
    CHECK(be->ops->rmsnorm(be, y, x, g, rows, dim, 1e-5f, rstd, &err) == 0);
    cmp("rmsnorm", y, ref, (size_t)rows * dim);
    cmp("rmsnorm rstd", rstd, rref, rows);
    CHECK(be->ops->rmsnorm(be, x, x, g, rows, dim, 1e-5f, NULL, &err) == 0); /* in place */
    cmp("rmsnorm in place", x, ref, (size_t)rows * dim);
    free(x), free(g), free(y), free(ref);
}

/* LLaMA-3 inverse frequency, written out independently of model/rope.c */
static double llama3_freq(double theta, int i, int hd, double factor, double lo_f, double hi_f, double old) {
    double f = pow(theta, -2.0 * i / hd), wl = 2 * M_PI / f;
    if (wl > old / lo_f) return f / factor;
    if (wl < old / hi_f) return f;
    double sm = (old / wl - lo_f) / (hi_f - lo_f);
    return (1 - sm) * f / factor + sm * f;
}

static void test_rope(qs_backend *be) {
    /* original max position 64 puts pairs in all three LLaMA-3 regimes at head_dim 16 */
    qs_model_config c = {.head_dim = 16, .rope_theta = 500000.0f, .rope_scaling = QS_ROPE_SCALING_LLAMA3,
                         .rope_factor = 8, .rope_low_freq_factor = 1, .rope_high_freq_factor = 4,
                         .rope_original_max_position = 64};
    qs_error err = {0};
    float inv[8];
    CHECKF(qs_rope_inv_freq(&c, inv, &err) == 0, "%s", err.msg);
    int n_win = 2, L = 45, pos0 = 3, heads = 3, hd = 16, half = 8, stride = heads * hd + 5; /* 5 columns not rotated */
    size_t n = (size_t)n_win * L * stride;
    float *x = qs_test_rvec(n, 1), *x0 = malloc(sizeof(float) * n);
    memcpy(x0, x, sizeof(float) * n);
    double *ref = dvec(n), fref[8];
    int regimes[3] = {0, 0, 0};
    for (int i = 0; i < half; i++) {
        fref[i] = llama3_freq(500000.0, i, hd, 8, 1, 4, 64);
        double wl = 2 * M_PI / pow(500000.0, -2.0 * i / hd);
        regimes[wl < 16 ? 0 : wl > 64 ? 2 : 1]++;
    }
    CHECKF(regimes[0] && regimes[1] && regimes[2], "the test misses a LLaMA-3 regime (%d %d %d)", regimes[0],
           regimes[1], regimes[2]);
    cmp("rope inv_freq (llama3)", inv, fref, half);
    for (size_t t = 0; t < (size_t)n_win * L; t++) {
        double p = pos0 + (double)(t % L);
        for (int i = 0; i < stride; i++) ref[t * stride + i] = x[t * stride + i];
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++) {
                double a = x[t * stride + h * hd + i], b = x[t * stride + h * hd + i + half], an = p * fref[i];
                ref[t * stride + h * hd + i] = a * cos(an) - b * sin(an);
                ref[t * stride + h * hd + i + half] = b * cos(an) + a * sin(an);
            }
    }
    float *d_inv = be->ops->alloc(be, sizeof inv);
    CHECK(be->ops->upload(be, d_inv, inv, sizeof inv, &err) == 0);
    CHECK(be->ops->rope(be, x, n_win, L, pos0, heads, hd, stride, d_inv, 0, &err) == 0);
    cmp("rope llama3", x, ref, n);
    double *back = dvec(n);
    for (size_t i = 0; i < n; i++) back[i] = x0[i];
    CHECK(be->ops->rope(be, x, n_win, L, pos0, heads, hd, stride, d_inv, 1, &err) == 0);
    cmp("rope inverse", x, back, n);
    /* plain theta, no scaling */
    c.rope_scaling = QS_ROPE_SCALING_NONE;
    c.rope_theta = 10000.0f;
    CHECK(qs_rope_inv_freq(&c, inv, &err) == 0);
    for (int i = 0; i < half; i++) fref[i] = pow(10000.0, -2.0 * i / hd);
    cmp("rope inv_freq (theta)", inv, fref, half);
    c.head_dim = 15;
    CHECK(qs_rope_inv_freq(&c, inv, &err) != 0 && strstr(err.msg, "head_dim"));
    be->ops->free(be, d_inv);
    free(x), free(x0), free(ref), free(back);
}

/* out, lse vs double; n_win windows of L, H heads on KVH kv heads of hd */
static void test_attention(qs_backend *be, int n_win, int L, int H, int KVH, int hd) {
    size_t qs = (size_t)H * hd, ks = (size_t)KVH * hd, T = (size_t)n_win * L;
    float *q = qs_test_rvec(T * qs, 1), *k = qs_test_rvec(T * ks, 1), *v = qs_test_rvec(T * ks, 1), *out = malloc(sizeof(float) * T * qs);
    float *lse = malloc(sizeof(float) * (size_t)n_win * H * L);
    double *ref = dvec(T * qs), *lref = dvec((size_t)n_win * H * L), *p = dvec(L), sc = 1 / sqrt(hd);
    for (int w = 0; w < n_win; w++)
        for (int h = 0; h < H; h++) {
            int kh = h / (H / KVH);
            for (int i = 0; i < L; i++) {
                double mx = -1e300, sum = 0;
                size_t qi = ((size_t)w * L + i) * qs + (size_t)h * hd;
                for (int j = 0; j <= i; j++) {
                    double d = 0;
                    size_t kj = ((size_t)w * L + j) * ks + (size_t)kh * hd;
                    for (int e = 0; e < hd; e++) d += (double)q[qi + e] * k[kj + e];
                    p[j] = d * sc;
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j <= i; j++) sum += p[j] = exp(p[j] - mx);
                lref[((size_t)w * H + h) * L + i] = mx + log(sum);
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++) acc += p[j] / sum * v[((size_t)w * L + j) * ks + (size_t)kh * hd + e];
                    ref[qi + e] = acc;
                }
            }
        }
    qs_error err = {0};
    CHECKF(be->ops->attention(be, out, q, k, v, n_win, L, H, KVH, hd, (float)sc, lse, &err) == 0, "%s", err.msg);
    char name[64];
    snprintf(name, sizeof name, "attention %dx%d h%d/%d d%d", n_win, L, H, KVH, hd);
    cmp(name, out, ref, T * qs);
    cmp("attention lse", lse, lref, (size_t)n_win * H * L);
    free(q), free(k), free(v), free(out), free(lse), free(ref), free(lref), free(p);
}

static void test_elementwise(qs_backend *be) {
    qs_error err = {0};
    size_t n = 1001;
    float *g = qs_test_rvec(n, 1), *u = qs_test_rvec(n, 1), *y = malloc(sizeof(float) * n);
    double *ref = dvec(n);
    for (size_t i = 0; i < n; i++) ref[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
    CHECK(be->ops->swiglu(be, y, g, u, n, &err) == 0);
    cmp("swiglu", y, ref, n);
    for (size_t i = 0; i < n; i++) ref[i] = (double)y[i] + u[i];
    CHECK(be->ops->add(be, y, y, u, n, &err) == 0);
    cmp("add", y, ref, n);
    for (size_t i = 0; i < n; i++) ref[i] = -0.37 * y[i];
    CHECK(be->ops->scale(be, y, y, -0.37f, n, &err) == 0);
    cmp("scale", y, ref, n);
    for (size_t i = 0; i < 7 * 143; i++) ref[i] = (double)y[i] + g[i % 143];
    CHECK(be->ops->add_bias(be, y, g, 7, 143, &err) == 0);
    cmp("add_bias", y, ref, 7 * 143);
    /* gather (embedding lookup) then scatter back to other rows */
    int rows = 11, cols = 13, idx[5] = {10, 0, 3, 3, 7}, dst_idx[5] = {4, 1, 0, 2, 3};
    float *tab = qs_test_rvec((size_t)rows * cols, 1), *got = qs_test_rvec((size_t)5 * cols, 1), *sc = qs_test_rvec((size_t)5 * cols, 1);
    double *gref = dvec((size_t)5 * cols);
    int32_t *d_idx = be->ops->alloc(be, sizeof idx), *d_dst = be->ops->alloc(be, sizeof dst_idx);
    CHECK(be->ops->upload(be, d_idx, idx, sizeof idx, &err) == 0 && be->ops->upload(be, d_dst, dst_idx, sizeof idx, &err) == 0);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < cols; j++) gref[i * cols + j] = tab[idx[i] * cols + j];
    CHECK(be->ops->copy_rows(be, got, NULL, tab, d_idx, 5, cols, &err) == 0);
    cmp("copy_rows gather", got, gref, (size_t)5 * cols);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < cols; j++) gref[dst_idx[i] * cols + j] = got[i * cols + j];
    CHECK(be->ops->copy_rows(be, sc, d_dst, got, NULL, 5, cols, &err) == 0);
    cmp("copy_rows scatter", sc, gref, (size_t)5 * cols);
    CHECK(be->ops->copy(be, y, g, sizeof(float) * n, &err) == 0 && memcmp(y, g, sizeof(float) * n) == 0);
    be->ops->free(be, d_idx), be->ops->free(be, d_dst);
    free(g), free(u), free(y), free(ref), free(tab), free(got), free(sc), free(gref);
}

/* online log-sum-exp over uneven vocabulary chunks equals the one-shot double computation */
static void test_lse(qs_backend *be) {
    enum { N = 9, V = 1000, VC = 300 };
    float *lg = qs_test_rvec((size_t)N * V, 1), mx[N], se[N], tl[N], chunk[N * VC];
    int32_t tgt[N];
    double lse_ref[N], t_ref[N];
    for (int r = 0; r < N; r++) {
        for (int j = 0; j < V; j++) lg[r * V + j] *= 12.0f; /* a wide range: the max matters */
        tgt[r] = r == 4 ? -1 : (r * 211 + 17) % V;
        double m = -1e300, s = 0;
        for (int j = 0; j < V; j++) m = fmax(m, lg[r * V + j]);
        for (int j = 0; j < V; j++) s += exp(lg[r * V + j] - m);
        lse_ref[r] = m + log(s);
        t_ref[r] = tgt[r] >= 0 ? lg[r * V + tgt[r]] : NAN;
        mx[r] = -INFINITY, se[r] = 0, tl[r] = NAN;
    }
    qs_error err = {0};
    for (int v0 = 0; v0 < V; v0 += VC) {
        int vc = V - v0 < VC ? V - v0 : VC;
        for (int r = 0; r < N; r++) memcpy(chunk + r * vc, lg + r * V + v0, sizeof(float) * vc);
        CHECK(be->ops->lse_update(be, chunk, N, vc, v0, tgt, mx, se, tl, &err) == 0);
    }
    float got[N];
    for (int r = 0; r < N; r++) got[r] = mx[r] + logf(se[r]);
    cmp("lse_update", got, lse_ref, N);
    CHECK(isnan(tl[4]));
    tl[4] = 0, t_ref[4] = 0;
    cmp("lse_update target", tl, t_ref, N);
    free(lg);
}

/* per-token fake quantization: a float64 reference of METHODS' formula; error <= scale / 2;
 * every segment's min and max are on the grid (min maps to code 0 up to the zero's rounding);
 * a constant segment comes back unchanged and finite */
static void test_act_quant(qs_backend *be) {
    const int rows = 37, cols = 96;
    qs_error err = {0};
    for (int pass = 0; pass < 2; pass++) {
        int seg = pass ? 16 : cols, bits = pass ? 4 : 8;
        float *x = qs_test_rvec((size_t)rows * cols, 1), *y = malloc(sizeof(float) * rows * cols);
        for (int c = 0; c < seg; c++) x[5 * cols + c] = 0.75f; /* a constant segment */
        memcpy(y, x, sizeof(float) * rows * cols);
        CHECK(be->ops->act_quant(be, y, rows, cols, seg, bits, &err) == 0);
        double worst = 0;
        int mismatch = 0;
        for (int r = 0; r < rows; r++)
            for (int s0 = 0; s0 < cols; s0 += seg) {
                const float *v = x + (size_t)r * cols + s0;
                float mn = v[0], mx = v[0];
                for (int i = 0; i < seg; i++) mn = v[i] < mn ? v[i] : mn, mx = v[i] > mx ? v[i] : mx;
                float sc = (mx - mn) / (float)((1 << bits) - 1);
                sc = sc < 1e-5f ? 1e-5f : sc;
                float z = rintf(-mn / sc);
                for (int i = 0; i < seg; i++) {
                    float q = rintf(v[i] / sc) + z;
                    q = q < 0 ? 0 : q > (1 << bits) - 1 ? (float)((1 << bits) - 1) : q;
                    float want = (q - z) * sc, got = y[(size_t)r * cols + s0 + i];
                    mismatch += want != got;
                    double e = fabs((double)got - v[i]) / sc;
                    worst = e > worst ? e : worst;
                    CHECK(isfinite(got));
                }
            }
        CHECKF(mismatch == 0, "act_quant: %d values differ from the formula", mismatch);
        /* a zero point rounded to the grid moves min/max by at most half a step: error <= 1 step */
        CHECKF(worst <= 1.0 + 1e-4, "act_quant %d bits: error %.3f steps", bits, worst);
        CHECK(fabsf(y[5 * cols] - 0.75f) <= 1e-5f);
        free(x), free(y);
    }
    float z[4] = {0};
    CHECK(be->ops->act_quant(be, z, 1, 4, 3, 4, &err) == QS_EUSAGE); /* segment does not divide the row */
    printf("act_quant: formula exact, error within one step, constant segments finite\n");
}

/* the same bits with 1 and 2 threads for the ops with reductions */
static void test_thread_invariance(void) {
    int n_win = 1, L = 290, H = 4, KVH = 2, hd = 16, V = 777;
    size_t T = (size_t)n_win * L;
    float *q = qs_test_rvec(T * H * hd, 1), *k = qs_test_rvec(T * KVH * hd, 1), *v = qs_test_rvec(T * KVH * hd, 1), *g = qs_test_rvec(hd * H, 1);
    float *out[2], *nrm[2], *st[2];
    int32_t *tgt = malloc(sizeof(int32_t) * T);
    for (size_t t = 0; t < T; t++) tgt[t] = (int32_t)(t * 7 % V);
    float *lg = qs_test_rvec(T * V, 1);
    for (int th = 0; th < 2; th++) {
        qs_backend *be;
        qs_error err = {0};
        CHECKF(qs_backend_create(&be, "cpu", th + 1, &err) == 0, "%s", err.msg);
        out[th] = malloc(sizeof(float) * T * H * hd);
        nrm[th] = malloc(sizeof(float) * T * H * hd);
        st[th] = malloc(sizeof(float) * 3 * T);
        for (size_t t = 0; t < T; t++) st[th][t] = -INFINITY, st[th][T + t] = 0, st[th][2 * T + t] = 0;
        CHECK(be->ops->attention(be, out[th], q, k, v, n_win, L, H, KVH, hd, 0.25f, NULL, &err) == 0);
        CHECK(be->ops->rmsnorm(be, nrm[th], q, g, (int)T, H * hd, 1e-6f, NULL, &err) == 0);
        CHECK(be->ops->lse_update(be, lg, (int)T, V, 0, tgt, st[th], st[th] + T, st[th] + 2 * T, &err) == 0);
        qs_backend_free(be);
    }
    CHECK(memcmp(out[0], out[1], sizeof(float) * T * H * hd) == 0);
    CHECK(memcmp(nrm[0], nrm[1], sizeof(float) * T * H * hd) == 0);
    CHECK(memcmp(st[0], st[1], sizeof(float) * 3 * T) == 0);
    printf("1 and 2 threads: attention, rmsnorm, lse_update bit-identical%s\n", qs_test_failures ? " NOT" : "");
    for (int th = 0; th < 2; th++) free(out[th]), free(nrm[th]), free(st[th]);
    free(q), free(k), free(v), free(g), free(tgt), free(lg);
}

/* A GEMM row's bits depend on its own inputs only (cpu/cpu_gemm.c): the same with 1 and 2
 * threads, for a prefix of the rows, and for any number of windows per call once the window
 * length is set; for every transpose case, with beta = 0 and 1, on shapes whose rows are not a
 * multiple of OpenBLAS's row groups (OpenBLAS alone fails all three on Haswell / Zen kernels). */
static void test_gemm_row_bits(void) {
    const int L = 100, W = 4, M = W * L, n = 72, k = 300;
    float *a = qs_test_rvec((size_t)M * k, 1), *b = qs_test_rvec((size_t)n * k, 1), *c0 = qs_test_rvec((size_t)M * n, 1);
    float *ref = malloc(sizeof(float) * M * n), *got = malloc(sizeof(float) * M * n);
    int bad = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int beta = 0; beta < 2; beta++) {
                /* reference: all W windows in one call, one thread */
                for (int pass = 0; pass < 4; pass++) {
                    qs_backend *be;
                    qs_error err = {0};
                    CHECK(qs_backend_create(&be, "cpu", pass == 0 ? 1 : 2, &err) == 0);
                    CHECK(be->ops->set_window_rows(be, L, &err) == 0);
                    float *dst = pass == 0 ? ref : got;
                    memcpy(dst, c0, sizeof(float) * M * n);
                    /* pass 1: 2 threads, one call; 2: one call per window; 3: windows 1..3 then 0 */
                    int calls = pass == 2 ? W : pass == 3 ? 2 : 1;
                    for (int cidx = 0; cidx < calls; cidx++) {
                        int w0 = pass == 2 ? cidx : pass == 3 ? (cidx ? 0 : 1) : 0;
                        int nw = pass == 2 ? 1 : pass == 3 ? (cidx ? 1 : W - 1) : W;
                        int r0 = w0 * L, m = nw * L;
                        const float *ap = ta ? a + r0 : a + (size_t)r0 * k; /* op(a) rows r0.. */
                        CHECK(be->ops->gemm(be, ta, tb, m, n, k, 0.5f, ap, ta ? M : k, b, tb ? k : n, beta ? 1.0f : 0.0f,
                                            dst + (size_t)r0 * n, n, &err) == 0);
                    }
                    if (pass) bad += memcmp(ref, got, sizeof(float) * M * n) != 0;
                    qs_backend_free(be);
                }
            }
    CHECKF(bad == 0, "gemm: %d of 24 thread / window splits changed some row's bits", bad);
    printf("gemm: rows bit-identical for 1 / 2 threads and 1, 2, 4 windows per call (4 transpose x beta cases)%s\n",
           bad ? " NOT" : "");
    free(a), free(b), free(c0), free(ref), free(got);
}

int main(void) {
    qs_test_seed = 0x1234567;
    qs_backend *be;
    qs_error err = {0};
    CHECKF(qs_backend_create(&be, "cpu", 0, &err) == 0, "%s", err.msg);
    if (qs_test_failures) return qs_test_result();
    CHECK(strcmp(be->ops->name, "cpu") == 0);
    test_gemm(be);
    test_rmsnorm(be);
    test_rope(be);
    test_attention(be, 2, 300, 6, 2, 8);  /* GQA groups of 3, two windows, > one query block */
    test_attention(be, 1, 37, 4, 4, 5);   /* plain multi-head, odd head_dim and length */
    test_attention(be, 3, 1, 2, 1, 4);    /* windows of one token */
    test_elementwise(be);
    test_lse(be);
    test_act_quant(be);
    qs_backend_free(be);
    test_thread_invariance();
    test_gemm_row_bits();
    /* the registry: unknown names and CUDA are clear errors */
    qs_backend *none;
    CHECK(qs_backend_create(&none, "tpu", 0, &err) == QS_EUSAGE && none == NULL && strstr(err.msg, "unknown device"));
    CHECK(qs_backend_create(&none, "cuda", 0, &err) == QS_EUNSUPPORTED && none == NULL && strstr(err.msg, "CUDA"));
    qs_backend_free(NULL);
    return qs_test_result();
}
