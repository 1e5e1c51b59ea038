/* tests/ref_block.c - what the trainable block's tests share (test_block_backward.c, test_dlqat.c):
 * a tiny random LLaMA block (hidden 16, 4 heads on 2 kv heads of 4, intermediate 24) on a
 * backend, a float64 reference of its training forward written here independently of cpu/ and
 * model/ (the quantizers replayable as x + c with c frozen, whose exact gradient is the
 * straight-through one; DL-QAT's weight likewise), and the finite-difference check of every
 * gradient of model/llama_train.h against it. */
#include "tests/ref_block.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/lwc_grid.h"
#include "model/rope.h"
#include "quant/affine.h"
#include "tests/testutil.h"
void rfill(float *v, size_t n, float amp, float center) {
    for (size_t i = 0; i < n; i++) v[i] = center + amp * qs_test_rnd();
}

qs_model_config tiny_config(void) {
    return (qs_model_config){.arch = QS_ARCH_LLAMA, .hidden_size = 16, .intermediate_size = 24, .n_layers = 1,
                             .n_heads = 4, .n_kv_heads = 2, .head_dim = 4, .vocab_size = 32,
                             .max_position_embeddings = 64, .rms_eps = 1e-5f, .rope_theta = 10000.0f};
}

/* ---- host <-> backend ---- */
float *up_new(qs_backend *be, const float *h, size_t n) {
    float *d = be->ops->alloc(be, n * sizeof(float));
    qs_error err = {0};
    CHECK(d && be->ops->upload(be, d, h, n * sizeof(float), &err) == 0);
    return d;
}
float *down_new(qs_backend *be, const float *d, size_t n) {
    float *h = malloc(n * sizeof(float));
    qs_error err = {0};
    CHECK(be->ops->download(be, h, d, n * sizeof(float), &err) == 0);
    return h;
}


void block_make(block *b, qs_backend *be, int with_bias) {
    memset(b, 0, sizeof *b);
    b->c = tiny_config();
    b->c.attention_bias = with_bias;
    int H = 16, Q = 16, KV = 8, I = 24;
    int in[QS_PROJ_N] = {H, H, H, Q, H, H, I}, out[QS_PROJ_N] = {Q, KV, KV, H, I, I, H};
    memcpy(b->in, in, sizeof in), memcpy(b->out, out, sizeof out);
    float **dst[QS_PROJ_N] = {&b->dw.wq, &b->dw.wk, &b->dw.wv, &b->dw.wo, &b->dw.w_gate, &b->dw.w_up, &b->dw.w_down};
    for (int p = 0; p < QS_PROJ_N; p++) {
        size_t n = (size_t)in[p] * out[p];
        b->w[p] = malloc(n * sizeof(float));
        rfill(b->w[p], n, 1.5f / sqrtf((float)in[p]), 0); /* outputs of O(1) */
        *dst[p] = up_new(be, b->w[p], n);
    }
    for (int i = 0; i < 2; i++) {
        b->g[i] = malloc(H * sizeof(float));
        rfill(b->g[i], H, 0.3f, 1.0f);
    }
    b->dw.attn_norm = up_new(be, b->g[0], H);
    b->dw.ffn_norm = up_new(be, b->g[1], H);
    b->dw.layer = 3;
    b->dw.abits = 16;
    if (with_bias) {
        int bn[3] = {Q, KV, KV};
        float **bd[3] = {&b->dw.bq, &b->dw.bk, &b->dw.bv};
        for (int i = 0; i < 3; i++) {
            b->bias[i] = malloc(bn[i] * sizeof(float));
            rfill(b->bias[i], bn[i], 0.5f, 0);
            *bd[i] = up_new(be, b->bias[i], bn[i]);
        }
    }
}
/* reassembly maps at all three sites (hidden, hidden, intermediate channels), host and backend */
void block_add_maps(block *b, qs_backend *be) {
    int C[3] = {b->c.hidden_size, b->c.hidden_size, b->c.intermediate_size};
    qs_error err = {0};
    for (int i = 0; i < 3; i++) {
        size_t ib = sizeof(int32_t) * C[i], fb = sizeof(float) * C[i];
        b->ra_a[i] = malloc(ib), b->ra_b[i] = malloc(ib), b->ra_c[i] = malloc(fb);
        qs_test_reasm_maps(C[i], 3 * i, b->ra_a[i], b->ra_b[i], b->ra_c[i]);
        b->dw.ra[i].src_a = be->ops->alloc(be, ib), b->dw.ra[i].src_b = be->ops->alloc(be, ib);
        b->dw.ra[i].coef = be->ops->alloc(be, fb);
        CHECK(be->ops->upload(be, b->dw.ra[i].src_a, b->ra_a[i], ib, &err) == 0);
        CHECK(be->ops->upload(be, b->dw.ra[i].src_b, b->ra_b[i], ib, &err) == 0);
        CHECK(be->ops->upload(be, b->dw.ra[i].coef, b->ra_c[i], fb, &err) == 0);
    }
}
void block_free(block *b, qs_backend *be) {
    for (int i = 0; i < 3; i++) free(b->ra_a[i]), free(b->ra_b[i]), free(b->ra_c[i]);
    for (int p = 0; p < QS_PROJ_N; p++) free(b->w[p]);
    for (int i = 0; i < 3; i++) free(b->bias[i]);
    free(b->g[0]), free(b->g[1]);
    qs_llama_weights_free(&b->dw, be);
}

