/* tests/ref_block.h - the tiny block, its float64 reference and the gradient check shared by the
 * trainable block's tests (tests/ref_block.c says what each does). */
#ifndef QS_TESTS_REF_BLOCK_H
#define QS_TESTS_REF_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"

/* Tolerance of the gradient checks: max |got - fd| <= TOL x (1 + max |fd|) per tensor. The
 * finite differences (double, h = FD_H) are good to ~1e-9; the implementation runs in fp32
 * through ~15 chained ops whose rounding (~1e-7 relative each, sums of <= 24 terms) gives errors
 * of a few 1e-7..1e-6 relative; 1e-4 leaves a margin over that yet is 100x below the effect of a
 * missing term, a wrong transpose or a non-STE gradient (>= 1e-2). */
#define TOL 1e-4
#define FD_H 1e-5

void rfill(float *v, size_t n, float amp, float center); /* center + amp * U(-1, 1) (qs_test_rnd) */
qs_model_config tiny_config(void);
float *up_new(qs_backend *be, const float *h, size_t n);   /* n floats to new backend memory */
float *down_new(qs_backend *be, const float *d, size_t n); /* ... and back to new host memory */

/* the frozen block: host copies and the backend weights */
typedef struct block {
    qs_model_config c;
    int in[QS_PROJ_N], out[QS_PROJ_N];
    float *w[QS_PROJ_N], *g[2], *bias[3]; /* host */
    int32_t *ra_a[3], *ra_b[3];           /* host reassembly maps (NULL: none), as dw.ra */
    float *ra_c[3];
    qs_llama_weights dw;                  /* backend */
} block;

void block_make(block *b, qs_backend *be, int with_bias); /* random weights (and q/k/v biases) */
void block_add_maps(block *b, qs_backend *be);            /* reassembly maps at the three sites */
void block_free(block *b, qs_backend *be);
/* *wq = b's backend weights with the seven linears replaced by new backend copies of w_fq(W)
 * (opts' wbits, group, sym), which qw[] receives for the caller to free */
void block_fq_weights(const block *b, qs_backend *be, const qs_llama_train_opts *o, qs_llama_weights *wq,
                      float *qw[QS_PROJ_N]);

/* ---- the float64 reference ---- */
enum { REF_PLAIN, REF_RECORD, REF_APPLY }; /* quantizers: none; x + (Q(x) - x) recorded; replayed */
enum { SITE_W = 0, SITE_XN1 = QS_PROJ_N, SITE_Q, SITE_K, SITE_V, SITE_ATTQ, SITE_XN2, SITE_ACT, N_SITES };

typedef struct ref {
    const block *b;
    double *W[QS_PROJ_N];  /* frozen base: W, or Q(W) (quant/affine.c) in the paper form with wbits */
    double *A[QS_PROJ_N], *B[QS_PROJ_N], *g[2];
    double s;
    qs_llama_train_opts o;
    int mode;
    double *off[N_SITES]; /* recorded Q(x) - x per site */
    size_t off_n[N_SITES];
    float inv_freq[2];
    /* DL-QAT: magnitudes M and the fixed grid gs, gz [out, ng]; the recorded rounding offsets and
     * clamp edges (0 none, 1 low, 2 high) of each weight */
    double *M[QS_PROJ_N], *gs[QS_PROJ_N], *gz[QS_PROJ_N], *doff[QS_PROJ_N];
    uint8_t *dedge[QS_PROJ_N];
    /* SliderQuant: the clipping logits CG, CB [out, ng]; recorded per group the range cmx, cmn
     * and zero point (in gz), per weight the rounding offset rint(t) - t (doff) and clamp edge */
    double *CG[QS_PROJ_N], *CB[QS_PROJ_N], *cmx[QS_PROJ_N], *cmn[QS_PROJ_N];
    /* SliderQuant's smoothing scales (NULL: the site is off) */
    double *SM[QS_SMOOTH_N];
    int n_sm[QS_SMOOTH_N];
} ref;

int qbits(int b);                                                      /* b in 2..15, else 0 */
void act_fq(float *v, int n, int bits);                                /* act_quant's formula on one segment */
void act_fq_part(float *v, int n, int qn, int bits);                   /* its first qn values rounded (act_quant_part) */
void w_fq(float *w, int rows, int cols, const qs_llama_train_opts *o); /* weight fake-quant, quant/affine.c */
void ref_dlqat(ref *R, int p, double *w);
void ref_slider(ref *R, int p, double *w); /* w = W + s B A in, Q_lwc of it out */
/* the block's output for input x [n_win*L, hidden]; returns sum(dout .* out) when dout is given */
double ref_forward(ref *R, const double *x, int n_win, int L, double *out, const float *dout);
double *to_d(const float *f, size_t n);
void ref_init(ref *R, const block *b, qs_llama_train *tr); /* over the trainer's current trainables */
void ref_free(ref *R);

/* ---- gradients ---- */
typedef struct grads {
    float *dx, *da[QS_PROJ_N], *db[QS_PROJ_N], *dg[2];
    float *dm[QS_PROJ_N]; /* DL-QAT (NULL otherwise) */
    float *dcg[QS_PROJ_N], *dcb[QS_PROJ_N]; /* SliderQuant's clipping logits (NULL otherwise) */
    float *dsm[QS_SMOOTH_N];                /* SliderQuant's smoothing scales (NULL where off) */
} grads;
void grads_get(grads *g, qs_llama_train *tr, const float *d_dx, size_t n_x);
void grads_free(grads *g);
extern const char *pname[QS_PROJ_N];
/* central differences of sum(dout .* out) over the n values u (of R) into fd */
double fd_tensor(ref *R, double *u, size_t n, const double *x, int n_win, int L, const float *dout, double *fd);
double rel_err(const float *got, const double *fd, size_t n, double *scale_out); /* max |got - fd| / (1 + max |fd|) */
/* every gradient against finite differences of R (in its mode); the worst relative error */
double check_grads(const char *what, ref *R, const grads *g, double *x, int n_win, int L, const float *dout);
/* trainer over b with opts (B random non-zero with random_b) */
void train_setup(qs_llama_train *tr, block *b, const qs_llama_train_opts *o, int max_tokens, qs_backend *be,
                 int random_b);
void run_fwd_bwd(qs_llama_train *tr, const float *d_x, float *d_out, const float *d_dout, float *d_dx, int n_win,
                 int L);

#endif
