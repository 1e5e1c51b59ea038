/* tests/test_backward_ops.c - the CPU backend's tuning ops (rmsnorm_backward,
 * attention_backward, swiglu_backward, gather_backward, fake_quant_weight, mse_grad, adamw_step).
 *
 * Gradients are held against central finite differences of a float64 forward written here
 * (independently of cpu/) on seeded random data in [-1, 1] (never zeros): the op's gradient of
 * f = sum(dy * forward(inputs)) must match (f(u + h) - f(u - h)) / 2h for every input u of the
 * small shapes and for a sample of the inputs of an attention longer than one query block.
 * Tolerance: max |got - fd| <= TOL x (1 + max |fd|), TOL = 2e-5. With h = 1e-4 in double the
 * difference quotient is off by about h^2 |f'''| ~ 1e-8 (the forwards are smooth with O(1)
 * derivatives here) plus 1e-16 |f| / h ~ 1e-11, so the measured error is the op's fp32
 * rounding: sums of at most ~600 O(1) terms (~1e-6 relative) and exp at ~2 ulp. 2e-5 is an
 * order of magnitude above that and far below a wrong sign, index or term (>= 1e-2). The gather's
 * transpose sums a handful of products per value (its forward is linear: the quotient is exact
 * up to ~1e-12), so it lands near 1e-7, within the same tolerance.
 * Weight fake-quant is compared bit for bit with quant/affine.c; AdamW with a float64
 * PyTorch-formula reference; then 1 and 2 threads give the same bits. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/registry.h"
#include "quant/affine.h"
#include "tests/testutil.h"

#define TOL 2e-5
#define FD_H 1e-4

static double *dcopy(const float *x, size_t n) {
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
/* got[idx[i]] against ref[i] (idx NULL: i) */
static void cmp(const char *what, const float *got, const size_t *idx, const double *ref, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[idx ? idx[i] : i] - ref[i]);
        worst = d > worst || d != d ? d : worst;
        scale = fmax(scale, fabs(ref[i]));
    }
    CHECKF(worst <= TOL * (1 + scale), "%s: max error %.3g (scale %.3g)", what, worst, scale);
    printf("%-36s max error %.2e (scale %.2f)\n", what, worst, scale);
}

/* ---- RMSNorm ---- */

/* sum over row r of dy * x / rms(x) * gamma, double */
static double rms_row(const double *x, const double *g, const float *dy, int dim, double eps) {
    double ss = 0, f = 0;
    for (int i = 0; i < dim; i++) ss += x[i] * x[i];
    double inv = 1 / sqrt(ss / dim + eps);
    for (int i = 0; i < dim; i++) f += dy[i] * x[i] * inv * g[i];
    return f;
}

