/* tests/test_backend_ops.c - every op of a backend against the CPU backend on the same seeded
 * random inputs (uniform in [-1, 1], never zero), with padded leading dimensions, odd sizes,
 * GQA, several windows and positions: `test_backend_ops [DEVICE]`, DEVICE cuda (the GPU test;
 * exits 77 when no CUDA device is usable) or cpu-fenced (the default: it must give the CPU's
 * bits exactly, which checks this harness itself on any machine, and that a host access of
 * its memory faults).
 *
 * Error measure per op: max |got - ref| / (rms(ref) + 1e-30) over all outputs. Tolerances for
 * cuda (the same binary, ops in fp32 with their own sum orders and CUDA's libm): elementwise and
 * row ops 2e-6 (expf / division within 2 ulp, fp32 rounding of reordered sums); GEMM-based ops
 * 2e-5 with QS_CUDA_GEMM=fp32 (sums of <= 600 products in another order), 2e-3 with tf32 (10-bit
 * mantissa inputs: ~2^-11 relative per product, averaging down over the sum) and 2e-2 with bf16
 * (8-bit: ~2^-9 per product); the quantizers bit for bit (min / max, IEEE division and rint are
 * exact operations on identical inputs), except where an input comes out of a GEMM. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/registry.h"
#include "base/half.h"
#include "quant/affine.h"
#include "tests/testutil.h"

static qs_backend *cpu, *dev;
static int exact;         /* cpu-fenced: every op bit for bit */
static double gemm_tol;   /* GEMM-based ops on cuda, by QS_CUDA_GEMM */
/* added to rms(ref) in the error measure: 1 where an output is only rounding noise (the
 * gradients of a one-token softmax, whose exact value is 0) */
static double floor_rms;
#define TOL_ELEM 2e-6


/* backend copies of host data */
static void *put(qs_backend *be, const void *h, size_t bytes) {
    qs_error err = {0};
    void *d = be->ops->alloc(be, bytes ? bytes : 4);
    if (!d || be->ops->upload(be, d, h, bytes, &err)) {
        fprintf(stderr, "%s: upload of %zu bytes failed: %s\n", be->ops->name, bytes, err.msg);
        exit(1);
    }
    return d;
}
static float *get(qs_backend *be, const void *d, size_t n) {
    qs_error err = {0};
    float *h = malloc(n * sizeof(float));
    if (be->ops->download(be, h, d, n * sizeof(float), &err)) {
        fprintf(stderr, "%s: download failed: %s\n", be->ops->name, err.msg);
        exit(1);
    }
    return h;
}

/* an input on both backends */
typedef struct pair {
    void *c, *d;
} pair;
static pair both(const void *h, size_t bytes) { return (pair){put(cpu, h, bytes), put(dev, h, bytes)}; }
static pair rboth(size_t n, float amp) {
    float *h = qs_test_rvec(n, amp);
    pair p = both(h, n * sizeof(float));
    free(h);
    return p;
}
static void pfree(pair p) {
    cpu->ops->free(cpu, p.c);
    dev->ops->free(dev, p.d);
}

static void compare(const char *op, pair out, size_t n, double tol) {
    float *a = get(cpu, out.c, n), *b = get(dev, out.d, n);
    double worst = 0, ss = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        ss += (double)a[i] * a[i];
        double e = fabs((double)a[i] - b[i]);
        if (e > worst || e != e) worst = e, at = i;
    }
    double rms = sqrt(ss / (double)(n ? n : 1)), rel = worst / (rms + floor_rms + 1e-30);
    double lim = exact ? 0.0 : tol;
    CHECKF(rel <= lim && rel == rel, "%s: error %.3g of rms %.3g (limit %.1g) at %zu: cpu %.9g, %s %.9g", op, rel,
           rms, lim, at, a[at], dev->ops->name, b[at]);
    printf("%-34s error/rms %.2e (rms %.3g)\n", op, rel, rms);
    free(a), free(b);
}

#define RUN(call_c, call_d)                                                               \
    do {                                                                                  \
        qs_error e1 = {0}, e2 = {0};                                                      \
        int r1 = (call_c), r2 = (call_d);                                                 \
        CHECKF(r1 == 0, "cpu: %s", e1.msg);                                               \
        CHECKF(r2 == 0, "%s: %s", dev->ops->name, e2.msg);                                \
    } while (0)
#define E1 &e1
#define E2 &e2

static void test_gemm(void) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int bz = 0; bz < 2; bz++) {
                int m = 77, n = 45, k = 130, pad = 3;
                int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
                pair a = rboth((size_t)(ta ? k : m) * lda, 1), b = rboth((size_t)(tb ? n : k) * ldb, 1);
                pair c = rboth((size_t)m * ldc, 1);
                float beta = bz ? 0.0f : 0.3f;
                RUN(cpu->ops->gemm(cpu, ta, tb, m, n, k, 0.7f, a.c, lda, b.c, ldb, beta, c.c, ldc, E1),
                    dev->ops->gemm(dev, ta, tb, m, n, k, 0.7f, a.d, lda, b.d, ldb, beta, c.d, ldc, E2));
                char name[48];
                snprintf(name, sizeof name, "gemm ta=%d tb=%d beta=%g", ta, tb, beta);
                compare(name, c, (size_t)m * ldc, gemm_tol);
                pfree(a), pfree(b), pfree(c);
            }
    /* k = 0: C = beta C, with leading dimensions of 0 for the empty operands (cuBLAS refuses
     * those: the backend does it without cuBLAS), ldc padded (the pad must stay as it was) */
    for (int bi = 0; bi < 3; bi++) {
        const int m0 = 5, n0 = 7, ldc0 = 9;
        const float betas[3] = {0.0f, 0.3f, 1.0f};
        pair a = rboth(4, 1), b = rboth(4, 1), c = rboth((size_t)m0 * ldc0, 1);
        RUN(cpu->ops->gemm(cpu, 0, 1, m0, n0, 0, 0.7f, a.c, 0, b.c, 0, betas[bi], c.c, ldc0, E1),
            dev->ops->gemm(dev, 0, 1, m0, n0, 0, 0.7f, a.d, 0, b.d, 0, betas[bi], c.d, ldc0, E2));
        char name[48];
        snprintf(name, sizeof name, "gemm k=0 beta=%g", betas[bi]);
        compare(name, c, (size_t)m0 * ldc0, 0.0);
        pfree(a), pfree(b), pfree(c);
    }
    /* windows: the same rows give the same bits with 1 or 3 windows per call (the backend's
     * own determinism promise, set_window_rows). P = 64: each window of a, c starts 256-byte
     * aligned, as the pipeline's windows do (seqlen x width x 4 bytes); cuBLAS picks its kernels
     * by the pointers' alignment, which the promise does not cover */
    int P = 64, m = 3 * P, n = 33, k = 70;
    pair a = rboth((size_t)m * k, 1), b = rboth((size_t)n * k, 1), c3 = rboth((size_t)m * n, 1), c1 = rboth((size_t)P * n, 1);
    qs_error err = {0};
    if (dev->ops->set_window_rows) CHECK(dev->ops->set_window_rows(dev, P, &err) == 0);
    CHECK(dev->ops->gemm(dev, 0, 1, m, n, k, 1.0f, a.d, k, b.d, k, 0.0f, c3.d, n, &err) == 0);
    CHECK(dev->ops->gemm(dev, 0, 1, P, n, k, 1.0f, (float *)a.d + (size_t)P * k, k, b.d, k, 0.0f, c1.d, n, &err) == 0);
    if (dev->ops->set_window_rows) CHECK(dev->ops->set_window_rows(dev, 0, &err) == 0);
    float *h3 = get(dev, c3.d, (size_t)m * n), *h1 = get(dev, c1.d, (size_t)P * n);
    CHECKF(!memcmp(h3 + (size_t)P * n, h1, sizeof(float) * (size_t)P * n), "%s gemm: a window's bits depend on the windows per call",
           dev->ops->name);
    free(h3), free(h1), pfree(a), pfree(b), pfree(c3), pfree(c1);
}