void block_fq_weights(const block *b, qs_backend *be, const qs_llama_train_opts *o, qs_llama_weights *wq,
                      float *qw[QS_PROJ_N]) {
    *wq = b->dw;
    float **slot[QS_PROJ_N] = {&wq->wq, &wq->wk, &wq->wv, &wq->wo, &wq->w_gate, &wq->w_up, &wq->w_down};
    for (int p = 0; p < QS_PROJ_N; p++) {
        size_t n = (size_t)b->in[p] * b->out[p];
        float *h = malloc(n * sizeof(float));
        memcpy(h, b->w[p], n * sizeof(float));
        w_fq(h, b->out[p], b->in[p], o);
        *slot[p] = qw[p] = up_new(be, h, n);
        free(h);
    }
}

/* ======== the float64 reference block ======== */


int qbits(int b) { return b >= 2 && b < 16 ? b : 0; }

/* per-token activation fake-quant as backend.h's act_quant formula, on the float of each value */
void act_fq(float *v, int n, int bits) { act_fq_part(v, n, n, bits); }
void act_fq_part(float *v, int n, int qn, int bits) {
    float mn = v[0], mx = v[0], maxq = (float)((1 << bits) - 1);
    for (int i = 1; i < n; i++) mn = v[i] < mn ? v[i] : mn, mx = v[i] > mx ? v[i] : mx;
    float sc = (mx - mn) / maxq;
    sc = sc < 1e-5f ? 1e-5f : sc > 1e4f ? 1e4f : sc;
    float z = rintf(-mn / sc);
    for (int i = 0; i < qn; i++) {
        float q = rintf(v[i] / sc) + z;
        q = q < 0 ? 0 : q > maxq ? maxq : q;
        v[i] = (q - z) * sc;
    }
}
/* weight fake-quant through quant/affine.c */
void w_fq(float *w, int rows, int cols, const qs_llama_train_opts *o) {
    qs_qconfig qc = {.bits = o->wbits, .group = o->group, .sym = o->sym};
    int g = o->group > 0 ? o->group : cols;
    for (int r = 0; r < rows; r++)
        for (int c0 = 0; c0 < cols; c0 += g) {
            int n = cols - c0 < g ? cols - c0 : g;
            float *x = w + (size_t)r * cols + c0, sc, z;
            qs_quant_params(x, n, &qc, &sc, &z);
            for (int i = 0; i < n; i++) x[i] = ((float)qs_quant_code(x[i], sc, z, o->wbits) - z) * sc;
        }
}

/* the quantizer of a site on x [rows, cols] in segments of seg (weights: rows x cols matrix) */
void ref_quant(ref *R, int site, double *x, int rows, int cols, int seg) {
    size_t n = (size_t)rows * cols;
    int wsite = site < QS_PROJ_N;
    if (R->mode == REF_PLAIN || !(wsite ? qbits(R->o.wbits) : qbits(R->o.abits))) return;
    if (R->mode == REF_RECORD) {
        if (!R->off[site]) R->off[site] = malloc(n * sizeof(double)), R->off_n[site] = n;
        float *f = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
        if (wsite)
            w_fq(f, rows, cols, &R->o);
        else
            for (size_t r = 0; r < (size_t)rows; r++)
                for (int s0 = 0; s0 < cols; s0 += seg) act_fq_part(f + r * cols + s0, seg, R->o.half ? (seg + 1) / 2 : seg, R->o.abits);
        for (size_t i = 0; i < n; i++) R->off[site][i] = (double)f[i] - x[i];
        free(f);
    }
    for (size_t i = 0; i < n; i++) x[i] += R->off[site][i];
}