static void test_rmsnorm_backward(qs_backend *be) {
    const int rows = 37, dim = 133; /* three dgamma column chunks, the last partial */
    const float eps = 1e-5f;
    size_t n = (size_t)rows * dim;
    float *x = qs_test_rvec(n, 1), *g = qs_test_rvec(dim, 1), *dy = qs_test_rvec(n, 1), *y = malloc(sizeof(float) * n);
    float *dx = malloc(sizeof(float) * n), *dg = qs_test_rvec(dim, 1), *dg0 = malloc(sizeof(float) * dim), rstd[37];
    memcpy(dg0, dg, sizeof(float) * dim);
    qs_error err = {0};
    CHECK(be->ops->rmsnorm(be, y, x, g, rows, dim, eps, rstd, &err) == 0);
    CHECKF(be->ops->rmsnorm_backward(be, dx, dg, dy, x, g, rstd, rows, dim, &err) == 0, "%s", err.msg);
    double *xd = dcopy(x, n), *gd = dcopy(g, dim), *fd = malloc(sizeof(double) * n), *fdg = calloc(dim, sizeof(double));
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++) {
            double *u = xd + (size_t)r * dim + i, u0 = *u;
            *u = u0 + FD_H;
            double fp = rms_row(xd + (size_t)r * dim, gd, dy + (size_t)r * dim, dim, eps);
            *u = u0 - FD_H;
            double fm = rms_row(xd + (size_t)r * dim, gd, dy + (size_t)r * dim, dim, eps);
            *u = u0;
            fd[(size_t)r * dim + i] = (fp - fm) / (2 * FD_H);
        }
    for (int i = 0; i < dim; i++) {
        double u0 = gd[i], fp = 0, fm = 0;
        for (int r = 0; r < rows; r++) {
            gd[i] = u0 + FD_H;
            fp += rms_row(xd + (size_t)r * dim, gd, dy + (size_t)r * dim, dim, eps);
            gd[i] = u0 - FD_H;
            fm += rms_row(xd + (size_t)r * dim, gd, dy + (size_t)r * dim, dim, eps);
        }
        gd[i] = u0;
        fdg[i] = (fp - fm) / (2 * FD_H) + dg0[i]; /* accumulated onto what dgamma held */
    }
    cmp("rmsnorm_backward dx", dx, NULL, fd, n);
    cmp("rmsnorm_backward dgamma (+=)", dg, NULL, fdg, dim);
    /* dx may overwrite dy */
    memcpy(dg, dg0, sizeof(float) * dim);
    float *dyc = malloc(sizeof(float) * n);
    memcpy(dyc, dy, sizeof(float) * n);
    CHECK(be->ops->rmsnorm_backward(be, dyc, dg, dyc, x, g, rstd, rows, dim, &err) == 0);
    CHECK(memcmp(dyc, dx, sizeof(float) * n) == 0);
    CHECK(be->ops->rmsnorm_backward(be, dx, dg, dy, x, g, rstd, rows, 0, &err) == QS_EUSAGE);
    free(x), free(g), free(dy), free(y), free(dx), free(dg), free(dg0), free(xd), free(gd), free(fd), free(fdg), free(dyc);
}

/* ---- attention ---- */

typedef struct att_case {
    int n_win, L, H, KVH, hd;
    double scale;
} att_case;

/* sum over window w of dout * attention(q, k, v), double, causal GQA */
static double att_window(const att_case *c, int w, const double *q, const double *k, const double *v,
                         const float *dout, double *p) {
    size_t qs = (size_t)c->H * c->hd, ks = (size_t)c->KVH * c->hd;
    double f = 0;
    for (int h = 0; h < c->H; h++) {
        int kh = h / (c->H / c->KVH);
        for (int i = 0; i < c->L; i++) {
            size_t qi = ((size_t)w * c->L + i) * qs + (size_t)h * c->hd;
            double mx = -1e300, sum = 0;
            for (int j = 0; j <= i; j++) {
                size_t kj = ((size_t)w * c->L + j) * ks + (size_t)kh * c->hd;
                double d = 0;
                for (int e = 0; e < c->hd; e++) d += q[qi + e] * k[kj + e];
                p[j] = d * c->scale;
                mx = fmax(mx, p[j]);
            }
            for (int j = 0; j <= i; j++) sum += p[j] = exp(p[j] - mx);
            for (int j = 0; j <= i; j++) {
                size_t vj = ((size_t)w * c->L + j) * ks + (size_t)kh * c->hd;
                double dv = 0;
                for (int e = 0; e < c->hd; e++) dv += dout[qi + e] * v[vj + e];
                f += p[j] / sum * dv;
            }
        }
    }
    return f;
}

/* sample: 0 checks every input, else that many inputs of each of q, k and v, spread over the
 * positions (half of them in the last query block when there are several) */