static void test_norms(void) {
    int rows = 37, dim = 200;
    size_t n = (size_t)rows * dim;
    pair x = rboth(n, 2), g = rboth((size_t)dim, 1), y = rboth(n, 1), rs = rboth((size_t)rows, 1);
    RUN(cpu->ops->rmsnorm(cpu, y.c, x.c, g.c, rows, dim, 1e-5f, rs.c, E1),
        dev->ops->rmsnorm(dev, y.d, x.d, g.d, rows, dim, 1e-5f, rs.d, E2));
    compare("rmsnorm", y, n, TOL_ELEM);
    compare("rmsnorm rstd", rs, (size_t)rows, TOL_ELEM);
    /* in place */
    RUN(cpu->ops->rmsnorm(cpu, x.c, x.c, g.c, rows, dim, 1e-6f, NULL, E1),
        dev->ops->rmsnorm(dev, x.d, x.d, g.d, rows, dim, 1e-6f, NULL, E2));
    compare("rmsnorm in place", x, n, TOL_ELEM);
    /* backward: rstd from the cpu forward on both */
    pair x2 = rboth(n, 2), dy = rboth(n, 1), dx = rboth(n, 1), dg = rboth((size_t)dim, 1);
    float *rh = get(cpu, rs.c, (size_t)rows);
    pair rs2 = both(rh, sizeof(float) * rows);
    free(rh);
    RUN(cpu->ops->rmsnorm_backward(cpu, dx.c, dg.c, dy.c, x2.c, g.c, rs2.c, rows, dim, E1),
        dev->ops->rmsnorm_backward(dev, dx.d, dg.d, dy.d, x2.d, g.d, rs2.d, rows, dim, E2));
    compare("rmsnorm_backward dx", dx, n, TOL_ELEM);
    compare("rmsnorm_backward dgamma (+=)", dg, (size_t)dim, TOL_ELEM);
    pfree(x), pfree(g), pfree(y), pfree(rs), pfree(x2), pfree(dy), pfree(dx), pfree(dg), pfree(rs2);
}

static void test_rope(void) {
    int n_win = 2, L = 50, nh = 3, hd = 16, stride = nh * hd + 8;
    size_t n = (size_t)n_win * L * stride;
    float f[8];
    for (int i = 0; i < 8; i++) f[i] = powf(10000.0f, -2.0f * i / hd) * (i == 5 ? 0.125f : 1.0f);
    pair x = rboth(n, 1), fr = both(f, sizeof f);
    for (int inv = 0; inv < 2; inv++) {
        RUN(cpu->ops->rope(cpu, x.c, n_win, L, 1000 + 7 * inv, nh, hd, stride, fr.c, inv, E1),
            dev->ops->rope(dev, x.d, n_win, L, 1000 + 7 * inv, nh, hd, stride, fr.d, inv, E2));
        compare(inv ? "rope inverse" : "rope", x, n, TOL_ELEM);
    }
    pfree(x), pfree(fr);
}

static void test_attention(int n_win, int L, int nh, int nkv, int hd) {
    size_t T = (size_t)n_win * L, qn = T * nh * hd, kn = T * nkv * hd, ln = (size_t)n_win * nh * L;
    float scale = 1.0f / sqrtf((float)hd);
    pair q = rboth(qn, 2), k = rboth(kn, 2), v = rboth(kn, 1), o = rboth(qn, 1), lse = rboth(ln, 1);
    RUN(cpu->ops->attention(cpu, o.c, q.c, k.c, v.c, n_win, L, nh, nkv, hd, scale, lse.c, E1),
        dev->ops->attention(dev, o.d, q.d, k.d, v.d, n_win, L, nh, nkv, hd, scale, lse.d, E2));
    char name[64];
    snprintf(name, sizeof name, "attention %dx%d h%d/%d d%d", n_win, L, nh, nkv, hd);
    compare(name, o, qn, gemm_tol);
    snprintf(name, sizeof name, "attention lse %dx%d", n_win, L);
    compare(name, lse, ln, gemm_tol);
    /* backward from the cpu forward's out and lse on both */
    float *oh = get(cpu, o.c, qn), *lh = get(cpu, lse.c, ln);
    pair o2 = both(oh, qn * sizeof(float)), l2 = both(lh, ln * sizeof(float));
    free(oh), free(lh);
    pair dout = rboth(qn, 1), dq = rboth(qn, 1), dk = rboth(kn, 1), dv = rboth(kn, 1);
    RUN(cpu->ops->attention_backward(cpu, dq.c, dk.c, dv.c, dout.c, q.c, k.c, v.c, o2.c, l2.c, n_win, L, nh, nkv, hd,
                                     scale, E1),
        dev->ops->attention_backward(dev, dq.d, dk.d, dv.d, dout.d, q.d, k.d, v.d, o2.d, l2.d, n_win, L, nh, nkv, hd,
                                     scale, E2));
    floor_rms = L == 1 ? 1.0 : 0.0;
    snprintf(name, sizeof name, "attention_backward dq %dx%d", n_win, L);
    compare(name, dq, qn, gemm_tol);
    snprintf(name, sizeof name, "attention_backward dk %dx%d", n_win, L);
    compare(name, dk, kn, gemm_tol);
    snprintf(name, sizeof name, "attention_backward dv %dx%d", n_win, L);
    compare(name, dv, kn, gemm_tol);
    floor_rms = 0;
    pfree(q), pfree(k), pfree(v), pfree(o), pfree(lse), pfree(o2), pfree(l2), pfree(dout), pfree(dq), pfree(dk),
        pfree(dv);
}

static void test_elementwise(void) {
    size_t n = 10007;
    pair a = rboth(n, 4), b = rboth(n, 1), y = rboth(n, 1), y2 = rboth(n, 1);
    RUN(cpu->ops->swiglu(cpu, y.c, a.c, b.c, n, E1), dev->ops->swiglu(dev, y.d, a.d, b.d, n, E2));
    compare("swiglu", y, n, TOL_ELEM);
    /* dy = b, gate = a, up = y; dup overwrites dy (allowed) */
    RUN(cpu->ops->swiglu_backward(cpu, y2.c, b.c, b.c, a.c, y.c, n, E1),
        dev->ops->swiglu_backward(dev, y2.d, b.d, b.d, a.d, y.d, n, E2));
    compare("swiglu_backward dgate", y2, n, TOL_ELEM);
    compare("swiglu_backward dup", b, n, TOL_ELEM);
    RUN(cpu->ops->add(cpu, y.c, a.c, b.c, n, E1), dev->ops->add(dev, y.d, a.d, b.d, n, E2));
    compare("add", y, n, 0);
    RUN(cpu->ops->scale(cpu, y.c, y.c, -0.37f, n, E1), dev->ops->scale(dev, y.d, y.d, -0.37f, n, E2));
    compare("scale in place", y, n, 0);
    int rows = 97, cols = 103;
    pair bias = rboth((size_t)cols, 1);
    RUN(cpu->ops->add_bias(cpu, y.c, bias.c, rows, cols, E1), dev->ops->add_bias(dev, y.d, bias.d, rows, cols, E2));
    compare("add_bias", y, n, 0);
    int32_t sr[40], dr[40];
    for (int i = 0; i < 40; i++) sr[i] = (i * 37 + 5) % 97, dr[i] = (i * 13 + 11) % 97;
    pair s = both(sr, sizeof sr), d = both(dr, sizeof dr);
    RUN(cpu->ops->copy_rows(cpu, y2.c, d.c, a.c, s.c, 40, cols, E1),
        dev->ops->copy_rows(dev, y2.d, d.d, a.d, s.d, 40, cols, E2));
    compare("copy_rows gather+scatter", y2, n, 0);
    RUN(cpu->ops->copy_rows(cpu, y2.c, NULL, a.c, s.c, 40, cols, E1),
        dev->ops->copy_rows(dev, y2.d, NULL, a.d, s.d, 40, cols, E2));
    compare("copy_rows gather", y2, n, 0);
    RUN(cpu->ops->copy(cpu, y2.c, a.c, 1000 * sizeof(float), E1), dev->ops->copy(dev, y2.d, a.d, 1000 * sizeof(float), E2));
    compare("copy", y2, n, 0);
    pfree(a), pfree(b), pfree(y), pfree(y2), pfree(bias), pfree(s), pfree(d);
}