void ref_rmsnorm(double *y, const double *x, const double *g, int T, int H, double eps) {
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int i = 0; i < H; i++) ss += x[t * H + i] * x[t * H + i];
        double inv = 1 / sqrt(ss / H + eps);
        for (int i = 0; i < H; i++) y[t * H + i] = x[t * H + i] * inv * g[i];
    }
}
/* the reassembly gather of site i in place on v [T, C] (none without maps) */
void ref_gather(const block *b, int i, double *v, int T, int C) {
    if (!b->ra_a[i]) return;
    double *row = malloc(sizeof(double) * C);
    for (int t = 0; t < T; t++) {
        double *vt = v + (size_t)t * C;
        for (int k = 0; k < C; k++) {
            int a = b->ra_a[i][k], bb = b->ra_b[i][k];
            row[k] = b->ra_c[i][k] * (vt[a] + (bb >= 0 ? vt[bb] : 0));
        }
        memcpy(vt, row, sizeof(double) * C);
    }
    free(row);
}
/* y [T, out] = x [T, in] W^T */
void ref_linear(double *y, const double *x, const double *W, int T, int in, int out) {
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++) {
            double a = 0;
            for (int i = 0; i < in; i++) a += x[t * in + i] * W[o * in + i];
            y[t * out + o] = a;
        }
}
void ref_rope(double *x, const float *inv_freq, int T, int L, int heads, int hd) {
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < hd / 2; i++) {
                double ang = (float)(t % L) * inv_freq[i], *v = x + (size_t)t * heads * hd + h * hd;
                double a = v[i], b = v[i + hd / 2];
                v[i] = a * cos(ang) - b * sin(ang);
                v[i + hd / 2] = b * cos(ang) + a * sin(ang);
            }
}

/* DL-QAT's W_hat of projection p in place: w [out, in] holds W + s B A on entry; u = W / s_g +
 * s B A (double). REF_RECORD keeps, per weight, the offset of dlqat_weight's grid value
 * rint(W / s_g + d) + z_g (float, as the op) from u + z_g, and whether the clamp bit; REF_APPLY
 * replays them: W_hat = m s_g (u + off) where the clamp did not bite, else m s_g (edge - z_g) (the
 * function whose exact gradient is the straight-through one) */
void ref_dlqat(ref *R, int p, double *w) {
    const int in = R->b->in[p], out = R->b->out[p], g = R->o.group > 0 ? R->o.group : in, ng = (in + g - 1) / g;
    const double qmax = (double)((1 << R->o.wbits) - 1);
    const size_t n = (size_t)in * out;
    if (R->mode == REF_RECORD && !R->doff[p]) R->doff[p] = malloc(n * sizeof(double)), R->dedge[p] = malloc(n);
    for (int r = 0; r < out; r++)
        for (int c = 0; c < in; c++) {
            const size_t i = (size_t)r * in + c, k = (size_t)r * ng + c / g;
            const double sc = R->gs[p][k], z = R->gz[p][k], W = R->W[p][i], d = w[i] - W, u = W / sc + d;
            if (R->mode == REF_RECORD) {
                float v = rintf((float)W / (float)sc + (float)d) + (float)z;
                R->dedge[p][i] = v < 0 ? 1 : v > qmax ? 2 : 0;
                R->doff[p][i] = (double)v - (u + z);
            }
            const int e = R->dedge[p][i];
            const double v = e == 1 ? 0 : e == 2 ? qmax : u + z + R->doff[p][i];
            w[i] = R->M[p][k] * sc * (v - z);
        }
}

/* SliderQuant's Q_lwc over w = W + s B A (double) in place. REF_RECORD keeps, from the float
 * values as the trainer has them, each group's range and zero point (backend/lwc_grid.h) and
 * each weight's rounding offset and clamp edge; then the scale is the double function of the
 * logits over that frozen range, y = w + scale * offset inside the grid and scale * (edge code -
 * zero) where the clamp bites: exactly the straight-through gradient. */
