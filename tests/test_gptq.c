/* GPTQ (quant/gptq.h) against an independent float64 reference written from the paper's OBS
 * form (explicit inverse Hessian, one column at a time, no lazy batches, no Cholesky), and
 * against RTN on correlated inputs; and the same layer on a backend's gptq_batch (and its
 * cholesky_inverse where it has one) against the host's loop: `test_gptq [DEVICE]`, DEVICE
 * cpu-fenced (the default) or cuda (exits 77 without a usable GPU). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/registry.h"
#include "quant/gptq.h"
#include "testutil.h"

static uint64_t seed = 42;
static double urand(void) { /* xorshift64*, uniform [0, 1) */
    seed ^= seed >> 12, seed ^= seed << 25, seed ^= seed >> 27;
    return (double)((seed * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static double nrand(void) { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

/* X [T, C] = Z A: correlated inputs with a few strong channels */
static float *make_inputs(int T, int C) {
    double *A = malloc(sizeof(double) * C * C);
    for (int i = 0; i < C * C; i++) A[i] = nrand() / sqrt(C);
    for (int i = 0; i < C; i++) A[i * C + i] += 1.0;
    float *X = malloc(sizeof(float) * T * C);
    double *z = malloc(sizeof(double) * C);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < C; i++) z[i] = nrand() * (i % 7 == 0 ? 4.0 : 1.0);
        for (int j = 0; j < C; j++) {
            double s = 0;
            for (int i = 0; i < C; i++) s += z[i] * A[i * C + j];
            X[t * C + j] = (float)s;
        }
    }
    free(A), free(z);
    return X;
}

static void hessian_ref(const float *X, int T, int C, double *H) {
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += (double)X[t * C + i] * X[t * C + j];
            H[i * C + j] = 2.0 * s / T;
        }
}

/* in-place Gauss-Jordan inverse of a symmetric positive definite matrix */
static void invert(double *a, int n) {
    double *b = calloc((size_t)n * n, sizeof(double));
    for (int i = 0; i < n; i++) b[i * n + i] = 1;
    for (int c = 0; c < n; c++) {
        double p = a[c * n + c];
        for (int j = 0; j < n; j++) a[c * n + j] /= p, b[c * n + j] /= p;
        for (int r = 0; r < n; r++)
            if (r != c) {
                double f = a[r * n + c];
                for (int j = 0; j < n; j++) a[r * n + j] -= f * a[c * n + j], b[r * n + j] -= f * b[c * n + j];
            }
    }
    memcpy(a, b, sizeof(double) * n * n);
    free(b);
}

/* the reference: OBS updates with the explicit inverse, columns in perm order, dynamic or static groups */
static void gptq_ref(const float *W0, int R, int C, const double *H0, const qs_qconfig *q, int act_order, int static_g,
                     float *deq_out, uint8_t *codes) {
    double *H = malloc(sizeof(double) * C * C), *W = malloc(sizeof(double) * R * C);
    int *perm = malloc(sizeof(int) * C);
    for (int i = 0; i < C; i++) perm[i] = i;
    if (act_order) { /* stable insertion sort by descending diagonal: ties keep index order */
        for (int i = 0; i < C; i++) perm[i] = i;
        for (int i = 1; i < C; i++)
            for (int j = i; j > 0 && H0[perm[j] * C + perm[j]] > H0[perm[j - 1] * C + perm[j - 1]]; j--) {
                int t = perm[j];
                perm[j] = perm[j - 1], perm[j - 1] = t;
            }
    }
    double mean = 0;
    for (int i = 0; i < C; i++) mean += H0[i * C + i];
    mean /= C;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) H[i * C + j] = H0[perm[i] * C + perm[j]] + (i == j ? 0.01 * mean : 0);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < C; j++) W[r * C + j] = W0[r * C + perm[j]];
    invert(H, C);
    int G = q->group > 0 ? q->group : C;
    float *sc = malloc(sizeof(float) * R), *ze = malloc(sizeof(float) * R), *tmp = malloc(sizeof(float) * C);
    for (int i = 0; i < C; i++) {
        for (int r = 0; r < R; r++) {
            if (i == 0 && q->group <= 0) {
                for (int j = 0; j < C; j++) tmp[j] = (float)W[r * C + j];
                qs_quant_params(tmp, C, q, &sc[r], &ze[r]);
            }
            if (q->group > 0 && static_g) {
                int g = perm[i] / G, len = C - g * G < G ? C - g * G : G;
                qs_quant_params(W0 + r * C + g * G, len, q, &sc[r], &ze[r]);
            } else if (q->group > 0 && i % G == 0) {
                int len = C - i < G ? C - i : G;
                for (int j = 0; j < len; j++) tmp[j] = (float)W[r * C + i + j];
                qs_quant_params(tmp, len, q, &sc[r], &ze[r]);
            }
            uint8_t code = qs_quant_code((float)W[r * C + i], sc[r], ze[r], q->bits);
            double d = ((double)code - ze[r]) * sc[r], e = (W[r * C + i] - d) / H[i * C + i];
            codes[r * C + perm[i]] = code;
            deq_out[r * C + perm[i]] = (float)d;
            for (int j = i + 1; j < C; j++) W[r * C + j] -= e * H[i * C + j];
        }
        /* remove column i from the inverse: Hinv -= Hinv[:, i] Hinv[i, :] / Hinv[i, i] */
        double p = H[i * C + i];
        for (int a = i + 1; a < C; a++)
            for (int b = i + 1; b < C; b++) H[a * C + b] -= H[a * C + i] * H[i * C + b] / p;
    }
    free(H), free(W), free(perm), free(sc), free(ze), free(tmp);
}