static void test_gathers(void) {
    int rows = 45, C = 64;
    int32_t sa[64], sb[64];
    float cf[64];
    qs_test_reasm_maps(C, 5, sa, sb, cf);
    pair a = both(sa, sizeof sa), b = both(sb, sizeof sb), c = both(cf, sizeof cf);
    size_t n = (size_t)rows * C;
    pair x = rboth(n, 3), g = rboth((size_t)C, 1), u = rboth(n, 1), y = rboth(n, 1);
    RUN(cpu->ops->rmsnorm_gather(cpu, y.c, x.c, g.c, rows, C, 1e-5f, a.c, b.c, c.c, E1),
        dev->ops->rmsnorm_gather(dev, y.d, x.d, g.d, rows, C, 1e-5f, a.d, b.d, c.d, E2));
    compare("rmsnorm_gather", y, n, TOL_ELEM);
    RUN(cpu->ops->swiglu_gather(cpu, y.c, x.c, u.c, rows, C, a.c, b.c, c.c, E1),
        dev->ops->swiglu_gather(dev, y.d, x.d, u.d, rows, C, a.d, b.d, c.d, E2));
    compare("swiglu_gather", y, n, TOL_ELEM);
    RUN(cpu->ops->gather_backward(cpu, u.c, x.c, rows, C, a.c, b.c, c.c, E1),
        dev->ops->gather_backward(dev, u.d, x.d, rows, C, a.d, b.d, c.d, E2));
    compare("gather_backward", u, n, TOL_ELEM);
    /* the plain gather: one addition and one product per output, identical on both */
    RUN(cpu->ops->gather(cpu, y.c, x.c, rows, C, a.c, b.c, c.c, E1), dev->ops->gather(dev, y.d, x.d, rows, C, a.d, b.d, c.d, E2));
    compare("gather", y, n, 0);
    RUN(cpu->ops->gather(cpu, y.c, x.c, rows, C, a.c, b.c, NULL, E1), dev->ops->gather(dev, y.d, x.d, rows, C, a.d, b.d, NULL, E2));
    compare("gather without coefficients", y, n, 0);
    pfree(a), pfree(b), pfree(c), pfree(x), pfree(g), pfree(u), pfree(y);
}

static void test_quant(void) {
    int rows = 33, cols = 256;
    size_t n = (size_t)rows * cols;
    for (int bits = 2; bits <= 8; bits += 2) {
        pair x = rboth(n, 3);
        RUN(cpu->ops->act_quant(cpu, x.c, rows, cols, 64, bits, E1), dev->ops->act_quant(dev, x.d, rows, cols, 64, bits, E2));
        char name[48];
        snprintf(name, sizeof name, "act_quant %d bits, segments of 64", bits);
        compare(name, x, n, 0);
        pfree(x);
        pair xp = rboth(n, 3); /* SliderQuant's first pass: the first 32 of each 64 rounded */
        RUN(cpu->ops->act_quant_part(cpu, xp.c, rows, cols, 64, 32, bits, E1),
            dev->ops->act_quant_part(dev, xp.d, rows, cols, 64, 32, bits, E2));
        snprintf(name, sizeof name, "act_quant_part %d bits, 32 of 64", bits);
        compare(name, xp, n, 0);
        pfree(xp);
    }
    pair w = rboth(n, 0.2f), y = rboth(n, 1);
    int cases[4][3] = {{4, -1, 0}, {3, 100, 0}, {4, 128, 1}, {8, 64, 0}}; /* bits, group (100: partial last), sym */
    for (int i = 0; i < 4; i++) {
        RUN(cpu->ops->fake_quant_weight(cpu, y.c, w.c, rows, cols, cases[i][1], cases[i][0], cases[i][2], E1),
            dev->ops->fake_quant_weight(dev, y.d, w.d, rows, cols, cases[i][1], cases[i][0], cases[i][2], E2));
        char name[48];
        snprintf(name, sizeof name, "fake_quant_weight w%d g%d%s", cases[i][0], cases[i][1], cases[i][2] ? " sym" : "");
        compare(name, y, n, 0);
    }
    pfree(w), pfree(y);
}

static void test_lse_mse_adamw(void) {
    int n = 29, vc = 700;
    pair lg = rboth((size_t)n * vc, 8);
    float mx[29], sm[29], tl[29];
    int32_t tg[29];
    for (int r = 0; r < n; r++) mx[r] = -INFINITY, sm[r] = 0, tl[r] = 0, tg[r] = (r * 97) % 1400;
    pair M = both(mx, sizeof mx), S = both(sm, sizeof sm), Tl = both(tl, sizeof tl), Tg = both(tg, sizeof tg);
    for (int v0 = 0; v0 < 1400; v0 += vc)
        RUN(cpu->ops->lse_update(cpu, lg.c, n, vc, v0, Tg.c, M.c, S.c, Tl.c, E1),
            dev->ops->lse_update(dev, lg.d, n, vc, v0, Tg.d, M.d, S.d, Tl.d, E2));
    compare("lse_update run_max", M, (size_t)n, 0);
    compare("lse_update run_sum", S, (size_t)n, TOL_ELEM);
    compare("lse_update target logit", Tl, (size_t)n, 0);
    pfree(lg), pfree(M), pfree(S), pfree(Tl), pfree(Tg);

    size_t N = 100003;
    pair a = rboth(N, 1), b = rboth(N, 1), g = rboth(N, 1);
    double l1 = 0, l2 = 0;
    RUN(cpu->ops->mse_grad(cpu, g.c, a.c, b.c, N, &l1, E1), dev->ops->mse_grad(dev, g.d, a.d, b.d, N, &l2, E2));
    compare("mse_grad grad", g, N, 0);
    double rel = fabs(l1 - l2) / l1;
    CHECKF(exact ? l1 == l2 : rel <= 1e-12, "mse_grad loss: cpu %.17g, %s %.17g", l1, dev->ops->name, l2);
    printf("%-34s relative error %.2e (loss %.6f)\n", "mse_grad loss", rel, l1);
    pair p = rboth(N, 1), m = rboth(N, 0.01f), v = rboth(N, 0.01f);
    /* v >= 0: square the random second moments on both */
    float *vh = get(cpu, v.c, N);
    for (size_t i = 0; i < N; i++) vh[i] *= vh[i];
    pair v2 = both(vh, N * sizeof(float));
    free(vh);
    for (int step = 1; step <= 3; step++)
        RUN(cpu->ops->adamw_step(cpu, p.c, a.c, m.c, v2.c, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, E1),
            dev->ops->adamw_step(dev, p.d, a.d, m.d, v2.d, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, E2));
    compare("adamw_step param (3 steps)", p, N, TOL_ELEM);
    compare("adamw_step m", m, N, TOL_ELEM);
    compare("adamw_step v", v2, N, TOL_ELEM);
    pfree(a), pfree(b), pfree(g), pfree(p), pfree(m), pfree(v), pfree(v2);
}

/* cholesky_inverse (where a backend has it; the CPU's GPTQ calls LAPACK itself): U upper with
 * U^T U A = I for a well-conditioned random A = X^T X / m + 0.5 I (eigenvalues in about
 * [0.5, 4]: fp32 factor residuals ~ 1e-6 x cond; limit 1e-4), and a matrix that is not positive
 * definite gives info > 0 */