void ref_slider(ref *R, int p, double *w) {
    const int in = R->b->in[p], out = R->b->out[p], g = R->o.group > 0 ? R->o.group : in, ng = (in + g - 1) / g;
    const int bits = R->o.wbits, sym = R->o.sym;
    const double qmax = (double)((1 << bits) - 1);
    const size_t n = (size_t)in * out, qn = (size_t)out * ng;
    const int qcols = R->o.half ? (in + 1) / 2 : in; /* the first pass quantizes the first half */
    if (R->mode == REF_RECORD && !R->doff[p]) {
        R->doff[p] = malloc(n * sizeof(double)), R->dedge[p] = malloc(n);
        R->cmx[p] = malloc(qn * sizeof(double)), R->cmn[p] = malloc(qn * sizeof(double)), R->gz[p] = malloc(qn * sizeof(double));
    }
    for (int r = 0; r < out; r++)
        for (int k = 0; k < ng; k++) {
            const int c0 = k * g, c1 = c0 + g < in ? c0 + g : in;
            const size_t q = (size_t)r * ng + k;
            if (R->mode == REF_RECORD) {
                float mx = (float)w[(size_t)r * in + c0], mn = mx;
                for (int c = c0; c < c1; c++) {
                    const float f = (float)w[(size_t)r * in + c];
                    mx = f > mx ? f : mx, mn = f < mn ? f : mn;
                }
                const qs_lwc_grid gr = qs_lwc_grid_of(mx, mn, (float)R->CG[p][q], (float)R->CB[p][q], bits, sym);
                R->cmx[p][q] = mx, R->cmn[p][q] = mn, R->gz[p][q] = gr.zero;
                for (int c = c0; c < c1; c++) {
                    const size_t i = (size_t)r * in + c;
                    const float t = (float)w[i] / gr.scale, rt = rintf(t), v = rt + gr.zero;
                    R->dedge[p][i] = v < 0 ? 1 : v > qmax ? 2 : 0;
                    R->doff[p][i] = (double)rt - (double)t;
                }
            }
            const double sg = 1 / (1 + exp(-R->CG[p][q])), sb = 1 / (1 + exp(-R->CB[p][q]));
            const double hi = sg * R->cmx[p][q], lo = sb * R->cmn[p][q], z = R->gz[p][q];
            const double sc = sym ? fmax(fabs(hi), fabs(lo)) / ((1 << (bits - 1)) - 1) : (hi - lo) / qmax;
            for (int c = c0; c < c1 && c < qcols; c++) {
                const size_t i = (size_t)r * in + c;
                const int e = R->dedge[p][i];
                w[i] = e ? sc * ((e == 1 ? 0 : qmax) - z) : w[i] + sc * R->doff[p][i];
            }
        }
}

/* SliderQuant's smoothing factor of element i on a side of projection p (rows: side 0, columns:
 * side 1), written out from model/llama_train.h's table (not from backend/chan_scale.h) */
static double smooth_factor(const ref *R, int p, int side, int i) {
    const qs_model_config *c = &R->b->c;
    const int hd = c->head_dim, rep = c->n_heads / c->n_kv_heads, hh = hd / 2;
    const double *a = NULL;
    int k = i, inv = 0;
    if (side) { /* the consumers' columns * a */
        if (p <= QS_PROJ_V) a = R->SM[QS_SMOOTH_QKV];
        else if (p == QS_PROJ_O) a = R->SM[QS_SMOOTH_VO], k = (i / hd / rep) * hd + i % hd;
        else if (p == QS_PROJ_DOWN) a = R->SM[QS_SMOOTH_UD];
        else a = R->SM[QS_SMOOTH_GU];
    } else if (p == QS_PROJ_Q) a = R->SM[QS_SMOOTH_QK], k = (i / hd / rep) * hh + (i % hd) % hh, inv = 1;
    else if (p == QS_PROJ_K) a = R->SM[QS_SMOOTH_QK], k = (i / hd) * hh + (i % hd) % hh;
    else if (p == QS_PROJ_V) a = R->SM[QS_SMOOTH_VO], inv = 1;
    else if (p == QS_PROJ_UP) a = R->SM[QS_SMOOTH_UD], inv = 1;
    if (!a) return 1.0;
    return inv ? 1.0 / a[k] : a[k];
}