static double out_err(const float *X, int T, int C, const float *W, const float *Wq, int R) {
    double s = 0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < R; r++) {
            double a = 0;
            for (int c = 0; c < C; c++) a += (double)X[t * C + c] * ((double)W[r * C + c] - Wq[r * C + c]);
            s += a * a;
        }
    return s;
}

int main(int argc, char **argv) {
    const char *device = argc > 1 ? argv[1] : "cpu-fenced";
    if (!strcmp(device, "cuda") && !qs_cuda_usable()) {
        printf("no usable CUDA device (backends compiled: %s): skipped\n", qs_backends_compiled());
        return 77;
    }
    const int R = 24, C = 64, T = 512;
    float *X = make_inputs(T, C), *W = malloc(sizeof(float) * R * C);
    for (int i = 0; i < R * C; i++) W[i] = (float)(nrand() * 0.1);
    qs_error err = {0};
    qs_backend *be = NULL;
    if (qs_backend_create(&be, device, 0, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    /* the Hessian: running mean over uneven adds equals 2/N X^T X (fp32 accumulation of 512
     * products of O(10) values: relative 1e-5 of the largest entry) */
    qs_hessian hs;
    CHECK(qs_hessian_init(&hs, C, &err) == 0);
    CHECK(qs_hessian_add(&hs, X, 100, C, &err) == 0 && qs_hessian_add(&hs, X + 100 * C, 1, C, &err) == 0 &&
          qs_hessian_add(&hs, X + 101 * C, T - 101, C, &err) == 0);
    double *Href = malloc(sizeof(double) * C * C), hmax = 0, herr = 0;
    hessian_ref(X, T, C, Href);
    for (int i = 0; i < C; i++)
        for (int j = i; j < C; j++) {
            hmax = fmax(hmax, fabs(Href[i * C + j]));
            herr = fmax(herr, fabs(Href[i * C + j] - hs.h[i * C + j]));
        }
    CHECKF(herr <= 1e-5 * hmax, "Hessian running mean: max error %.3g of %.3g", herr, hmax);
    struct { int bits, group, sym, act, stat; } cases[] = {
        {4, -1, 0, 0, 0}, {4, 16, 0, 0, 0}, {3, 16, 0, 1, 0}, {4, 16, 0, 1, 1}, {4, 16, 1, 0, 0}, {2, 32, 0, 0, 0}, {8, -1, 0, 1, 0}};
    float *Hf = malloc(sizeof(float) * C * C), *w = malloc(sizeof(float) * R * C), *wr = malloc(sizeof(float) * R * C);
    float *back = malloc(sizeof(float) * R * C), *rtn = malloc(sizeof(float) * R * C);
    uint8_t *codes = malloc(R * C), *codes_ref = malloc(R * C), *codes2 = malloc(R * C);
    float sc[24 * 64], ze[24 * 64], sc2[24 * 64], ze2[24 * 64];
    int32_t gi[64], gi2[64];
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        qs_gptq_opts o = {.q = {.bits = cases[k].bits, .group = cases[k].group, .sym = cases[k].sym}, .damp = 0.01f,
                          .block_size = 16, .act_order = cases[k].act, .static_groups = cases[k].stat};
        memcpy(Hf, hs.h, sizeof(float) * C * C);
        memcpy(w, W, sizeof(float) * R * C);
        qs_gptq_stats st;
        CHECKF(qs_gptq_quantize(w, R, C, Hf, &o, codes, sc, ze, gi, &st, "layer", &err) == 0, "%s", err.msg);
        gptq_ref(W, R, C, Href, &o.q, o.act_order, o.static_groups, wr, codes_ref);
        int same = 0;
        for (int i = 0; i < R * C; i++) same += codes[i] == codes_ref[i];
        /* float32 lazy-batch GPTQ vs float64 OBS: the error propagation differs by rounding only,
         * so a code can flip where a value sits within ~1e-5 of a rounding boundary: >= 98% equal */
        CHECKF(same >= R * C * 98 / 100, "case %zu: %d of %d codes equal the float64 reference", k, same, R * C);
        /* GPTQ beats RTN on the layer output for the same grid */
        qs_qconfig qq = o.q;
        uint8_t *rc_codes = malloc(R * C);
        int ngr = qs_qconfig_groups(&qq, C);
        float *rs = malloc(sizeof(float) * R * ngr), *rz = malloc(sizeof(float) * R * ngr);
        CHECK(qs_quant_rtn(W, R, C, &qq, rc_codes, rs, rz, "w", &err) == 0);
        qs_dequant(rc_codes, rs, rz, R, C, qq.group, rtn);
        double e_g = out_err(X, T, C, W, w, R), e_r = out_err(X, T, C, W, rtn, R), e_ref = out_err(X, T, C, W, wr, R);
        CHECKF(e_g < e_r, "case %zu: GPTQ output error %.4g is not below RTN's %.4g", k, e_g, e_r);
        CHECKF(fabs(e_g - e_ref) <= 0.05 * e_ref, "case %zu: output error %.4g vs reference %.4g", k, e_g, e_ref);
        /* the returned weights are exactly what codes + g_idx dequantize to */
        qs_dequant_gidx(codes, sc, ze, gi, R, C, o.q.group, back);
        CHECK(memcmp(back, w, sizeof(float) * R * C) == 0);
        if (!o.act_order || o.static_groups)
            for (int c = 0; c < C; c++) CHECK(gi[c] == (o.q.group > 0 ? c / o.q.group : 0));
        /* deterministic */
        memcpy(Hf, hs.h, sizeof(float) * C * C);
        memcpy(back, W, sizeof(float) * R * C);
        CHECK(qs_gptq_quantize(back, R, C, Hf, &o, codes2, sc2, ze2, gi2, NULL, "layer", &err) == 0);
        CHECK(memcmp(codes, codes2, R * C) == 0 && memcmp(back, w, sizeof(float) * R * C) == 0);
        printf("case %zu (W%d g%d%s%s%s): codes equal to reference %.1f%%, output error GPTQ %.4g / RTN %.4g, loss %.4g\n",
               k, o.q.bits, o.q.group, o.q.sym ? " sym" : "", o.act_order ? " act-order" : "", o.static_groups ? " static" : "",
               100.0 * same / (R * C), e_g, e_r, st.loss);
        /* the batches on the backend: the column loop is the host's bits, the lazy update a GEMM
         * in another order (cpu: fixed row chunks; cuda: cuBLAS fp32, and cuSOLVER's factor), so
         * codes may flip at rounding boundaries as against the float64 reference: >= 98% equal,
         * the output error within 5% of the host's, and it dequantizes exactly */
        qs_gptq_opts ob = o;
        ob.be = be;
        qs_gptq_stats stb;
        memcpy(Hf, hs.h, sizeof(float) * C * C);
        memcpy(back, W, sizeof(float) * R * C);
        CHECKF(qs_gptq_quantize(back, R, C, Hf, &ob, codes2, sc2, ze2, gi2, &stb, "layer", &err) == 0, "%s: %s", device, err.msg);
        int same_be = 0;
        for (int i = 0; i < R * C; i++) same_be += codes[i] == codes2[i];
        double e_b = out_err(X, T, C, W, back, R);
        CHECKF(same_be >= R * C * 98 / 100, "case %zu on %s: %d of %d codes equal the host's", k, device, same_be, R * C);
        CHECKF(fabs(e_b - e_g) <= 0.05 * e_g, "case %zu on %s: output error %.4g vs the host's %.4g", k, device, e_b, e_g);
        CHECKF(!memcmp(gi, gi2, sizeof(int32_t) * C), "case %zu on %s: g_idx differs from the host's", k, device);
        qs_dequant_gidx(codes2, sc2, ze2, gi2, R, C, o.q.group, wr);
        CHECK(memcmp(back, wr, sizeof(float) * R * C) == 0);
        printf("        on %s: codes equal to the host's %.2f%%, output error %.4g, loss %.4g\n", device,
               100.0 * same_be / (R * C), e_b, stb.loss);
        /* the Hessian left in backend memory (gptq_hessian makes the matrix to factor there):
         * the same layer as the run above with the host's H, and H itself unchanged */
        float *hd = be->ops->alloc(be, sizeof(float) * C * C);
        CHECK(hd && be->ops->upload(be, hd, hs.h, sizeof(float) * C * C, &err) == 0);
        ob.h_be = hd;
        memcpy(back, W, sizeof(float) * R * C);
        uint8_t *codes3 = malloc(R * C);
        CHECKF(qs_gptq_quantize(back, R, C, NULL, &ob, codes3, sc2, ze2, gi2, &stb, "layer", &err) == 0, "%s: %s", device, err.msg);
        CHECKF(!memcmp(codes2, codes3, R * C), "case %zu on %s: the backend's Hessian gives other codes than the host's", k, device);
        float *hback = malloc(sizeof(float) * C * C);
        CHECK(be->ops->download(be, hback, hd, sizeof(float) * C * C, &err) == 0 && !memcmp(hback, hs.h, sizeof(float) * C * C));
        /* the layer in backend memory too (the pipeline's case): the batches start from it (a
         * copy, or gathered into the act-order order; without act-order, or with act-order and
         * in_place_reorder, they run in it) and leave the dequantized weights there, the same
         * bits as the host's result, and the same codes */
        float *wd = be->ops->alloc(be, sizeof(float) * R * C), *wback = malloc(sizeof(float) * R * C);
        uint8_t *codes4 = malloc(R * C);
        for (int reorder = 0; reorder <= o.act_order; reorder++) {
            CHECK(wd && be->ops->upload(be, wd, W, sizeof(float) * R * C, &err) == 0);
            ob.w_be = wd;
            ob.in_place_reorder = reorder;
            memcpy(back, W, sizeof(float) * R * C);
            CHECKF(qs_gptq_quantize(back, R, C, NULL, &ob, codes4, sc2, ze2, gi2, &stb, "layer", &err) == 0, "%s: %s", device,
                   err.msg);
            CHECKF(stb.w_be_done, "case %zu on %s%s: the dequantized weights were not left in backend memory", k, device,
                   reorder ? " (reordered in place)" : "");
            CHECKF(!memcmp(codes3, codes4, R * C), "case %zu on %s%s: the layer's backend copy gives other codes", k, device,
                   reorder ? " (reordered in place)" : "");
            CHECK(be->ops->download(be, wback, wd, sizeof(float) * R * C, &err) == 0);
            CHECKF(!memcmp(wback, back, sizeof(float) * R * C),
                   "case %zu on %s%s: the backend's dequantized weights differ from the host's", k, device,
                   reorder ? " (reordered in place)" : "");
        }
        /* the pipeline's deferred download (codes_be, with w_be_only): the codes are left in
         * backend memory, the same bytes, and the host's codes buffer is not written; not where
         * act-order runs in the layer itself (the host dequantizes then, from its codes) */
        for (int reorder = 0; reorder <= o.act_order; reorder++) {
            uint8_t *cbe = NULL, *cdown = malloc(R * C);
            CHECK(cdown && be->ops->upload(be, wd, W, sizeof(float) * R * C, &err) == 0);
            ob.w_be = wd;
            ob.w_be_only = 1;
            ob.codes_be = &cbe;
            ob.in_place_reorder = reorder;
            memset(codes4, 0xAB, R * C);
            memcpy(back, W, sizeof(float) * R * C);
            CHECKF(qs_gptq_quantize(back, R, C, NULL, &ob, codes4, sc2, ze2, gi2, &stb, "layer", &err) == 0, "%s: %s", device,
                   err.msg);
            CHECKF(stb.w_be_done && (cbe == NULL) == reorder, "case %zu on %s%s: codes %s backend memory", k, device,
                   reorder ? " (reordered in place)" : "", cbe ? "left in" : "not left in");
            if (cbe) {
                CHECK(be->ops->download(be, cdown, cbe, R * C, &err) == 0);
                int untouched = 1;
                for (int i = 0; i < R * C; i++) untouched &= codes4[i] == 0xAB;
                CHECKF(untouched, "case %zu on %s: the host's codes were written though they stayed in backend memory", k, device);
                be->ops->free(be, cbe);
            } else {
                memcpy(cdown, codes4, R * C);
            }
            CHECKF(!memcmp(cdown, codes3, R * C), "case %zu on %s%s: other codes", k, device, reorder ? " (reordered in place)" : "");
            free(cdown);
        }
        ob.w_be_only = 0;
        ob.codes_be = NULL;
        ob.w_be = NULL;
        ob.in_place_reorder = 0;
        be->ops->free(be, wd);
        free(wback), free(codes4);
        be->ops->free(be, hd);
        free(codes3), free(hback);
        free(rc_codes), free(rs), free(rz);
    }
    /* dead input: column 5 never active -> its weights are exactly 0, nothing NaN */
    {
        float *Xd = malloc(sizeof(float) * T * C);
        memcpy(Xd, X, sizeof(float) * T * C);
        for (int t = 0; t < T; t++) Xd[t * C + 5] = 0;
        qs_hessian hd;
        CHECK(qs_hessian_init(&hd, C, &err) == 0 && qs_hessian_add(&hd, Xd, T, C, &err) == 0);
        qs_gptq_opts o = {.q = {.bits = 4, .group = 16}};
        memcpy(w, W, sizeof(float) * R * C);
        CHECK(qs_gptq_quantize(w, R, C, hd.h, &o, codes, sc, ze, gi, NULL, "dead", &err) == 0);
        int bad = 0;
        for (int r = 0; r < R; r++) bad += w[r * C + 5] != 0.0f;
        for (int i = 0; i < R * C; i++) bad += !isfinite(w[i]);
        CHECKF(bad == 0, "dead column: %d bad values", bad);
        qs_hessian_free(&hd);
        free(Xd);
    }
    /* NaN in W is rejected naming the layer; a negative-definite H is rejected after the damp retries */
    {
        qs_gptq_opts o = {.q = {.bits = 4, .group = 16}};
        memcpy(w, W, sizeof(float) * R * C);
        w[3 * C + 7] = NAN;
        memcpy(Hf, hs.h, sizeof(float) * C * C);
        CHECK(qs_gptq_quantize(w, R, C, Hf, &o, codes, sc, ze, gi, NULL, "model.layers.0.mlp.up_proj", &err) != 0);
        CHECKF(strstr(err.msg, "mlp.up_proj") && strstr(err.msg, "NaN"), "%s", err.msg);
        memcpy(w, W, sizeof(float) * R * C);
        for (int i = 0; i < C * C; i++) Hf[i] = -hs.h[i];
        for (int i = 0; i < C; i++) Hf[i * C + i] = -1.0f; /* diag < 0: not fixable by dampening */
        CHECK(qs_gptq_quantize(w, R, C, Hf, &o, codes, sc, ze, gi, NULL, "neg", &err) != 0 && strstr(err.msg, "positive definite"));
        /* a singular but positive semi-definite H (rank 3) is fixed by the dampening */
        float *Xs = malloc(sizeof(float) * 3 * C);
        memcpy(Xs, X, sizeof(float) * 3 * C);
        qs_hessian h3;
        CHECK(qs_hessian_init(&h3, C, &err) == 0 && qs_hessian_add(&h3, Xs, 3, C, &err) == 0);
        qs_gptq_stats st;
        CHECKF(qs_gptq_quantize(w, R, C, h3.h, &o, codes, sc, ze, gi, &st, "rank3", &err) == 0, "%s", err.msg);
        qs_hessian_free(&h3);
        free(Xs);
    }
    qs_hessian_free(&hs);
    qs_backend_free(be);
    free(X), free(W), free(Href), free(Hf), free(w), free(wr), free(back), free(rtn), free(codes), free(codes_ref), free(codes2);
    return qs_test_result();
}