static void cholesky_case(int n) {
    const int m = 400;
    float *x = qs_test_rvec((size_t)m * n, 1), *A = calloc((size_t)n * n, sizeof(float));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int t = 0; t < m; t++) acc += (double)x[(size_t)t * n + i] * x[(size_t)t * n + j];
            A[(size_t)i * n + j] = (float)(acc / m * 3 + (i == j ? 0.5 : 0));
        }
    float *d = put(dev, A, sizeof(float) * n * n);
    qs_error err = {0};
    int info = -1;
    CHECKF(dev->ops->cholesky_inverse(dev, d, n, &info, &err) == 0, "cholesky_inverse: %s", err.msg);
    CHECKF(info == 0, "cholesky_inverse: info %d on a positive definite matrix", info);
    float *U = get(dev, d, (size_t)n * n);
    double worst = 0;
    int lower_ok = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (j < i && U[(size_t)i * n + j] != 0.0f) lower_ok = 0;
            double r = 0; /* (U^T U A)[i, j] */
            for (int k = 0; k < n; k++) {
                double utu = 0;
                for (int l = 0; l <= (i < k ? i : k); l++) utu += (double)U[(size_t)l * n + i] * U[(size_t)l * n + k];
                r += utu * A[(size_t)k * n + j];
            }
            double e = fabs(r - (i == j));
            worst = e > worst ? e : worst;
        }
    CHECKF(lower_ok, "cholesky_inverse: U has non-zeros below the diagonal");
    CHECKF(worst <= 1e-4, "cholesky_inverse: max |U^T U A - I| = %.3g", worst);
    printf("%-34s n %d: max |U^T U A - I| %.2e\n", "cholesky_inverse", n, worst);
    for (int i = 0; i < n; i++) A[(size_t)i * n + i] -= 3.0f; /* indefinite now */
    CHECK(dev->ops->upload(dev, d, A, sizeof(float) * n * n, &err) == 0);
    CHECKF(dev->ops->cholesky_inverse(dev, d, n, &info, &err) == 0 && info > 0, "cholesky_inverse: info %d on an indefinite matrix", info);
    dev->ops->free(dev, d);
    free(x), free(A), free(U);
}

static void test_cholesky(void) {
    if (!dev->ops->cholesky_inverse) {
        printf("%-34s not on %s (GPTQ uses the host's LAPACK)\n", "cholesky_inverse", dev->ops->name);
        return;
    }
    cholesky_case(150); /* n^2 even and odd: the factor reverses the matrix in place */
    cholesky_case(151);
    /* the --gpu-mem plan's allowance holds the library's workspace at real models' orders (up
     * to Llama 3.1 405B's intermediate 53248, past the 32-bit API's 46340) */
    const long long orders[] = {576, 4096, 8192, 11008, 14336, 28672, 53248};
    for (size_t i = 0; i < sizeof orders / sizeof *orders; i++) {
        size_t need = 0, allow = 0;
        qs_error err = {0};
        int rc = qs_backend_factor_workspace(dev, orders[i], &need, &allow, &err);
        CHECKF(rc >= 0, "factor workspace at n %lld: %s", orders[i], err.msg);
        if (rc) break; /* no library workspace on this backend */
        CHECKF(need <= allow, "factor workspace at n %lld: the library asks for %zu bytes, the plan allows %zu", orders[i],
               need, allow);
        printf("%-34s n %lld: workspace %zu bytes (plan allows %zu)\n", "cholesky_inverse", orders[i], need, allow);
    }
}

static void compare_bytes(const char *op, pair out, size_t bytes);

/* gptq_hessian: the diagonal, the non-finite flag and the ordered, mirrored, dampened matrix
 * (element copies and one addition: identical), with dead inputs and a random order; a NaN in
 * the upper triangle is flagged, one below it is not read */
static void test_gptq_hessian(void) {
    const int n = 300;
    float *h = qs_test_rvec((size_t)n * n, 1);
    for (int i = 0; i < n; i++) h[(size_t)i * n + i] = i % 37 == 5 ? 0.0f : 2.0f + qs_test_rnd(); /* dead inputs */
    h[(size_t)7 * n + 3] = NAN; /* below the diagonal: not read */
    int32_t *perm = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) perm[i] = (i * 7919) % n; /* a permutation: 7919 is prime to 300 */
    pair H = both(h, sizeof(float) * n * n), P = both(perm, sizeof(int32_t) * n), hp = rboth((size_t)n * n, 1);
    float dc[300], dd[300];
    int bc = -1, bd = -1;
    RUN(cpu->ops->gptq_hessian(cpu, hp.c, H.c, n, P.c, 0.125f, dc, &bc, E1),
        dev->ops->gptq_hessian(dev, hp.d, H.d, n, P.d, 0.125f, dd, &bd, E2));
    CHECKF(bc == 0 && bd == 0, "gptq_hessian: a finite upper triangle flagged (cpu %d, %s %d)", bc, dev->ops->name, bd);
    CHECKF(!memcmp(dc, dd, sizeof dc), "gptq_hessian: the diagonals differ");
    compare_bytes("gptq_hessian [300, 300]", hp, sizeof(float) * n * n);
    h[(size_t)3 * n + 7] = INFINITY; /* in the upper triangle */
    pair H2 = both(h, sizeof(float) * n * n);
    RUN(cpu->ops->gptq_hessian(cpu, NULL, H2.c, n, NULL, 0, NULL, &bc, E1),
        dev->ops->gptq_hessian(dev, NULL, H2.d, n, NULL, 0, NULL, &bd, E2));
    CHECKF(bc == 1 && bd == 1, "gptq_hessian: an infinite value not flagged (cpu %d, %s %d)", bc, dev->ops->name, bd);
    pfree(H), pfree(P), pfree(hp), pfree(H2);
    free(h), free(perm);
}

/* the same bytes on both backends (codes, int or double outputs that must match exactly) */
static void compare_bytes(const char *op, pair out, size_t bytes) {
    unsigned char *a = malloc(bytes), *b = malloc(bytes);
    qs_error err = {0};
    CHECK(cpu->ops->download(cpu, a, out.c, bytes, &err) == 0 && dev->ops->download(dev, b, out.d, bytes, &err) == 0);
    size_t diff = 0, at = 0;
    for (size_t i = 0; i < bytes; i++)
        if (a[i] != b[i]) at = diff++ ? at : i;
    CHECKF(diff == 0, "%s: %zu of %zu bytes differ (first at %zu)", op, diff, bytes, at);
    printf("%-34s %zu bytes identical\n", op, bytes);
    free(a), free(b);
}

/* quant_weight: integer codes, quantizers and the rows' double sums in column order, the same
 * IEEE operations on both: identical bytes. Rows of 300 columns (more than a block's threads),
 * per channel and in groups with a partial last one, and more rows than one block of threads
 * for the row errors. */
static void test_quant_weight(void) {
    const int rows = 140, cols = 300;
    const size_t n = (size_t)rows * cols;
    int cases[3][3] = {{4, -1, 0}, {3, 128, 1}, {8, 64, 0}}; /* bits, group, sym */
    for (int i = 0; i < 3; i++) {
        const int ng = cases[i][1] > 0 ? (cols + cases[i][1] - 1) / cases[i][1] : 1;
        uint8_t *zc = calloc(n, 1);
        pair w = rboth(n, 0.2f), c = both(zc, n), sc = rboth((size_t)rows * ng, 1), z = rboth((size_t)rows * ng, 1),
             e = rboth(2 * (size_t)rows, 1);
        RUN(cpu->ops->quant_weight(cpu, w.c, rows, cols, cases[i][1], cases[i][0], cases[i][2], c.c, sc.c, z.c, e.c, E1),
            dev->ops->quant_weight(dev, w.d, rows, cols, cases[i][1], cases[i][0], cases[i][2], c.d, sc.d, z.d, e.d, E2));
        char name[48];
        snprintf(name, sizeof name, "quant_weight w%d g%d%s codes", cases[i][0], cases[i][1], cases[i][2] ? " sym" : "");
        compare_bytes(name, c, n);
        compare_bytes("quant_weight scales", sc, sizeof(float) * rows * ng);
        compare_bytes("quant_weight zeros", z, sizeof(float) * rows * ng);
        compare_bytes("quant_weight row errors", e, sizeof(double) * rows);
        pfree(w), pfree(c), pfree(sc), pfree(z), pfree(e);
        free(zc);
    }
}

