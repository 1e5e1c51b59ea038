/* cpu/cpu_internal.h - the CPU backend's op functions (one file per concern) and its context.
 * Not for use outside cpu/: everything else calls through the ops table. */
#ifndef QS_CPU_CPU_INTERNAL_H
#define QS_CPU_CPU_INTERNAL_H

#include "backend/backend.h"

typedef struct qs_cpu_ctx {
    int threads;
    /* attention scratch, grown on demand and kept (ops never malloc in steady state) */
    float *scores;  /* [group * QB, seqlen] scaled scores, then probabilities */
    float *pack;    /* [2, group * QB, head_dim]: the query rows of one kv group, their outputs */
    size_t scores_cap, pack_cap; /* floats */
    /* rope: cos then sin of one window's positions, [2, seqlen, head_dim/2] */
    float *rope_tab;
    size_t rope_cap; /* floats */
    /* attention backward: [2, group * QB, seqlen] probabilities and their gradients, then
     * [3, group * QB, head_dim] packed q, dout and dq rows (cpu/cpu_backward.c) */
    float *attn_bwd;
    size_t attn_bwd_cap; /* floats */
    /* gemm: per OpenMP thread, the row copies of a chunk of op(a) and of c (cpu/cpu_gemm.c) */
    float **gemm_scr;
    size_t *gemm_cap; /* floats, [threads] */
    int window_rows;  /* set_window_rows: rows of a window in the GEMMs that follow (0: none) */
    size_t live, peak; /* bytes allocated through ops->alloc now, and their high-water mark */
} qs_cpu_ctx;

/* the size of one query block of the causal attention (rows per score GEMM and head) */
#define QS_CPU_ATTN_QB 256

int qs_cpu_set_window_rows(qs_backend *be, int rows, qs_error *err);
int qs_cpu_gemm(qs_backend *be, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc, qs_error *err);
int qs_cpu_rmsnorm(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim, float eps,
                   float *rstd, qs_error *err);
int qs_cpu_rope(qs_backend *be, float *x, int n_win, int seqlen, int pos0, int n_heads, int head_dim, int row_stride,
                const float *inv_freq, int inverse, qs_error *err);
int qs_cpu_attention(qs_backend *be, float *out, const float *q, const float *k, const float *v, int n_win,
                     int seqlen, int n_heads, int n_kv_heads, int head_dim, float scale, float *lse, qs_error *err);
int qs_cpu_swiglu(qs_backend *be, float *y, const float *gate, const float *up, size_t n, qs_error *err);
int qs_cpu_add(qs_backend *be, float *y, const float *a, const float *b, size_t n, qs_error *err);
int qs_cpu_scale(qs_backend *be, float *y, const float *x, float alpha, size_t n, qs_error *err);
int qs_cpu_add_bias(qs_backend *be, float *y, const float *bias, int rows, int cols, qs_error *err);
int qs_cpu_copy_rows(qs_backend *be, float *dst, const int32_t *dst_rows, const float *src, const int32_t *src_rows,
                     int n, int cols, qs_error *err);
int qs_cpu_rmsnorm_gather(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim, float eps,
                          const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err);
int qs_cpu_swiglu_gather(qs_backend *be, float *y, const float *gate, const float *up, int rows, int dim,
                         const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err);
int qs_cpu_gather_backward(qs_backend *be, float *dv, const float *dy, int rows, int dim, const int32_t *src_a,
                           const int32_t *src_b, const float *coef, qs_error *err);
int qs_cpu_act_quant(qs_backend *be, float *x, int rows, int cols, int seg, int bits, qs_error *err);
int qs_cpu_act_quant_part(qs_backend *be, float *x, int rows, int cols, int seg, int qn, int bits, qs_error *err);
int qs_cpu_lse_update(qs_backend *be, const float *logits, int n, int vc, int v0, const int32_t *target,
                      float *run_max, float *run_sum, float *tgt_logit, qs_error *err);

/* block-wise tuning: backward passes (cpu/cpu_backward.c), weight fake-quant, MSE and AdamW
 * (cpu/cpu_optim.c) */