/* the block's output for input x [n_win*L, hidden]; returns sum(R .* out) when R is given */
double ref_forward(ref *R, const double *x, int n_win, int L, double *out, const float *dout) {
    const qs_model_config *c = &R->b->c;
    const int T = n_win * L, H = c->hidden_size, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads,
              Q = nh * hd, KV = nkv * hd, I = c->intermediate_size;
    double *Weff[QS_PROJ_N];
    for (int p = 0; p < QS_PROJ_N; p++) {
        int in = R->b->in[p], o = R->b->out[p], r = R->o.rank;
        Weff[p] = malloc(sizeof(double) * in * o);
        for (int i = 0; i < o; i++)
            for (int j = 0; j < in; j++) {
                double a = 0;
                for (int k = 0; k < r; k++) a += R->B[p][i * r + k] * R->A[p][k * in + j];
                Weff[p][i * in + j] = R->W[p][i * in + j] * smooth_factor(R, p, 0, i) * smooth_factor(R, p, 1, j) + R->s * a;
            }
        if (R->o.form == QS_LORA_MERGED) ref_quant(R, SITE_W + p, Weff[p], o, in, in);
        if (R->o.form == QS_LORA_DLQAT) ref_dlqat(R, p, Weff[p]);
        if (R->o.form == QS_LORA_SLIDER) ref_slider(R, p, Weff[p]);
    }
    double *xn = malloc(sizeof(double) * T * H), *q = malloc(sizeof(double) * T * Q), *k = malloc(sizeof(double) * T * KV),
           *v = malloc(sizeof(double) * T * KV), *att = malloc(sizeof(double) * T * Q), *h = malloc(sizeof(double) * T * H),
           *gt = malloc(sizeof(double) * T * I), *u = malloc(sizeof(double) * T * I), *p = malloc(sizeof(double) * L);
    double g1[16], g2[16]; /* the norms' gammas over the smoothing (H = 16) */
    for (int i = 0; i < H; i++) {
        g1[i] = R->g[0][i] / (R->SM[QS_SMOOTH_QKV] ? R->SM[QS_SMOOTH_QKV][i] : 1.0);
        g2[i] = R->g[1][i] / (R->SM[QS_SMOOTH_GU] ? R->SM[QS_SMOOTH_GU][i] : 1.0);
    }
    ref_rmsnorm(xn, x, g1, T, H, c->rms_eps);
    ref_gather(R->b, 0, xn, T, H);
    ref_quant(R, SITE_XN1, xn, T, H, H);
    ref_linear(q, xn, Weff[QS_PROJ_Q], T, H, Q);
    ref_linear(k, xn, Weff[QS_PROJ_K], T, H, KV);
    ref_linear(v, xn, Weff[QS_PROJ_V], T, H, KV);
    if (R->b->bias[0])
        for (int t = 0; t < T; t++) {
            for (int i = 0; i < Q; i++) q[t * Q + i] += R->b->bias[0][i];
            for (int i = 0; i < KV; i++) k[t * KV + i] += R->b->bias[1][i], v[t * KV + i] += R->b->bias[2][i];
        }
    ref_rope(q, R->inv_freq, T, L, nh, hd);
    ref_rope(k, R->inv_freq, T, L, nkv, hd);
    ref_quant(R, SITE_Q, q, T, Q, hd);
    ref_quant(R, SITE_K, k, T, KV, hd);
    ref_quant(R, SITE_V, v, T, KV, hd);
    double sc = 1 / sqrt((double)hd);
    for (int w = 0; w < n_win; w++)
        for (int hh = 0; hh < nh; hh++) {
            int kh = hh / (nh / nkv);
            for (int i = 0; i < L; i++) {
                const double *qi = q + ((size_t)w * L + i) * Q + hh * hd;
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += qi[e] * k[((size_t)w * L + j) * KV + kh * hd + e];
                    p[j] = d * sc, mx = fmax(mx, p[j]);
                }
                for (int j = 0; j <= i; j++) sum += p[j] = exp(p[j] - mx);
                for (int e = 0; e < hd; e++) {
                    double a = 0;
                    for (int j = 0; j <= i; j++) a += p[j] / sum * v[((size_t)w * L + j) * KV + kh * hd + e];
                    att[((size_t)w * L + i) * Q + hh * hd + e] = a;
                }
            }
        }
    ref_quant(R, SITE_ATTQ, att, T, Q, Q);
    ref_linear(h, att, Weff[QS_PROJ_O], T, Q, H);
    for (int i = 0; i < T * H; i++) h[i] += x[i];
    ref_rmsnorm(xn, h, g2, T, H, c->rms_eps);
    ref_gather(R->b, 1, xn, T, H);
    ref_quant(R, SITE_XN2, xn, T, H, H);
    ref_linear(gt, xn, Weff[QS_PROJ_GATE], T, H, I);
    ref_linear(u, xn, Weff[QS_PROJ_UP], T, H, I);
    for (int i = 0; i < T * I; i++) gt[i] = gt[i] / (1 + exp(-gt[i])) * u[i];
    ref_gather(R->b, 2, gt, T, I);
    ref_quant(R, SITE_ACT, gt, T, I, I);
    ref_linear(out, gt, Weff[QS_PROJ_DOWN], T, I, H);
    double f = 0;
    for (int i = 0; i < T * H; i++) {
        out[i] += h[i];
        if (dout) f += dout[i] * out[i];
    }
    for (int pp = 0; pp < QS_PROJ_N; pp++) free(Weff[pp]);
    free(xn), free(q), free(k), free(v), free(att), free(h), free(gt), free(u), free(p);
    return f;
}