/* dlqat_weight and its backward: the grid from quant_weight, the low-rank term up to +-1.5 grid
 * steps (so that the clamp bites at both edges) and magnitudes in [0.5, 1.5]. The same IEEE
 * operations in the same order on both (the group sums of the backward in column order, in
 * double): identical bytes. Rows longer than a block of threads, groups with a partial last one,
 * per channel; y over d (allowed) and dd over dy (allowed); dmag accumulates. */
static void test_dlqat(void) {
    const int rows = 140, cols = 300;
    const size_t n = (size_t)rows * cols;
    int cases[3][3] = {{3, 128, 0}, {4, -1, 1}, {2, 64, 0}}; /* bits, group, sym */
    for (int i = 0; i < 3; i++) {
        const int bits = cases[i][0], group = cases[i][1], ng = group > 0 ? (cols + group - 1) / group : 1;
        const size_t qn = (size_t)rows * ng;
        uint8_t *zc = calloc(n, 1);
        float *mh = qs_test_rvec(qn, 0.5f);
        for (size_t k = 0; k < qn; k++) mh[k] += 1.0f;
        pair w = rboth(n, 0.2f), d = rboth(n, 1.5f), m = both(mh, sizeof(float) * qn), c = both(zc, n), sc = rboth(qn, 1),
             z = rboth(qn, 1), e = rboth(2 * (size_t)rows, 1), y = rboth(n, 1), dy = rboth(n, 1), dm = rboth(qn, 1);
        RUN(cpu->ops->quant_weight(cpu, w.c, rows, cols, group, bits, cases[i][2], c.c, sc.c, z.c, NULL, E1),
            dev->ops->quant_weight(dev, w.d, rows, cols, group, bits, cases[i][2], c.d, sc.d, z.d, NULL, E2));
        RUN(cpu->ops->dlqat_weight(cpu, y.c, c.c, e.c, w.c, d.c, sc.c, z.c, m.c, rows, cols, group, bits, E1),
            dev->ops->dlqat_weight(dev, y.d, c.d, e.d, w.d, d.d, sc.d, z.d, m.d, rows, cols, group, bits, E2));
        char name[48];
        snprintf(name, sizeof name, "dlqat_weight w%d g%d%s", bits, group, cases[i][2] ? " sym" : "");
        compare_bytes(name, y, sizeof(float) * n);
        compare_bytes("dlqat_weight codes", c, n);
        compare_bytes("dlqat_weight row errors", e, sizeof(double) * rows);
        RUN(cpu->ops->dlqat_weight_backward(cpu, dy.c, dm.c, dy.c, w.c, d.c, sc.c, z.c, m.c, rows, cols, group, bits, E1),
            dev->ops->dlqat_weight_backward(dev, dy.d, dm.d, dy.d, w.d, d.d, sc.d, z.d, m.d, rows, cols, group, bits, E2));
        compare_bytes("dlqat_weight_backward dd", dy, sizeof(float) * n);
        compare_bytes("dlqat_weight_backward dmag", dm, sizeof(float) * qn);
        RUN(cpu->ops->dlqat_weight(cpu, d.c, NULL, NULL, w.c, d.c, sc.c, z.c, m.c, rows, cols, group, bits, E1),
            dev->ops->dlqat_weight(dev, d.d, NULL, NULL, w.d, d.d, sc.d, z.d, m.d, rows, cols, group, bits, E2));
        compare_bytes("dlqat_weight y over d", d, sizeof(float) * n);
        pfree(w), pfree(d), pfree(m), pfree(c), pfree(sc), pfree(z), pfree(e), pfree(y), pfree(dy), pfree(dm);
        free(zc), free(mh);
    }
}

/* lwc_weight and its backward (SliderQuant's clipping): logits around 2 (sigmoid 0.88: the
 * clamp bites at both edges), asymmetric and symmetric, grouped and per channel, rows longer
 * than a block of threads; the grid is backend/lwc_grid.h's on both, the exp its polynomial: the
 * same IEEE operations in the same order, identical bytes. y over w, dw over dy, accumulation. */
static void test_lwc(void) {
    const int rows = 140, cols = 300;
    const size_t n = (size_t)rows * cols;
    int cases[3][3] = {{3, 128, 0}, {4, -1, 1}, {2, 64, 0}}; /* bits, group, sym */
    for (int i = 0; i < 3; i++) {
        const int bits = cases[i][0], group = cases[i][1], sym = cases[i][2], ng = group > 0 ? (cols + group - 1) / group : 1;
        const size_t qn = (size_t)rows * ng;
        float *lh = qs_test_rvec(2 * qn, 1.0f);
        for (size_t k = 0; k < 2 * qn; k++) lh[k] += 2.0f;
        uint8_t *zc = calloc(n, 1);
        pair w = rboth(n, 0.2f), lg = both(lh, sizeof(float) * qn), lb = both(lh + qn, sizeof(float) * qn),
             c = both(zc, n), sc = rboth(qn, 1), z = rboth(qn, 1), e = rboth(2 * (size_t)rows, 1), y = rboth(n, 1),
             dy = rboth(n, 1), dg = rboth(qn, 1), db = rboth(qn, 1);
        RUN(cpu->ops->lwc_weight(cpu, y.c, c.c, sc.c, z.c, e.c, w.c, lg.c, lb.c, rows, cols, group, bits, sym, cols, E1),
            dev->ops->lwc_weight(dev, y.d, c.d, sc.d, z.d, e.d, w.d, lg.d, lb.d, rows, cols, group, bits, sym, cols, E2));
        char name[48];
        snprintf(name, sizeof name, "lwc_weight w%d g%d%s", bits, group, sym ? " sym" : "");
        compare_bytes(name, y, sizeof(float) * n);
        compare_bytes("lwc_weight codes", c, n);
        compare_bytes("lwc_weight scales", sc, sizeof(float) * qn);
        compare_bytes("lwc_weight zeros", z, sizeof(float) * qn);
        compare_bytes("lwc_weight row errors", e, sizeof(double) * rows);
        RUN(cpu->ops->lwc_weight_backward(cpu, dy.c, dg.c, db.c, dy.c, w.c, lg.c, lb.c, rows, cols, group, bits, sym, cols, E1),
            dev->ops->lwc_weight_backward(dev, dy.d, dg.d, db.d, dy.d, w.d, lg.d, lb.d, rows, cols, group, bits, sym, cols, E2));
        compare_bytes("lwc_weight_backward dw", dy, sizeof(float) * n);
        compare_bytes("lwc_weight_backward dgam", dg, sizeof(float) * qn);
        compare_bytes("lwc_weight_backward dbet", db, sizeof(float) * qn);
        RUN(cpu->ops->lwc_weight(cpu, w.c, NULL, NULL, NULL, NULL, w.c, lg.c, lb.c, rows, cols, group, bits, sym, cols, E1),
            dev->ops->lwc_weight(dev, w.d, NULL, NULL, NULL, NULL, w.d, lg.d, lb.d, rows, cols, group, bits, sym, cols, E2));
        compare_bytes("lwc_weight y over w", w, sizeof(float) * n);
        const int qc = cols / 2 + 7; /* SliderQuant's first pass: a prefix of each row, mid-group */
        RUN(cpu->ops->lwc_weight(cpu, y.c, NULL, sc.c, z.c, e.c, w.c, lg.c, lb.c, rows, cols, group, bits, sym, qc, E1),
            dev->ops->lwc_weight(dev, y.d, NULL, sc.d, z.d, e.d, w.d, lg.d, lb.d, rows, cols, group, bits, sym, qc, E2));
        compare_bytes("lwc_weight first columns", y, sizeof(float) * n);
        compare_bytes("lwc_weight first columns' row errors", e, sizeof(double) * rows);
        RUN(cpu->ops->lwc_weight_backward(cpu, dy.c, dg.c, db.c, dy.c, w.c, lg.c, lb.c, rows, cols, group, bits, sym, qc, E1),
            dev->ops->lwc_weight_backward(dev, dy.d, dg.d, db.d, dy.d, w.d, lg.d, lb.d, rows, cols, group, bits, sym, qc, E2));
        compare_bytes("lwc_weight_backward first columns dw", dy, sizeof(float) * n);
        compare_bytes("lwc_weight_backward first columns dgam", dg, sizeof(float) * qn);
        pfree(w), pfree(lg), pfree(lb), pfree(c), pfree(sc), pfree(z), pfree(e), pfree(y), pfree(dy), pfree(dg), pfree(db);
        free(zc), free(lh);
    }
}