static void test_attention_backward(qs_backend *be, att_case c, int sample) {
    size_t T = (size_t)c.n_win * c.L, qs = (size_t)c.H * c.hd, ks = (size_t)c.KVH * c.hd;
    float *q = qs_test_rvec(T * qs, 2), *k = qs_test_rvec(T * ks, 2), *v = qs_test_rvec(T * ks, 1), *dout = qs_test_rvec(T * qs, 1);
    float *out = malloc(sizeof(float) * T * qs), *lse = malloc(sizeof(float) * c.n_win * c.H * c.L);
    float *dq = malloc(sizeof(float) * T * qs), *dk = qs_test_rvec(T * ks, 1), *dv = qs_test_rvec(T * ks, 1); /* overwritten */
    qs_error err = {0};
    CHECK(be->ops->attention(be, out, q, k, v, c.n_win, c.L, c.H, c.KVH, c.hd, (float)c.scale, lse, &err) == 0);
    CHECKF(be->ops->attention_backward(be, dq, dk, dv, dout, q, k, v, out, lse, c.n_win, c.L, c.H, c.KVH, c.hd,
                                       (float)c.scale, &err) == 0,
           "%s", err.msg);
    double *qd = dcopy(q, T * qs), *kd = dcopy(k, T * ks), *vd = dcopy(v, T * ks), *p = malloc(sizeof(double) * c.L);
    const char *names[3] = {"dq", "dk", "dv"};
    double *ins[3] = {qd, kd, vd};
    float *gots[3] = {dq, dk, dv};
    size_t widths[3] = {qs, ks, ks};
    for (int a = 0; a < 3; a++) {
        size_t n = T * widths[a], m = sample ? (size_t)sample : n;
        size_t *idx = malloc(sizeof(size_t) * m);
        double *fd = malloc(sizeof(double) * m);
        for (size_t s = 0; s < m; s++) {
            size_t i = s;
            if (sample) { /* a spread of rows; odd samples from the window's last 10 positions */
                size_t t = (size_t)(s * 7919) % T;
                if (s % 2) t = (t / c.L) * c.L + c.L - 1 - (s * 31) % 10;
                i = t * widths[a] + (s * 13) % widths[a];
            }
            idx[s] = i;
            int w = (int)(i / widths[a] / c.L);
            double u0 = ins[a][i];
            ins[a][i] = u0 + FD_H;
            double fp = att_window(&c, w, qd, kd, vd, dout, p);
            ins[a][i] = u0 - FD_H;
            double fm = att_window(&c, w, qd, kd, vd, dout, p);
            ins[a][i] = u0;
            fd[s] = (fp - fm) / (2 * FD_H);
        }
        char name[80];
        snprintf(name, sizeof name, "attention_backward %s %dx%d h%d/%d%s", names[a], c.n_win, c.L, c.H, c.KVH,
                 sample ? " (sample)" : "");
        cmp(name, gots[a], idx, fd, m);
        free(idx), free(fd);
    }
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    free(qd), free(kd), free(vd), free(p);
}

/* ---- SwiGLU ---- */

static void test_swiglu_backward(qs_backend *be) {
    size_t n = 1001;
    float *g = qs_test_rvec(n, 6), *u = qs_test_rvec(n, 1), *dy = qs_test_rvec(n, 1), *dg = malloc(sizeof(float) * n), *du = malloc(sizeof(float) * n);
    qs_error err = {0};
    CHECK(be->ops->swiglu_backward(be, dg, du, dy, g, u, n, &err) == 0);
    double *fdg = malloc(sizeof(double) * n), *fdu = malloc(sizeof(double) * n);
#define SWI(gg, uu) ((gg) / (1 + exp(-(gg))) * (uu))
    for (size_t i = 0; i < n; i++) {
        double gi = g[i], ui = u[i];
        fdg[i] = dy[i] * (SWI(gi + FD_H, ui) - SWI(gi - FD_H, ui)) / (2 * FD_H);
        fdu[i] = dy[i] * (SWI(gi, ui + FD_H) - SWI(gi, ui - FD_H)) / (2 * FD_H);
    }
#undef SWI
    cmp("swiglu_backward dgate", dg, NULL, fdg, n);
    cmp("swiglu_backward dup", du, NULL, fdu, n);
    float *dyc = malloc(sizeof(float) * n);
    memcpy(dyc, dy, sizeof(float) * n);
    CHECK(be->ops->swiglu_backward(be, dyc, du, dyc, g, u, n, &err) == 0); /* dgate over dy */
    CHECK(memcmp(dyc, dg, sizeof(float) * n) == 0);
    free(g), free(u), free(dy), free(dg), free(du), free(fdg), free(fdu), free(dyc);
}

/* ---- the reassembly gather's transpose ---- */


/* sum over row r of dy * gather(v), double */
static double gather_row(const double *v, const float *dy, int dim, const int32_t *sa, const int32_t *sb,
                         const float *cf) {
    double f = 0;
    for (int k = 0; k < dim; k++) f += dy[k] * (cf[k] * (v[sa[k]] + (sb[k] >= 0 ? v[sb[k]] : 0)));
    return f;
}