double *to_d(const float *f, size_t n) {
    double *d = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

/* the reference over the trainer's current trainables (downloaded) */
void ref_init(ref *R, const block *b, qs_llama_train *tr) {
    memset(R, 0, sizeof *R);
    R->b = b;
    R->o = tr->opts;
    R->s = (double)tr->s;
    qs_error err = {0};
    CHECK(qs_rope_inv_freq(&b->c, R->inv_freq, &err) == 0);
    for (int p = 0; p < QS_PROJ_N; p++) {
        size_t wn = (size_t)b->in[p] * b->out[p], an = (size_t)R->o.rank * b->in[p], bn = (size_t)b->out[p] * R->o.rank;
        float *wf = malloc(wn * sizeof(float));
        memcpy(wf, b->w[p], wn * sizeof(float));
        if (R->o.form == QS_LORA_PAPER && qbits(R->o.wbits)) w_fq(wf, b->out[p], b->in[p], &R->o);
        if (tr->mag[p]) { /* DL-QAT: the magnitudes and the trainer's fixed grid */
            const size_t qn = (size_t)b->out[p] * tr->ng[p];
            float *m = down_new(tr->be, tr->mag[p], qn), *gs = down_new(tr->be, tr->gscale[p], qn),
                  *gz = down_new(tr->be, tr->gzero[p], qn);
            R->M[p] = to_d(m, qn), R->gs[p] = to_d(gs, qn), R->gz[p] = to_d(gz, qn);
            free(m), free(gs), free(gz);
        }
        if (tr->gam[p]) { /* SliderQuant: the clipping logits */
            const size_t qn = (size_t)b->out[p] * tr->ng[p];
            float *cg = down_new(tr->be, tr->gam[p], qn), *cb = down_new(tr->be, tr->bet[p], qn);
            R->CG[p] = to_d(cg, qn), R->CB[p] = to_d(cb, qn);
            free(cg), free(cb);
        }
        R->W[p] = to_d(wf, wn);
        free(wf);
        float *a = down_new(tr->be, tr->a[p], an), *bb = down_new(tr->be, tr->b[p], bn);
        R->A[p] = to_d(a, an), R->B[p] = to_d(bb, bn);
        free(a), free(bb);
    }
    for (int i = 0; i < 2; i++) {
        float *g = down_new(tr->be, tr->gamma[i], 16);
        R->g[i] = to_d(g, 16);
        free(g);
    }
    for (int k = 0; k < QS_SMOOTH_N; k++) {
        if (!tr->n_sm[k]) continue;
        float *a = down_new(tr->be, tr->sm[k], (size_t)tr->n_sm[k]);
        R->SM[k] = to_d(a, (size_t)tr->n_sm[k]), R->n_sm[k] = tr->n_sm[k];
        free(a);
    }
}
void ref_free(ref *R) {
    for (int p = 0; p < QS_PROJ_N; p++) free(R->W[p]), free(R->A[p]), free(R->B[p]);
    for (int p = 0; p < QS_PROJ_N; p++) free(R->M[p]), free(R->gs[p]), free(R->gz[p]), free(R->doff[p]), free(R->dedge[p]);
    for (int p = 0; p < QS_PROJ_N; p++) free(R->CG[p]), free(R->CB[p]), free(R->cmx[p]), free(R->cmn[p]);
    for (int i = 0; i < N_SITES; i++) free(R->off[i]);
    free(R->g[0]), free(R->g[1]);
    for (int k = 0; k < QS_SMOOTH_N; k++) free(R->SM[k]);
}

/* ======== comparing gradients ======== */


void grads_get(grads *g, qs_llama_train *tr, const float *d_dx, size_t n_x) {
    g->dx = down_new(tr->be, d_dx, n_x);
    for (int p = 0; p < QS_PROJ_N; p++) {
        g->da[p] = down_new(tr->be, tr->da[p], (size_t)tr->opts.rank * tr->in[p]);
        g->db[p] = down_new(tr->be, tr->db[p], (size_t)tr->out[p] * tr->opts.rank);
        g->dm[p] = tr->dmag[p] ? down_new(tr->be, tr->dmag[p], (size_t)tr->out[p] * tr->ng[p]) : NULL;
        g->dcg[p] = tr->dgam[p] ? down_new(tr->be, tr->dgam[p], (size_t)tr->out[p] * tr->ng[p]) : NULL;
        g->dcb[p] = tr->dbet[p] ? down_new(tr->be, tr->dbet[p], (size_t)tr->out[p] * tr->ng[p]) : NULL;
    }
    for (int i = 0; i < 2; i++) g->dg[i] = down_new(tr->be, tr->dgamma[i], 16);
    for (int k = 0; k < QS_SMOOTH_N; k++) g->dsm[k] = tr->n_sm[k] ? down_new(tr->be, tr->dsm[k], (size_t)tr->n_sm[k]) : NULL;
}
void grads_free(grads *g) {
    free(g->dx);
    for (int p = 0; p < QS_PROJ_N; p++) free(g->da[p]), free(g->db[p]), free(g->dm[p]), free(g->dcg[p]), free(g->dcb[p]);
    free(g->dg[0]), free(g->dg[1]);
    for (int k = 0; k < QS_SMOOTH_N; k++) free(g->dsm[k]);
}

const char *pname[QS_PROJ_N] = {"q", "k", "v", "o", "gate", "up", "down"};

/* max |got - fd| / (1 + max|fd|) over one tensor; fills fd */
double fd_tensor(ref *R, double *u, size_t n, const double *x, int n_win, int L, const float *dout, double *fd) {
    double *out = malloc(sizeof(double) * n_win * L * 16);
    for (size_t i = 0; i < n; i++) {
        double u0 = u[i];
        u[i] = u0 + FD_H;
        double fp = ref_forward(R, x, n_win, L, out, dout);
        u[i] = u0 - FD_H;
        double fm = ref_forward(R, x, n_win, L, out, dout);
        u[i] = u0;
        fd[i] = (fp - fm) / (2 * FD_H);
    }
    free(out);
    return 0;
}
double rel_err(const float *got, const double *fd, size_t n, double *scale_out) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - fd[i]);
        worst = d > worst || d != d ? d : worst;
        scale = fmax(scale, fabs(fd[i]));
    }
    if (scale_out) *scale_out = scale;
    return worst / (1 + scale);
}