/* chan_scale and its backward (SliderQuant's smoothing scales) on the sites' shapes at a
 * 70B-like GQA ratio: o's columns over 8 query heads per key/value head, q's rows RoPE-tied, a
 * plain column side, a negative scale and one held at 1e-2; rows and columns past a block of
 * threads. The factors are backend/chan_scale.h's and every product and double sum runs in the
 * same order on both: identical bytes (y, dx +=, both sides' dalpha +=). */
static void test_chan_scale(void) {
    const int rows = 256, cols = 1280, hd = 16; /* rows: q of 16 heads over 2; cols: o of 80 heads over 10 */
    const size_t n = (size_t)rows * cols;
    const int nr = 2 * hd / 2, nc = 10 * hd, ncol_plain = cols;
    float *ar = qs_test_rvec((size_t)nr, 0.5f), *ac = qs_test_rvec((size_t)ncol_plain, 0.5f);
    for (int i = 0; i < nr; i++) ar[i] += 1.0f;
    for (int i = 0; i < ncol_plain; i++) ac[i] += 1.0f;
    ar[3] = -ar[3], ac[7] = 0.003f;
    pair x = rboth(n, 1), y = rboth(n, 1), dy = rboth(n, 1), dx = rboth(n, 1), pr = both(ar, sizeof(float) * nr),
         pc = both(ac, sizeof(float) * ncol_plain), gr = rboth((size_t)nr, 1), gc = rboth((size_t)ncol_plain, 1);
    for (int variant = 0; variant < 2; variant++) { /* o's GQA columns, then plain columns */
        const int ncol = variant ? ncol_plain : nc;
        qs_chan_scale sr1 = {.alpha = pr.c, .dalpha = gr.c, .pow = -1, .hd = hd, .rep = 8, .half = 1},
                      sc1 = {.alpha = pc.c, .dalpha = gc.c, .pow = 1, .hd = variant ? 0 : hd, .rep = variant ? 1 : 8},
                      sr2 = sr1, sc2 = sc1;
        sr2.alpha = pr.d, sr2.dalpha = gr.d, sc2.alpha = pc.d, sc2.dalpha = gc.d;
        RUN(cpu->ops->chan_scale(cpu, y.c, x.c, rows, cols, &sr1, &sc1, E1),
            dev->ops->chan_scale(dev, y.d, x.d, rows, cols, &sr2, &sc2, E2));
        compare_bytes(variant ? "chan_scale (plain columns)" : "chan_scale (GQA columns, RoPE-tied rows)", y, sizeof(float) * n);
        RUN(cpu->ops->chan_scale_backward(cpu, dx.c, dy.c, x.c, rows, cols, &sr1, &sc1, E1),
            dev->ops->chan_scale_backward(dev, dx.d, dy.d, x.d, rows, cols, &sr2, &sc2, E2));
        compare_bytes("chan_scale_backward dx", dx, sizeof(float) * n);
        compare_bytes("chan_scale_backward row dalpha", gr, sizeof(float) * nr);
        compare_bytes("chan_scale_backward column dalpha", gc, sizeof(float) * ncol);
        RUN(cpu->ops->chan_scale(cpu, x.c, x.c, rows, cols, NULL, &sc1, E1),
            dev->ops->chan_scale(dev, x.d, x.d, rows, cols, NULL, &sc2, E2));
        compare_bytes("chan_scale over x", x, sizeof(float) * n);
    }
    pfree(x), pfree(y), pfree(dy), pfree(dx), pfree(pr), pfree(pc), pfree(gr), pfree(gc);
    free(ar), free(ac);
}

/* gptq_batch: one batch from random weights, a random upper factor (diagonal in [0.5, 1]) and a
 * random column order. The column loop is the same IEEE operations in the same order on both
 * (no FMA), so the batch's columns, codes, quantizers, errors and losses must be identical; the
 * later columns come out of the lazy update, an fp32 GEMM on both (cuda: pedantic whatever
 * QS_CUDA_GEMM) of cnt <= 1600 products: 2e-5. Batches of 32 (shared-memory tiles of 64 rows),
 * 400 (narrower tiles) and 1600 columns (too wide for shared memory: global memory). */
static void test_gptq_batch(void) {
    struct { int rows, cols, i1, i2, group, bits, sym, stat; } cs[] = {
        {70, 96, 32, 64, -1, 4, 0, 0}, {70, 96, 32, 64, 32, 3, 1, 0}, {70, 96, 0, 64, 16, 4, 0, 1},
        {37, 900, 400, 800, 100, 2, 0, 0}, {20, 1700, 0, 1600, 160, 4, 0, 0}};
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        const int R = cs[k].rows, C = cs[k].cols, G = cs[k].group > 0 ? cs[k].group : C, ng = (C + G - 1) / G;
        const size_t n = (size_t)R * C;
        float *u = calloc((size_t)C * C, sizeof(float)), *sc = malloc(sizeof(float) * R * ng), *ze = malloc(sizeof(float) * R * ng);
        for (int i = 0; i < C; i++) {
            u[(size_t)i * C + i] = 0.75f + 0.25f * qs_test_rnd();
            for (int j = i + 1; j < C; j++) u[(size_t)i * C + j] = 0.1f * qs_test_rnd();
        }
        int32_t *perm = malloc(sizeof(int32_t) * C);
        for (int i = 0; i < C; i++) perm[i] = i;
        for (int i = C - 1; i > 0; i--) {
            int j = (int)((qs_test_rnd() * 0.5f + 0.5f) * (float)i), t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        float *wh = qs_test_rvec(n, 1);
        const qs_qconfig q = {.bits = cs[k].bits, .group = cs[k].group, .sym = cs[k].sym};
        for (int r = 0; r < R; r++) /* the given quantizers (per channel, static groups) */
            for (int g = 0; g < ng; g++) {
                int len = C - g * G < G ? C - g * G : G;
                qs_quant_params(wh + (size_t)r * C + (size_t)g * G, len, &q, &sc[r * ng + g], &ze[r * ng + g]);
            }
        double *loss = calloc((size_t)R, sizeof(double));
        uint8_t *codes = calloc(n, 1);
        pair w = both(wh, sizeof(float) * n), U = both(u, sizeof(float) * C * C), P = both(perm, sizeof(int32_t) * C);
        pair S = both(sc, sizeof(float) * R * ng), Z = both(ze, sizeof(float) * R * ng), L = both(loss, sizeof(double) * R);
        pair Q = both(codes, n), Er = rboth((size_t)R * (cs[k].i2 - cs[k].i1), 1);
        RUN(cpu->ops->gptq_batch(cpu, w.c, R, C, cs[k].i1, cs[k].i2, U.c, P.c, q.group, q.bits, q.sym, cs[k].stat, S.c,
                                 Z.c, Q.c, Er.c, L.c, E1),
            dev->ops->gptq_batch(dev, w.d, R, C, cs[k].i1, cs[k].i2, U.d, P.d, q.group, q.bits, q.sym, cs[k].stat, S.d,
                                 Z.d, Q.d, Er.d, L.d, E2));
        char name[80];
        snprintf(name, sizeof name, "gptq_batch [%d, %d] %d..%d w%d g%d%s%s", R, C, cs[k].i1, cs[k].i2, q.bits, q.group,
                 q.sym ? " sym" : "", cs[k].stat ? " static" : "");
        float *a = get(cpu, w.c, n), *b = get(dev, w.d, n);
        size_t batch_diff = 0;
        for (int r = 0; r < R; r++)
            for (int c = cs[k].i1; c < cs[k].i2; c++) batch_diff += a[(size_t)r * C + c] != b[(size_t)r * C + c];
        CHECKF(batch_diff == 0, "%s: %zu of the batch's weights differ", name, batch_diff);
        free(a), free(b);
        compare(name, w, n, 2e-5);
        compare_bytes("  codes", Q, n);
        compare_bytes("  scales", S, sizeof(float) * R * ng);
        compare_bytes("  zeros", Z, sizeof(float) * R * ng);
        compare_bytes("  errors", Er, sizeof(float) * R * (cs[k].i2 - cs[k].i1));
        compare_bytes("  losses", L, sizeof(double) * R);
        pfree(w), pfree(U), pfree(P), pfree(S), pfree(Z), pfree(L), pfree(Q), pfree(Er);
        free(u), free(sc), free(ze), free(perm), free(wh), free(loss), free(codes);
    }
}