static void test_gather_backward(qs_backend *be, int arbitrary) {
    const int rows = 13, dim = 29;
    size_t n = (size_t)rows * dim;
    int32_t sa[29], sb[29];
    float cf[29];
    if (arbitrary) /* any maps: unread channels, sources read many times, src_b before src_a */
        for (int k = 0; k < dim; k++) {
            sa[k] = (int32_t)((qs_test_rnd() + 1) * 0.5f * dim) % dim;
            sb[k] = k % 3 ? (int32_t)((qs_test_rnd() + 1) * 0.5f * dim) % dim : -1;
            cf[k] = qs_test_rnd();
        }
    else
        qs_test_reasm_maps(dim, 7, sa, sb, cf);
    float *v = qs_test_rvec(n, 1), *dy = qs_test_rvec(n, 1), *dv = qs_test_rvec(n, 1); /* dv overwritten */
    qs_error err = {0};
    CHECKF(be->ops->gather_backward(be, dv, dy, rows, dim, sa, sb, cf, &err) == 0, "%s", err.msg);
    double *vd = dcopy(v, n), *fd = malloc(sizeof(double) * n);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < dim; i++) {
            double *u = vd + (size_t)r * dim + i, u0 = *u;
            *u = u0 + FD_H;
            double fp = gather_row(vd + (size_t)r * dim, dy + (size_t)r * dim, dim, sa, sb, cf);
            *u = u0 - FD_H;
            double fm = gather_row(vd + (size_t)r * dim, dy + (size_t)r * dim, dim, sa, sb, cf);
            *u = u0;
            fd[(size_t)r * dim + i] = (fp - fm) / (2 * FD_H);
        }
    cmp(arbitrary ? "gather_backward dv (arbitrary maps)" : "gather_backward dv (split + merge)", dv, NULL, fd, n);
    if (arbitrary) { /* an unread channel gets exactly 0 */
        int unread = 0;
        for (int c = 0; c < dim; c++) {
            int read = 0;
            for (int k = 0; k < dim; k++) read |= sa[k] == c || sb[k] == c;
            for (int r = 0; r < rows && !read; r++) CHECK(dv[(size_t)r * dim + c] == 0.0f);
            unread += !read;
        }
        CHECK(unread > 0);
    }
    CHECK(be->ops->gather_backward(be, dv, dy, rows, 0, sa, sb, cf, &err) == QS_EUSAGE);
    free(v), free(dy), free(dv), free(vd), free(fd);
}

/* ---- the weight quantizers' cases: every bit width the methods use, per row and in groups
 * (16: a partial last group of 8), asymmetric and symmetric, on a random weight whose row 4 is
 * constant ---- */

enum { WQ_ROWS = 9, WQ_COLS = 40, WQ_CASES = 4 * 3 * 2 };

static qs_qconfig wq_case(int k) {
    static const int bitss[4] = {2, 3, 4, 8}, groups[3] = {-1, 8, 16};
    return (qs_qconfig){.bits = bitss[k / 6], .group = groups[k / 2 % 3], .sym = k % 2};
}

static float *wq_weight(void) {
    float *w = qs_test_rvec((size_t)WQ_ROWS * WQ_COLS, 0.3f);
    for (int c = 0; c < WQ_COLS; c++) w[4 * WQ_COLS + c] = -0.125f;
    return w;
}

/* ---- weight fake-quant: the same bits as quant/affine.c ---- */