/* every gradient against finite differences of R (in its mode); returns the worst relative
 * error, prints each tensor's */
double check_grads(const char *what, ref *R, const grads *g, double *x, int n_win, int L, const float *dout) {
    double worst = 0, sc;
    size_t nx = (size_t)n_win * L * 16;
    double *fd = malloc(sizeof(double) * nx);
    fd_tensor(R, x, nx, x, n_win, L, dout, fd);
    double e = rel_err(g->dx, fd, nx, &sc);
    printf("  %-13s %-10s rel error %.2e (scale %.2f)\n", what, "dx", e, sc);
    worst = fmax(worst, e);
    for (int p = 0; p < QS_PROJ_N; p++) {
        size_t an = (size_t)R->o.rank * R->b->in[p], bn = (size_t)R->b->out[p] * R->o.rank;
        char name[32];
        fd_tensor(R, R->A[p], an, x, n_win, L, dout, fd);
        e = rel_err(g->da[p], fd, an, &sc);
        snprintf(name, sizeof name, "dA %s", pname[p]);
        printf("  %-13s %-10s rel error %.2e (scale %.2f)\n", what, name, e, sc);
        worst = fmax(worst, e);
        fd_tensor(R, R->B[p], bn, x, n_win, L, dout, fd);
        e = rel_err(g->db[p], fd, bn, &sc);
        snprintf(name, sizeof name, "dB %s", pname[p]);
        printf("  %-13s %-10s rel error %.2e (scale %.2f)\n", what, name, e, sc);
        worst = fmax(worst, e);
        const size_t mn = (size_t)R->b->out[p] * (R->o.group > 0 ? (R->b->in[p] + R->o.group - 1) / R->o.group : 1);
        for (int side = 0; side < 2 && g->dcg[p] && R->CG[p]; side++) { /* SliderQuant's logits */
            double *fc = malloc(sizeof(double) * mn);
            fd_tensor(R, side ? R->CB[p] : R->CG[p], mn, x, n_win, L, dout, fc);
            e = rel_err(side ? g->dcb[p] : g->dcg[p], fc, mn, &sc);
            free(fc);
            snprintf(name, sizeof name, "%s %s", side ? "dbeta" : "dgam", pname[p]);
            printf("  %-13s %-10s rel error %.2e (scale %.2f)\n", what, name, e, sc);
            worst = fmax(worst, e);
        }
        if (!g->dm[p] || !R->M[p]) continue;
        double *fm = malloc(sizeof(double) * mn);
        fd_tensor(R, R->M[p], mn, x, n_win, L, dout, fm);
        e = rel_err(g->dm[p], fm, mn, &sc);
        free(fm);
        snprintf(name, sizeof name, "dm %s", pname[p]);
        printf("  %-13s %-10s rel error %.2e (scale %.2f)\n", what, name, e, sc);
        worst = fmax(worst, e);
    }
    for (int i = 0; i < 2; i++) {
        fd_tensor(R, R->g[i], 16, x, n_win, L, dout, fd);
        e = rel_err(g->dg[i], fd, 16, &sc);
        printf("  %-13s dgamma%d    rel error %.2e (scale %.2f)\n", what, i + 1, e, sc);
        worst = fmax(worst, e);
    }
    static const char *const site[QS_SMOOTH_N] = {"qkv", "gate/up", "v->o", "q/k", "up->down"};
    for (int k = 0; k < QS_SMOOTH_N; k++) { /* SliderQuant's smoothing scales */
        if (!g->dsm[k] || !R->SM[k]) continue;
        double *fa = malloc(sizeof(double) * R->n_sm[k]);
        fd_tensor(R, R->SM[k], (size_t)R->n_sm[k], x, n_win, L, dout, fa);
        e = rel_err(g->dsm[k], fa, (size_t)R->n_sm[k], &sc);
        free(fa);
        printf("  %-13s dalpha %-8s rel error %.2e (scale %.2f)\n", what, site[k], e, sc);
        worst = fmax(worst, e);
    }
    free(fd);
    return worst;
}

/* trainer over b with opts, B set to random non-zero values */
void train_setup(qs_llama_train *tr, block *b, const qs_llama_train_opts *o, int max_tokens, qs_backend *be,
                        int random_b) {
    qs_error err = {0};
    CHECKF(qs_llama_train_init(tr, &b->c, &b->dw, o, max_tokens, be, &err) == 0, "%s", err.msg);
    for (int p = 0; p < QS_PROJ_N && random_b; p++) {
        size_t bn = (size_t)b->out[p] * o->rank;
        float *h = malloc(bn * sizeof(float));
        rfill(h, bn, 0.5f, 0);
        CHECK(be->ops->upload(be, tr->b[p], h, bn * sizeof(float), &err) == 0);
        free(h);
    }
}

/* forward + backward with dout; returns the backend output and dx (backend) */
void run_fwd_bwd(qs_llama_train *tr, const float *d_x, float *d_out, const float *d_dout, float *d_dx, int n_win,
                        int L) {
    qs_error err = {0};
    CHECKF(qs_llama_train_forward(tr, d_x, d_out, n_win, L, &err) == 0, "%s", err.msg);
    CHECKF(qs_llama_train_backward(tr, d_dout, d_dx, &err) == 0, "%s", err.msg);
}