/* to_f32: every f16 and bf16 bit pattern (zeros, subnormals, infinities, NaNs) widens to the
 * same bits on both (the conversions are bit operations and one exact product); f32 is a copy.
 * The staging copy (where the device has one) puts the same bytes in backend memory. */
static void test_to_f32(void) {
    const size_t n = 65536;
    uint16_t *h = malloc(sizeof(uint16_t) * n);
    for (size_t i = 0; i < n; i++) h[i] = (uint16_t)i;
    pair src = both(h, sizeof(uint16_t) * n), dst = rboth(n, 1);
    const char *names[2] = {"to_f32 f16 (all 65536)", "to_f32 bf16 (all 65536)"};
    for (int t = 0; t < 2; t++) {
        int dt = t ? QS_BE_BF16 : QS_BE_F16;
        RUN(cpu->ops->to_f32(cpu, dst.c, src.c, n, dt, E1), dev->ops->to_f32(dev, dst.d, src.d, n, dt, E2));
        compare_bytes(names[t], dst, sizeof(float) * n);
    }
    pair f = rboth(1000, 3);
    RUN(cpu->ops->to_f32(cpu, dst.c, f.c, 1000, QS_BE_F32, E1), dev->ops->to_f32(dev, dst.d, f.d, 1000, QS_BE_F32, E2));
    compare_bytes("to_f32 f32", dst, sizeof(float) * 1000);
    if (dev->ops->stage_alloc) {
        qs_error err = {0};
        void *d = dev->ops->stage_alloc(dev, sizeof(uint16_t) * n);
        CHECK(d && dev->ops->stage_upload(dev, d, h, sizeof(uint16_t) * n, &err) == 0);
        uint16_t *back = malloc(sizeof(uint16_t) * n);
        CHECK(dev->ops->download(dev, back, d, sizeof(uint16_t) * n, &err) == 0);
        CHECKF(!memcmp(back, h, sizeof(uint16_t) * n), "%s stage_upload: the bytes differ", dev->ops->name);
        printf("%-34s %zu bytes identical\n", "stage_alloc + stage_upload", sizeof(uint16_t) * n);
        dev->ops->free(dev, d);
        free(back);
    }
    pfree(src), pfree(dst), pfree(f);
    free(h);
}

/* to_bf16 bit for bit on every backend (base/half.c's integer rounding: ties to even, NaN
 * quieted, infinities, subnormals, overflow to infinity), over random bit patterns and the edge
 * values; linear_bf16 against gemm on the widened weights: the CPU backends' bits exactly, a GPU
 * within its bf16 GEMM tolerance (its input is rounded to bf16 too), with padded leading
 * dimensions, beta 0 over NaN and beta 1, and three windows */
static void test_bf16(void) {
    if (!dev->ops->to_bf16 || !dev->ops->linear_bf16) {
        printf("%-34s not on %s\n", "to_bf16, linear_bf16", dev->ops->name);
        return;
    }
    const size_t n = 70000;
    uint32_t *bits = malloc(sizeof(uint32_t) * n);
    uint64_t s = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < n; i++) s = s * 6364136223846793005ull + 1442695040888963407ull, bits[i] = (uint32_t)(s >> 32);
    const uint32_t edge[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u, 0xffbfffffu,
                             0x00000001u, 0x007fffffu, 0x3f808000u, 0x3f818000u, 0x3f808001u, 0x7f7fffffu, 0xff7fffffu};
    memcpy(bits, edge, sizeof edge);
    pair f = both(bits, sizeof(uint32_t) * n);
    pair h = both(bits, sizeof(uint16_t) * n); /* overwritten */
    RUN(cpu->ops->to_bf16(cpu, h.c, f.c, n, E1), dev->ops->to_bf16(dev, h.d, f.d, n, E2));
    compare_bytes("to_bf16 (random bits + edges)", h, sizeof(uint16_t) * n);
    /* the edges' values, worked by hand: signed zeros and infinities kept, NaNs quieted (0x40
     * set), the smallest subnormal and the largest one round to 0 and 0x0080, ties go to even
     * (1 + 2^-8 -> 1, 1 + 3 * 2^-8 -> 1 + 2^-6, just above a tie rounds up), the largest float
     * to infinity */
    const uint16_t want[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7fc0, 0xffff,
                             0x0000, 0x0080, 0x3f80, 0x3f82, 0x3f81, 0x7f80, 0xff80};
    uint16_t got[sizeof want / sizeof want[0]];
    qs_error eg = {0};
    CHECK(dev->ops->download(dev, got, h.d, sizeof got, &eg) == 0);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECKF(got[i] == want[i], "%s to_bf16 of 0x%08x: 0x%04x, want 0x%04x", dev->ops->name, edge[i], got[i], want[i]);
    pfree(f), pfree(h), free(bits);
    /* the linear layer (tw 1): x [m, k] (ldx k + 3), w [nn, k] bf16 (ldw k + 5), y [m, nn] (ldy
     * nn + 2); its backward's product (tw 0): w [k, nn] (ldw nn + 5), x packed (ldx k) */
    const int P = 64, m = 3 * P, nn = 45, k = 77, ldy = nn + 2;
    float *nan = malloc(sizeof(float) * (size_t)m * ldy);
    for (size_t i = 0; i < (size_t)m * ldy; i++) nan[i] = NAN;
    pair x = rboth((size_t)m * (k + 3), 1);
    for (int tw = 1; tw >= 0; tw--) {
        const int wr = tw ? nn : k, wc = tw ? k : nn, ldw = wc + 5, ldx = tw ? k + 3 : k;
        float *wf = qs_test_rvec((size_t)wr * ldw, 1);
        uint16_t *wh = malloc(sizeof(uint16_t) * (size_t)wr * ldw);
        float *ww = malloc(sizeof(float) * (size_t)wr * wc); /* the widened weights, packed */
        for (int r = 0; r < wr; r++)
            for (int c = 0; c < ldw; c++) {
                wh[(size_t)r * ldw + c] = qs_f32_to_bf16(wf[(size_t)r * ldw + c]);
                if (c < wc) ww[(size_t)r * wc + c] = qs_bf16_to_f32(wh[(size_t)r * ldw + c]);
            }
        pair w = both(wh, sizeof(uint16_t) * (size_t)wr * ldw), wref = both(ww, sizeof(float) * (size_t)wr * wc);
        for (int beta = 0; beta <= 1; beta++)
            for (int win = 0; win <= 1; win++) {
                pair y = beta ? rboth((size_t)m * ldy, 1) : both(nan, sizeof(float) * (size_t)m * ldy);
                qs_error e0 = {0};
                if (win && cpu->ops->set_window_rows) CHECK(cpu->ops->set_window_rows(cpu, P, &e0) == 0);
                if (win && dev->ops->set_window_rows) CHECK(dev->ops->set_window_rows(dev, P, &e0) == 0);
                /* the reference: cpu gemm on the widened weights */
                RUN(cpu->ops->gemm(cpu, 0, tw, m, nn, k, 1.0f, x.c, ldx, wref.c, wc, (float)beta, y.c, ldy, E1),
                    dev->ops->linear_bf16(dev, tw, m, nn, k, x.d, ldx, w.d, ldw, (float)beta, y.d, ldy, E2));
                if (win && cpu->ops->set_window_rows) CHECK(cpu->ops->set_window_rows(cpu, 0, &e0) == 0);
                if (win && dev->ops->set_window_rows) CHECK(dev->ops->set_window_rows(dev, 0, &e0) == 0);
                char name[48];
                snprintf(name, sizeof name, "linear_bf16 %s beta=%d%s", tw ? "x w^T" : "x w", beta, win ? " (3 windows)" : "");
                /* the padding columns of y are not written: compare the rows' first nn values only */
                float *a = get(cpu, y.c, (size_t)m * ldy), *b = get(dev, y.d, (size_t)m * ldy);
                double worst = 0, ss = 0;
                for (int r = 0; r < m; r++)
                    for (int c = 0; c < nn; c++) {
                        double av = a[(size_t)r * ldy + c], bv = b[(size_t)r * ldy + c], e = fabs(av - bv);
                        ss += av * av;
                        if (e > worst || e != e) worst = e;
                    }
                double rel = worst / (sqrt(ss / ((double)m * nn)) + 1e-30),
                       lim = exact || !strcmp(dev->ops->name, "cpu") ? 0 : 2e-2;
                CHECKF(rel <= lim && rel == rel, "%s: error %.3g of rms (limit %.1g)", name, rel, lim);
                printf("%-34s error/rms %.2e\n", name, rel);
                free(a), free(b);
                pfree(y);
            }
        pfree(w), pfree(wref);
        free(wf), free(wh), free(ww);
    }
    pfree(x);
    free(nan);
}