static void test_fake_quant_weight(qs_backend *be) {
    const int rows = WQ_ROWS, cols = WQ_COLS;
    qs_error err = {0};
    int cases = 0, mismatch = 0;
    for (int k = 0; k < WQ_CASES; k++) {
        const qs_qconfig qc = wq_case(k);
        float *w = wq_weight(), *y = malloc(sizeof(float) * rows * cols);
        CHECK(be->ops->fake_quant_weight(be, y, w, rows, cols, qc.group, qc.bits, qc.sym, &err) == 0);
        int g = qc.group > 0 ? qc.group : cols;
        for (int r = 0; r < rows; r++)
            for (int c0 = 0; c0 < cols; c0 += g) {
                int n = cols - c0 < g ? cols - c0 : g;
                float sc, z;
                qs_quant_params(w + r * cols + c0, n, &qc, &sc, &z);
                for (int i = 0; i < n; i++) {
                    float want = ((float)qs_quant_code(w[r * cols + c0 + i], sc, z, qc.bits) - z) * sc;
                    mismatch += memcmp(&want, &y[r * cols + c0 + i], sizeof want) != 0;
                    CHECK(isfinite(y[r * cols + c0 + i]));
                }
            }
        if (!qc.sym) CHECK(fabsf(y[4 * cols] + 0.125f) <= 1e-5f); /* constant row reproduced */
        CHECK(be->ops->fake_quant_weight(be, w, w, rows, cols, qc.group, qc.bits, qc.sym, &err) == 0);
        CHECK(memcmp(w, y, sizeof(float) * rows * cols) == 0); /* in place */
        cases++;
        free(w), free(y);
    }
    CHECKF(mismatch == 0, "fake_quant_weight: %d values differ from quant/affine.c", mismatch);
    /* 16 bits: within half a step of a range of 0.6 */
    float *w = qs_test_rvec((size_t)rows * cols, 0.3f), *y = malloc(sizeof(float) * rows * cols);
    CHECK(be->ops->fake_quant_weight(be, y, w, rows, cols, -1, 16, 0, &err) == 0);
    double worst = 0;
    for (int i = 0; i < rows * cols; i++) worst = fmax(worst, fabs((double)y[i] - w[i]));
    CHECKF(worst <= 0.6 / 65535, "16-bit fake quant error %.3g", worst);
    CHECK(be->ops->fake_quant_weight(be, y, w, rows, cols, -1, 1, 0, &err) == QS_EUSAGE);
    printf("fake_quant_weight: %d cases bit-identical to quant/affine.c; 16 bits within %.1e\n", cases, worst);
    free(w), free(y);
}

/* ---- a layer's codes: the bits of qs_quant_rtn and qs_dequant_row_sq_err ---- */

static void test_quant_weight(qs_backend *be) {
    const int rows = WQ_ROWS, cols = WQ_COLS;
    qs_error err = {0};
    int cases = 0, mismatch = 0;
    for (int k = 0; k < WQ_CASES; k++) {
        const qs_qconfig qc = wq_case(k);
        const int ng = qs_qconfig_groups(&qc, cols);
        float *w = wq_weight(), *keep = malloc(sizeof(float) * rows * cols);
        memcpy(keep, w, sizeof(float) * rows * cols);
        uint8_t c1[WQ_ROWS * WQ_COLS], c2[WQ_ROWS * WQ_COLS];
        float s1[WQ_ROWS * 5], z1[WQ_ROWS * 5], s2[WQ_ROWS * 5], z2[WQ_ROWS * 5];
        double e1[WQ_ROWS], e2[WQ_ROWS];
        CHECK(be->ops->quant_weight(be, w, rows, cols, qc.group, qc.bits, qc.sym, c1, s1, z1, e1, &err) == 0);
        CHECK(memcmp(w, keep, sizeof(float) * rows * cols) == 0); /* w is not changed */
        CHECK(qs_quant_rtn(w, rows, cols, &qc, c2, s2, z2, "w", &err) == 0);
        qs_dequant_row_sq_err(c2, s2, z2, rows, cols, qc.group, w, e2);
        mismatch += memcmp(c1, c2, (size_t)rows * cols) != 0;
        mismatch += memcmp(s1, s2, sizeof(float) * rows * ng) != 0 || memcmp(z1, z2, sizeof(float) * rows * ng) != 0;
        mismatch += memcmp(e1, e2, sizeof e1) != 0;
        CHECK(e1[0] > 0); /* a random row does not round exactly */
        /* without the errors: the same codes */
        memset(c1, 0xff, sizeof c1);
        CHECK(be->ops->quant_weight(be, w, rows, cols, qc.group, qc.bits, qc.sym, c1, s1, z1, NULL, &err) == 0);
        mismatch += memcmp(c1, c2, (size_t)rows * cols) != 0;
        cases++;
        free(w), free(keep);
    }
    CHECKF(mismatch == 0, "quant_weight: %d outputs differ from quant/affine.c", mismatch);
    /* a NaN and an infinity: codes in range, their rows' errors not finite, the others as before */
    float *w = qs_test_rvec((size_t)rows * cols, 0.3f);
    w[2 * cols + 7] = NAN, w[5 * cols + 30] = INFINITY;
    uint8_t c[WQ_ROWS * WQ_COLS];
    float sc[WQ_ROWS], z[WQ_ROWS];
    double e[WQ_ROWS];
    CHECK(be->ops->quant_weight(be, w, rows, cols, -1, 4, 0, c, sc, z, e, &err) == 0);
    for (int i = 0; i < rows * cols; i++) CHECK(c[i] <= 15);
    for (int r = 0; r < rows; r++) CHECKF(isfinite(e[r]) == (r != 2 && r != 5), "row %d error %g", r, e[r]);
    CHECK(be->ops->quant_weight(be, w, rows, cols, -1, 9, 0, c, sc, z, e, &err) == QS_EUSAGE);
    printf("quant_weight: %d cases bit-identical to qs_quant_rtn and qs_dequant_row_sq_err; NaN / Inf rows flagged\n", cases);
    free(w);
}