int qs_cpu_rmsnorm_backward(qs_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                            const float *gamma, const float *rstd, int rows, int dim, qs_error *err);
int qs_cpu_attention_backward(qs_backend *be, float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse, int n_win, int seqlen,
                              int n_heads, int n_kv_heads, int head_dim, float scale, qs_error *err);
int qs_cpu_swiglu_backward(qs_backend *be, float *dgate, float *dup, const float *dy, const float *gate,
                           const float *up, size_t n, qs_error *err);
int qs_cpu_fake_quant_weight(qs_backend *be, float *y, const float *w, int rows, int cols, int group, int bits,
                             int sym, qs_error *err);
int qs_cpu_quant_weight(qs_backend *be, const float *w, int rows, int cols, int group, int bits, int sym, uint8_t *codes,
                        float *scales, float *zeros, double *row_err, qs_error *err);
int qs_cpu_dlqat_weight(qs_backend *be, float *y, uint8_t *codes, double *row_err, const float *w, const float *d,
                        const float *scales, const float *zeros, const float *mag, int rows, int cols, int group, int bits,
                        qs_error *err);
int qs_cpu_dlqat_weight_backward(qs_backend *be, float *dd, float *dmag, const float *dy, const float *w, const float *d,
                                 const float *scales, const float *zeros, const float *mag, int rows, int cols, int group,
                                 int bits, qs_error *err);
int qs_cpu_lwc_weight(qs_backend *be, float *y, uint8_t *codes, float *scales, float *zeros, double *row_err,
                      const float *w, const float *gam, const float *bet, int rows, int cols, int group, int bits, int sym,
                      int qcols, qs_error *err);
int qs_cpu_lwc_weight_backward(qs_backend *be, float *dw, float *dgam, float *dbet, const float *dy, const float *w,
                               const float *gam, const float *bet, int rows, int cols, int group, int bits, int sym,
                               int qcols, qs_error *err);
int qs_cpu_chan_scale(qs_backend *be, float *y, const float *x, int rows, int cols, const qs_chan_scale *row,
                      const qs_chan_scale *col, qs_error *err);
int qs_cpu_chan_scale_backward(qs_backend *be, float *dx, const float *dy, const float *x, int rows, int cols,
                               const qs_chan_scale *row, const qs_chan_scale *col, qs_error *err);
int qs_cpu_gptq_batch(qs_backend *be, float *w, int rows, int cols, int i1, int i2, const float *u, const int32_t *perm,
                      int group, int bits, int sym, int static_groups, float *scales, float *zeros, uint8_t *codes,
                      float *err1, double *loss, qs_error *err);
int qs_cpu_gptq_hessian(qs_backend *be, float *hp, const float *h, int n, const int32_t *perm, float damp,
                        float *diag_host, int *nonfinite_host, qs_error *err);
int qs_cpu_gather(qs_backend *be, float *y, const float *x, int rows, int dim, const int32_t *src_a,
                  const int32_t *src_b, const float *coef, qs_error *err);
int qs_cpu_to_f32(qs_backend *be, float *dst, const void *src, size_t n, int dtype, qs_error *err);
int qs_cpu_to_bf16(qs_backend *be, uint16_t *dst, const float *src, size_t n, qs_error *err);
int qs_cpu_linear_bf16(qs_backend *be, int tw, int m, int n, int k, const float *x, int ldx, const uint16_t *w, int ldw,
                       float beta, float *y, int ldy, qs_error *err);
int qs_cpu_mse_grad(qs_backend *be, float *grad, const float *a, const float *b, size_t n, double *loss_host,
                    qs_error *err);
int qs_cpu_adamw_step(qs_backend *be, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, int step, qs_error *err);

/* 1 / sqrt(mean(x^2) + eps) of one row, the sum of squares in double in column order (the
 * same bits for any thread count); shared by rmsnorm and rmsnorm_gather */
static inline float qs_cpu_row_inv_rms(const float *x, int dim, float eps) {
    double ss = 0;
    for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    return (float)(1.0 / __builtin_sqrt(ss / dim + (double)eps));
}

/* grows *buf to hold n floats (contents not kept); 0 or -ENOMEM */
int qs_cpu_scratch_grow(float **buf, size_t *cap, size_t n);

#endif