/* the order of the two streams: after mark + wait_mark, a staged copy into a buffer lands after
 * the ops before the mark (long enough on a GPU that a copy that did not wait would meet them:
 * 16 passes of scale over 64 MiB), so the buffer holds exactly the copy; on cpu-fenced, a staged
 * copy into a buffer that ops may still use, or a stage_download of a buffer that ops after the
 * mark use, is reported as the race it would be on a GPU */
static void test_stream_order(void) {
    if (!dev->ops->stage_upload || !dev->ops->mark || !dev->ops->wait_mark) return;
    const size_t n = (size_t)16 << 20;
    float *x = qs_test_rvec(n, 1), *y = qs_test_rvec(n, 1), *back = malloc(sizeof(float) * n);
    float *d = put(dev, x, sizeof(float) * n);
    qs_error err = {0};
    for (int i = 0; i < 16; i++) CHECK(dev->ops->scale(dev, d, d, 1.5f, n, &err) == 0);
    CHECK(dev->ops->mark(dev, 0, &err) == 0);
    CHECK(dev->ops->wait_mark(dev, 0, &err) == 0);
    CHECKF(dev->ops->stage_upload(dev, d, y, sizeof(float) * n, &err) == 0, "stage_upload after wait_mark: %s", err.msg);
    CHECK(dev->ops->download(dev, back, d, sizeof(float) * n, &err) == 0);
    CHECKF(!memcmp(back, y, sizeof(float) * n), "%s: a staged copy after wait_mark met the ops before the mark",
           dev->ops->name);
    if (exact) {
        CHECK(dev->ops->scale(dev, d, d, 1.5f, n, &err) == 0);
        qs_error e2 = {0};
        CHECKF(dev->ops->stage_upload(dev, d, y, sizeof(float) * n, &e2) != 0 && strstr(e2.msg, "races"),
               "cpu-fenced: a staged copy into a buffer an op may still use was not reported (%s)", e2.msg);
        CHECK(dev->ops->mark(dev, 1, &err) == 0);
        CHECK(dev->ops->scale(dev, d, d, 1.5f, n, &err) == 0); /* after the mark */
        qs_error e3 = {0};
        CHECKF(dev->ops->stage_download(dev, 1, back, d, sizeof(float) * n, &e3) != 0 && strstr(e3.msg, "races"),
               "cpu-fenced: a stage_download of a buffer used after its mark was not reported (%s)", e3.msg);
        CHECK(dev->ops->synchronize(dev, &err) == 0);
        CHECKF(dev->ops->stage_upload(dev, d, y, sizeof(float) * n, &err) == 0, "stage_upload after synchronize: %s",
               err.msg);
    }
    printf("%-34s staged copies after the ops before a mark%s\n", "mark + wait_mark", exact ? "; races reported" : "");
    dev->ops->free(dev, d);
    free(x), free(y), free(back);
}

/* cpu-fenced: a host read of its memory must fault (else the fence checks nothing) */
static void test_fence_faults(void) {
    pid_t pid = fork();
    if (pid == 0) {
        volatile float *p = dev->ops->alloc(dev, 64);
        float x = p[0];
        _exit(x == 12345.0f ? 2 : 0); /* reached only when the read did not fault */
    }
    int st = 0;
    waitpid(pid, &st, 0);
    /* killed by the fault, or (under AddressSanitizer, which catches it) exited with an error */
    int faulted = WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 2);
    CHECKF(faulted, "a host read of cpu-fenced memory did not fault (status %d)", st);
}

int main(int argc, char **argv) {
    qs_test_seed = 0x9e3779b97f4a7c15ull;
    const char *name = argc > 1 ? argv[1] : "cpu-fenced";
    qs_error err = {0};
    if (!strcmp(name, "cuda") && !qs_cuda_usable()) {
        printf("no usable CUDA device (backends compiled: %s): skipped\n", qs_backends_compiled());
        return 77;
    }
    if (qs_backend_create(&cpu, "cpu", 0, &err) || qs_backend_create(&dev, name, 0, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    exact = !strcmp(name, "cpu-fenced");
    const char *mode = getenv("QS_CUDA_GEMM");
    gemm_tol = !mode || !strcmp(mode, "bf16") ? 2e-2 : !strcmp(mode, "tf32") ? 2e-3 : 2e-5;
    printf("%s against cpu (GEMM math %s)\n", dev->ops->name, exact ? "cpu" : mode ? mode : "bf16");
    if (exact) test_fence_faults();
    test_gemm();
    test_norms();
    test_rope();
    test_attention(2, 300, 6, 2, 16); /* GQA groups of 3, two windows, more than one query block */
    test_attention(1, 37, 4, 4, 5);   /* plain multi-head, odd head_dim and length */
    test_attention(3, 1, 2, 1, 4);    /* windows of one token */
    test_elementwise();
    test_gathers();
    test_quant();
    test_lse_mse_adamw();
    test_cholesky();
    test_gptq_batch();
    test_quant_weight();
    test_dlqat();
    test_lwc();
    test_chan_scale();
    test_gptq_hessian();
    test_to_f32();
    test_bf16();
    test_stream_order();
    qs_backend_free(dev);
    qs_backend_free(cpu);
    return qs_test_result();
}