/* ---- MSE and AdamW ---- */

static void test_mse(qs_backend *be) {
    size_t n = 1003;
    float *a = qs_test_rvec(n, 1), *b = qs_test_rvec(n, 1), *gr = malloc(sizeof(float) * n);
    double loss = 0, ref = 0, *fd = malloc(sizeof(double) * n);
    qs_error err = {0};
    CHECK(be->ops->mse_grad(be, gr, a, b, n, &loss, &err) == 0);
    for (size_t i = 0; i < n; i++) ref += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    ref /= (double)n;
    for (size_t i = 0; i < n; i++) { /* only term i changes */
        double d = (double)a[i] - b[i], rest = ref - d * d / n;
        fd[i] = ((rest + (d + FD_H) * (d + FD_H) / n) - (rest + (d - FD_H) * (d - FD_H) / n)) / (2 * FD_H);
    }
    cmp("mse_grad grad", gr, NULL, fd, n);
    CHECKF(fabs(loss - ref) <= 1e-12 * ref, "mse loss %.17g, want %.17g", loss, ref);
    double loss2 = 0;
    CHECK(be->ops->mse_grad(be, NULL, a, b, n, &loss2, &err) == 0 && loss2 == loss); /* loss only */
    CHECK(be->ops->mse_grad(be, a, a, b, n, NULL, &err) == 0 && memcmp(a, gr, sizeof(float) * n) == 0); /* in place */
    printf("mse_grad loss %.10f (ref %.10f)\n", loss, ref);
    free(a), free(b), free(gr), free(fd);
}

static void test_adamw(qs_backend *be) {
    size_t n = 1003;
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.05f;
    float *p = qs_test_rvec(n, 1), *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    double *pd = dcopy(p, n), *md = calloc(n, sizeof(double)), *vd = calloc(n, sizeof(double));
    qs_error err = {0};
    for (int step = 1; step <= 3; step++) {
        float *g = qs_test_rvec(n, 1);
        CHECK(be->ops->adamw_step(be, p, g, m, v, n, lr, b1, b2, eps, wd, step, &err) == 0);
        double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
        for (size_t i = 0; i < n; i++) {
            pd[i] *= 1 - (double)lr * wd;
            md[i] = b1 * md[i] + (1 - (double)b1) * g[i];
            vd[i] = b2 * vd[i] + (1 - (double)b2) * g[i] * g[i];
            pd[i] -= lr / bc1 * md[i] / (sqrt(vd[i]) / sqrt(bc2) + eps);
        }
        free(g);
    }
    cmp("adamw_step param (3 steps)", p, NULL, pd, n);
    cmp("adamw_step m", m, NULL, md, n);
    cmp("adamw_step v", v, NULL, vd, n);
    CHECK(be->ops->adamw_step(be, p, p, m, v, n, lr, b1, b2, eps, wd, 0, &err) == QS_EUSAGE); /* steps count from 1 */
    free(p), free(m), free(v), free(pd), free(md), free(vd);
}

/* ---- 1 and 2 threads: the same bits ---- */

static void test_thread_invariance(void) {
    const int rows = 300, dim = 200, n_win = 1, L = 290, H = 4, KVH = 2, hd = 16;
    size_t n = (size_t)rows * dim, T = (size_t)n_win * L;
    float *x = qs_test_rvec(n, 1), *g = qs_test_rvec(dim, 1), *dy = qs_test_rvec(n, 1), *rs = malloc(sizeof(float) * rows);
    float *q = qs_test_rvec(T * H * hd, 2), *k = qs_test_rvec(T * KVH * hd, 2), *v = qs_test_rvec(T * KVH * hd, 1), *dout = qs_test_rvec(T * H * hd, 1);
    float *o = malloc(sizeof(float) * T * H * hd), *lse = malloc(sizeof(float) * H * L), *y = malloc(sizeof(float) * n);
    float *res[2];
    double loss[2];
    size_t per = n + dim + T * H * hd + 2 * T * KVH * hd + n;
    for (int th = 0; th < 2; th++) {
        qs_backend *be;
        qs_error err = {0};
        CHECKF(qs_backend_create(&be, "cpu", th + 1, &err) == 0, "%s", err.msg);
        float *r = res[th] = calloc(per, sizeof(float));
        CHECK(be->ops->rmsnorm(be, y, x, g, rows, dim, 1e-6f, rs, &err) == 0);
        CHECK(be->ops->rmsnorm_backward(be, r, r + n, dy, x, g, rs, rows, dim, &err) == 0);
        r += n + dim;
        CHECK(be->ops->attention(be, o, q, k, v, n_win, L, H, KVH, hd, 0.25f, lse, &err) == 0);
        CHECK(be->ops->attention_backward(be, r, r + T * H * hd, r + T * H * hd + T * KVH * hd, dout, q, k, v, o, lse,
                                          n_win, L, H, KVH, hd, 0.25f, &err) == 0);
        r += T * H * hd + 2 * T * KVH * hd;
        CHECK(be->ops->mse_grad(be, r, x, dy, n, &loss[th], &err) == 0);
        qs_backend_free(be);
    }
    CHECK(memcmp(res[0], res[1], sizeof(float) * per) == 0);
    CHECK(memcmp(&loss[0], &loss[1], sizeof(double)) == 0);
    printf("1 and 2 threads: rmsnorm_backward, attention_backward, mse_grad bit-identical%s\n",
           qs_test_failures ? " NOT" : "");
    free(x), free(g), free(dy), free(rs), free(q), free(k), free(v), free(dout), free(o), free(lse), free(y);
    free(res[0]), free(res[1]);
    /* gather_backward on its own (rows split over the threads) */
    int32_t sa[200], sb[200];
    float cf[200], *gv[2];
    qs_test_reasm_maps(dim, 11, sa, sb, cf);
    dy = qs_test_rvec(n, 1);
    for (int th = 0; th < 2; th++) {
        qs_backend *be;
        qs_error err = {0};
        CHECKF(qs_backend_create(&be, "cpu", th + 1, &err) == 0, "%s", err.msg);
        gv[th] = malloc(sizeof(float) * n);
        CHECK(be->ops->gather_backward(be, gv[th], dy, rows, dim, sa, sb, cf, &err) == 0);
        qs_backend_free(be);
    }
    int same = memcmp(gv[0], gv[1], sizeof(float) * n) == 0;
    CHECK(same);
    printf("1 and 2 threads: gather_backward bit-identical%s\n", same ? "" : " NOT");
    free(dy), free(gv[0]), free(gv[1]);
}

int main(void) {
    qs_test_seed = 0x9e3779b97f4a7c15ull;
    qs_backend *be;
    qs_error err = {0};
    CHECKF(qs_backend_create(&be, "cpu", 0, &err) == 0, "%s", err.msg);
    if (qs_test_failures) return qs_test_result();
    test_rmsnorm_backward(be);
    test_attention_backward(be, (att_case){2, 9, 4, 2, 4, 0.5}, 0);                /* GQA groups of 2 */
    test_attention_backward(be, (att_case){1, 6, 3, 3, 5, 1 / sqrt(5.0)}, 0);      /* multi-head, odd head_dim */
    test_attention_backward(be, (att_case){2, 260, 4, 2, 8, 1 / sqrt(8.0)}, 60);   /* two query blocks */
    test_attention_backward(be, (att_case){3, 1, 2, 1, 4, 0.5}, 0);                /* windows of one token */
    test_swiglu_backward(be);
    test_gather_backward(be, 0);
    test_gather_backward(be, 1);
    test_fake_quant_weight(be);
    test_quant_weight(be);
    test_mse(be);
    test_adamw(be);
    qs_backend_free(be);
    test_thread_invariance();
    return qs_test_result();
}
