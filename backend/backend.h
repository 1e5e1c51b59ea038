/* backend/backend.h - the compute backend seam: a table of operations plus a context, in the
 * style of ggml's backend interface. The CPU backend (cpu/) is always built and is the
 * reference; a CUDA backend (gpu/) implements the same table. Only backend/registry.c knows
 * which backends exist.
 *
 * Memory. Every pointer an op takes is backend memory: allocated with ops->alloc and filled
 * with ops->upload (for the CPU backend that is aligned host memory, for CUDA device memory).
 * Host memory goes in and out only through upload / download. Index arrays (int32) are
 * backend memory too.
 *
 * Layout. Matrices are row-major fp32 with explicit shapes and leading dimensions. A batch of
 * windows is [n_win, seqlen, cols] stored as [n_win*seqlen, cols]; token t of such a batch is at
 * position pos0 + t % seqlen. A GPU backend may compute GEMMs from bf16/fp16 copies with fp32
 * accumulation; its per-op tolerance against the CPU backend is set by the op tests.
 *
 * Errors. Every op returns 0 or a negative code and fills err (a NULL err is allowed): an
 * asynchronous backend reports launch failures and out-of-memory here instead of aborting.
 * Ops on one backend run in issue order; download returns after the data is on the host.
 *
 * Determinism. The same inputs give the same bits run after run (no atomics in reductions;
 * reductions in a fixed order). The CPU backend also gives the same bits for any thread
 * count, except where OpenBLAS itself differs between thread counts.
 *
 * Backward passes (block-wise tuning: EEC, DL-QAT, SliderQuant) are appended at the end of this
 * table as ops with the suffix _backward, taking the forward's saved statistics: rmsnorm saves
 * the inverse RMS per row (rstd), attention saves the log-sum-exp of each score row (lse), and
 * rope's backward is rope with inverse = 1, and the channel reassembly gather's backward is its
 * transpose (gather_backward, the same for rmsnorm_gather and swiglu_gather: the norm's or the
 * product's own backward follows it). Weight fake-quant, MSE and AdamW sit beside them. A backend
 * that lacks an op leaves it NULL; callers check and report "not implemented on <name>". */
#ifndef QS_BACKEND_BACKEND_H
#define QS_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct qs_backend qs_backend;

#define QS_BE_MARKS 3
#define QS_BE_MARK_RESULTS 2

/* One side (rows or columns) of chan_scale: element i of that side is scaled by
 * f(i) = a^pow, a = alpha[k(i)] held to |a| >= QS_CHAN_SCALE_MIN (its sign kept), with
 *   k(i) = ((i / hd) / rep) * hh + (i % hd) % hh,   hh = half ? hd / 2 : hd
 * (hd 0: k(i) = i). rep folds query heads onto their key/value head (GQA), half ties the two
 * halves of a rotate-half RoPE pair (a scale that commutes with RoPE). alpha NULL: no scaling
 * on this side. */
typedef struct qs_chan_scale {
    const float *alpha;
    float *dalpha; /* chan_scale_backward: += (NULL: not wanted) */
    int pow;       /* +1 multiplies, -1 divides */
    int hd, rep, half;
} qs_chan_scale;
#define QS_CHAN_SCALE_MIN 1e-2f

typedef struct qs_backend_ops {
    const char *name; /* "cpu", "cuda" */
    /* frees the context and be itself; NULL is fine */
    void (*destroy)(qs_backend *be);

    /* ---- memory ---- */
    /* bytes of backend memory, 64-byte aligned at least; NULL when out of memory */
    void *(*alloc)(qs_backend *be, size_t bytes);
    void (*free)(qs_backend *be, void *p); /* NULL is fine */
    int (*upload)(qs_backend *be, void *dst, const void *src_host, size_t bytes, qs_error *err);
    int (*download)(qs_backend *be, void *dst_host, const void *src, size_t bytes, qs_error *err);
    /* dst = src, both backend memory, bytes long; they do not overlap */
    int (*copy)(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err);
    /* waits until every op issued so far has finished; reports any pending error */
    int (*synchronize)(qs_backend *be, qs_error *err);

    /* ---- linear algebra ---- */
    /* c[m, n] = alpha * op(a) op(b) + beta * c, op(a) [m, k], op(b) [k, n]; op(x) = x^T when
     * trans_x. a is stored [m, k] (lda >= k), or [k, m] (lda >= m) when trans_a; likewise b.
     * The linear layer y = x W^T (W [out, in]) is trans_b = 1, m = tokens, n = out, k = in.
     * beta = 0 ignores what c held (NaN included). */
    int (*gemm)(qs_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc,
                qs_error *err);

    /* ---- LLaMA layers ---- */
    /* y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * gamma[:], x and y [rows, dim], gamma
     * [dim]; y may equal x. rstd [rows] receives 1/sqrt(mean + eps) when not NULL (backward). */
    int (*rmsnorm)(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim,
                   float eps, float *rstd, qs_error *err);
    /* Rotary embedding in place, rotate-half convention (Hugging Face LLaMA): x [n_win*seqlen,
     * row_stride] holds n_heads heads of head_dim columns from column 0; in each head, pair
     * (i, i + head_dim/2) is rotated by angle pos * inv_freq[i], pos = pos0 + t % seqlen, where
     * the angle is the float32 product (as transformers computes it). inv_freq [head_dim/2]
     * carries theta and any LLaMA-3 frequency scaling (model/rope.h). inverse = 1 rotates by
     * -angle: the backward of the forward rotation. */
    int (*rope)(qs_backend *be, float *x, int n_win, int seqlen, int pos0, int n_heads, int head_dim,
                int row_stride, const float *inv_freq, int inverse, qs_error *err);
    /* Causal grouped-query attention of n_win independent windows: q [n_win*seqlen,
     * n_heads*head_dim], k and v [n_win*seqlen, n_kv_heads*head_dim], out [n_win*seqlen,
     * n_heads*head_dim]; query head h reads kv head h / (n_heads / n_kv_heads). Token i of a
     * window attends to tokens 0..i of the same window with weights softmax(scale * q.k) (fp32,
     * max subtracted). lse [n_win, n_heads, seqlen] receives max + log(sum exp) of each scaled
     * score row when not NULL (backward). out must not alias q, k or v. */
    int (*attention)(qs_backend *be, float *out, const float *q, const float *k, const float *v,
                     int n_win, int seqlen, int n_heads, int n_kv_heads, int head_dim, float scale,
                     float *lse, qs_error *err);
    /* y = silu(gate) * up elementwise, n values; y may equal gate or up */
    int (*swiglu)(qs_backend *be, float *y, const float *gate, const float *up, size_t n, qs_error *err);

    /* ---- elementwise and data movement ---- */
    /* y = a + b, n values; y may equal a or b */
    int (*add)(qs_backend *be, float *y, const float *a, const float *b, size_t n, qs_error *err);
    /* y = alpha * x, n values; y may equal x */
    int (*scale)(qs_backend *be, float *y, const float *x, float alpha, size_t n, qs_error *err);
    /* y[r, :] += bias[:], y [rows, cols], bias [cols] */
    int (*add_bias)(qs_backend *be, float *y, const float *bias, int rows, int cols, qs_error *err);
    /* dst[dst_rows[i], :] = src[src_rows[i], :] for i < n; rows of cols floats; a NULL index
     * array means i itself. Gather (embedding lookup: src_rows = token ids) and scatter. The
     * caller guarantees the indices are in range and the dst rows distinct. */
    int (*copy_rows)(qs_backend *be, float *dst, const int32_t *dst_rows, const float *src,
                     const int32_t *src_rows, int n, int cols, qs_error *err);

    /* ---- quantization ---- */
    /* Per-token asymmetric fake quantization in place, dynamically (../shared/METHODS.md): x
     * [rows, cols]; each row is cut into segments of seg columns (seg divides cols: seg = cols
     * is per token, seg = head_dim per (head, token)) and each segment is rounded to `bits` bits
     * on its own min-max grid: scale = (max - min) / (2^bits - 1) clamped to [1e-5, 1e4],
     * zero = round(-min / scale), x = (clamp(round(x / scale) + zero, 0, 2^bits - 1) - zero) *
     * scale. bits 2..16. */
    int (*act_quant)(qs_backend *be, float *x, int rows, int cols, int seg, int bits, qs_error *err);
    /* act_quant with only the first qn (1..seg) columns of each segment rounded; the others pass
     * unchanged, the grid still from all seg (SliderQuant's incremental quantization). qn = seg
     * is act_quant, bit for bit. */
    int (*act_quant_part)(qs_backend *be, float *x, int rows, int cols, int seg, int qn, int bits, qs_error *err);
    /* Channel reassembly (QLLM) fused into its producers. For each output channel k < dim:
     * y[r, k] = coef[k] * (v[r, src_a[k]] + (src_b[k] >= 0 ? v[r, src_b[k]] : 0)) where v is the
     * RMSNorm output x[r, :] / rms * gamma (rmsnorm_gather) or silu(gate) * up (swiglu_gather).
     * Index arrays and coef are backend memory; y must not alias the inputs. */
    int (*rmsnorm_gather)(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim, float eps,
                          const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err);
    int (*swiglu_gather)(qs_backend *be, float *y, const float *gate, const float *up, int rows, int dim,
                         const int32_t *src_a, const int32_t *src_b, const float *coef, qs_error *err);

    /* ---- reductions ---- */
    /* One vocabulary chunk of an online log-sum-exp (the LM head without [tokens, vocab]
     * logits): logits [n, vc] are the columns v0 .. v0+vc-1 of n rows. For each row r:
     * (run_max[r], run_sum[r]) <- the log-sum-exp state merged with this chunk
     * (lse = run_max + log(run_sum); start from run_max = -INFINITY, run_sum = 0), and
     * tgt_logit[r] = logits[r, target[r] - v0] when target[r] falls in the chunk. */
    int (*lse_update)(qs_backend *be, const float *logits, int n, int vc, int v0, const int32_t *target,
                      float *run_max, float *run_sum, float *tgt_logit, qs_error *err);

    /* ---- block-wise tuning (EEC, DL-QAT, SliderQuant): backward passes and the optimizer ----
     * Straight-through estimator (../shared/METHODS.md): the backward of act_quant and of
     * fake_quant_weight is the identity, so neither has a backward op; rope's backward is rope
     * with inverse = 1. Gradients are overwritten unless the comment says accumulated (+=). */
    /* RMSNorm backward from the forward's rstd [rows] (rmsnorm's output): y = x * rstd * gamma.
     * dx [rows, dim] = rstd * (gamma * dy) - rstd^3 / dim * x * sum(gamma * dy * x) per row
     * (overwritten; dx may equal dy); dgamma [dim] += sum over rows of dy * x * rstd, in double
     * in a fixed order whatever the thread count (the CPU: row order; cuda: 256-row chunks, then
     * the chunks in order), so the same bits run to run on one backend. */
    int (*rmsnorm_backward)(qs_backend *be, float *dx, float *dgamma, const float *dy, const float *x,
                            const float *gamma, const float *rstd, int rows, int dim, qs_error *err);
    /* Causal GQA attention backward (shapes as attention), from the forward's q, k, v, its output
     * out and its lse: P = exp(scale q.k - lse), dv = P^T dout, dS = P (dout.v - dout.out),
     * dq = scale dS k, dk = scale dS^T q. dk and dv sum over the query heads of their kv group
     * and over the query positions in a fixed order. dq, dk, dv are overwritten and alias
     * nothing. */
    int (*attention_backward)(qs_backend *be, float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse, int n_win,
                              int seqlen, int n_heads, int n_kv_heads, int head_dim, float scale, qs_error *err);
    /* y = silu(gate) * up backward, n values: dgate = dy * up * sig (1 + gate (1 - sig)),
     * dup = dy * silu(gate), sig = 1 / (1 + exp(-gate)). dgate or dup may equal dy. */
    int (*swiglu_backward)(qs_backend *be, float *dgate, float *dup, const float *dy, const float *gate,
                           const float *up, size_t n, qs_error *err);
    /* Weight fake quantization y = dequant(quant(w)) with the affine quantizer of quant/affine.h
     * (same bits as qs_quant_params + qs_quant_code for 2..8 bits): w [rows, cols], a min-max
     * range per row (group <= 0) or per group of `group` columns (the last one may be partial);
     * sym: symmetric. bits 2..16. y may equal w. Its backward is the identity (STE). */
    int (*fake_quant_weight)(qs_backend *be, float *y, const float *w, int rows, int cols, int group, int bits,
                             int sym, qs_error *err);
    /* Mean squared error of a against b (n values) and its gradient with respect to a:
     * grad = 2 (a - b) / n (grad may be NULL or equal a); *loss_host (host memory, may be NULL)
     * = sum (a - b)^2 / n, summed in double over chunks fixed by n, then the chunks in order (the
     * CPU: 64 chunks; cuda: 1024, each a fixed tree). An asynchronous backend synchronizes
     * before writing *loss_host. */
    int (*mse_grad)(qs_backend *be, float *grad, const float *a, const float *b, size_t n, double *loss_host,
                    qs_error *err);
    /* One AdamW step (PyTorch's AdamW, decoupled weight decay), n values, step >= 1 counting
     * from 1: param *= 1 - lr wd; m = b1 m + (1 - b1) grad; v = b2 v + (1 - b2) grad^2;
     * param -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps). */
    int (*adamw_step)(qs_backend *be, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                      float beta1, float beta2, float eps, float weight_decay, int step, qs_error *err);
    /* Backward of the reassembly gather y[r, k] = coef[k] * (v[r, src_a[k]] + (src_b[k] >= 0 ?
     * v[r, src_b[k]] : 0)) of rmsnorm_gather / swiglu_gather (maps as there, dim channels to dim):
     * dv [rows, dim] = dL/dv from dy = dL/dy [rows, dim], dv[r, c] = sum of coef[k] dy[r, k] over
     * the k with src_a[k] = c or src_b[k] = c. dv is overwritten and must not alias dy. Each row
     * of dv is zeroed, then k = 0 .. dim-1 are added in order (the same bits for any thread
     * count). */
    int (*gather_backward)(qs_backend *be, float *dv, const float *dy, int rows, int dim, const int32_t *src_a,
                           const int32_t *src_b, const float *coef, qs_error *err);

    /* ---- hints ----
     * The GEMMs issued after this call have their rows (of op(a) and c) in windows of `rows`
     * rows, window w starting at row w * rows (0: no windows). A backend may use it so that a
     * row's result does not depend on how many windows share a call; the CPU backend does
     * (cpu/cpu_gemm.c), which makes --gpu-mem's windows per call and an evaluation prefix give
     * the same bits. Callers set it before their GEMMs; NULL on a backend that needs no hint. */
    int (*set_window_rows)(qs_backend *be, int rows, qs_error *err);

    /* ---- dense linear algebra (GPTQ) ----
     * a [n, n] row-major, symmetric positive definite (its upper triangle is read) becomes U,
     * upper triangular with zeros below, U^T U = a^-1: GPTQ's factor (quant/gptq.c: potrf of
     * J a J and trtri, J the reversal). *info_host = 0, or the factorization's info (> 0: not
     * positive definite, the order of the failing minor of J a J; a is then undefined).
     * Returns after *info_host is written. NULL where the host's LAPACK is as good (cpu: GPTQ
     * calls LAPACK itself). */
    int (*cholesky_inverse)(qs_backend *be, float *a, int n, int *info_host, qs_error *err);
    /* One lazy batch of GPTQ (quant/gptq.h), the columns i1 .. i2-1 of w [rows, cols]: the
     * weights in processing order, error-updated by the earlier batches. u [cols, cols] is the
     * factor (upper, U^T U = H^-1 in processing order), perm [cols] the original column of each
     * processed one; scales and zeros [rows, ng], ng = group > 0 ? ceil(cols / group) : 1. Each row
     * on its own, columns i in order: the quantizer is scales[r, 0] as given (group <= 0),
     * scales[r, perm[i] / group] as given (static_groups), or else taken at a group's first column
     * from the row's current values of the group (quant/affine.h's qs_quant_params) and written
     * to scales[r, i / group] (the batch is whole groups: i1 and i2 < cols are multiples of group); code = qs_quant_code, codes[r, perm[i]] =
     * code, deq = (code - zero) * scale, e = (w[r, i] - deq) / u[i, i], err1[r, i - i1] = e
     * ([rows, i2 - i1]), loss[r] += (double)(w - deq)^2 / u_ii^2 / 2 (double), w[r, i] = deq and
     * w[r, j] -= e u[i, j] for i < j < i2. Then the lazy update w[:, i2:] -= err1 u[i1:i2, i2:], an
     * fp32 GEMM whatever the backend's GEMM math, without windows. The batch's columns, codes,
     * quantizers, err1 and loss are the bits of quant/gptq.c's host loop; the later columns are
     * within fp32 GEMM rounding of it. */
    int (*gptq_batch)(qs_backend *be, float *w, int rows, int cols, int i1, int i2, const float *u, const int32_t *perm,
                      int group, int bits, int sym, int static_groups, float *scales, float *zeros, uint8_t *codes,
                      float *err1, double *loss, qs_error *err);
    /* GPTQ's matrix to factor, from a Hessian h [n, n] in backend memory whose upper triangle is
     * H (the rest is not read): *nonfinite_host = 1 when a value of that triangle is NaN or
     * infinite, else 0; diag_host (host memory, may be NULL) receives H's diagonal [n]; and when
     * hp is not NULL, hp [n, n] = P H' P^T + damp I, hp[i, j] = H'[perm[i], perm[j]], where H' is
     * H mirrored with each dead input (H_jj = 0) set to H_jj = 1 (hp is undefined when a value is
     * not finite). h is not changed, so each layer of a stage and each dampening retry starts
     * from it. Returns after the host outputs are written. */
    int (*gptq_hessian)(qs_backend *be, float *hp, const float *h, int n, const int32_t *perm, float damp,
                        float *diag_host, int *nonfinite_host, qs_error *err);

    /* ---- transfers beside the compute (the pipeline's LOAD thread) ----
     * host_register pins host memory that is uploaded from again and again (the loader's slabs,
     * the calibration states), so that copies from it run at the bus's rate and asynchronously;
     * host_unregister undoes it before that memory is freed. stage_alloc and stage_upload may be
     * called from another thread while ops run: backend memory ordered on the backend's copy
     * stream, and a copy on that stream that returns when the bytes have arrived. The next
     * block's weights cross the bus while the current block computes; the compute thread frees
     * staged memory with ops->free. NULL where not needed (cpu: its memory is host memory, and
     * the pipeline converts on the host). */
    int (*host_register)(qs_backend *be, void *p, size_t bytes, qs_error *err);
    void (*host_unregister)(qs_backend *be, void *p);
    void *(*stage_alloc)(qs_backend *be, size_t bytes);
    int (*stage_upload)(qs_backend *be, void *dst, const void *src_host, size_t bytes, qs_error *err);
    /* The other direction, for results needed on the host while the next ops run: mark (slot
     * 0 .. QS_BE_MARKS - 1) records the point reached by the ops issued so far; stage_download
     * copies src to host memory on the copy stream once the ops before that mark have finished
     * (not the ones issued since), and returns when the bytes are on the host. Slots 0 and 1
     * are the calibration passes' (pipeline/calib_state.c), QS_BE_MARK_RESULTS a block's finished
     * codes on their way to STORE (pipeline/results.c). */
    int (*mark)(qs_backend *be, int slot, qs_error *err);
    int (*stage_download)(qs_backend *be, int slot, void *dst_host, const void *src, size_t bytes, qs_error *err);
    /* dst [n] fp32 = src [n] (backend memory, aligned to its element) of dtype QS_BE_F32,
     * QS_BE_F16 or QS_BE_BF16, with the bits of base/half.h's conversions (stored weights become
     * float where they will be used); dst and src do not overlap, except dst == src for F32 */
    int (*to_f32)(qs_backend *be, float *dst, const void *src, size_t n, int dtype, qs_error *err);
    /* The reassembly gather on its own (QLLM's threshold search: a candidate's inputs and its
     * consumers' weights): y[r, k] = coef[k] * (x[r, src_a[k]] + (src_b[k] >= 0 ? x[r, src_b[k]] : 0))
     * for k < dim, x and y [rows, dim]; coef NULL: no factor (the weights' columns are summed).
     * y must not alias x. The bits of quant/reassembly.c's qs_reasm_apply / qs_reasm_weight. */
    int (*gather)(qs_backend *be, float *y, const float *x, int rows, int dim, const int32_t *src_a,
                  const int32_t *src_b, const float *coef, qs_error *err);
    /* Returns when the ops issued before mark `slot` have finished (not the ones issued since):
     * the host may then refill, with stage_upload, backend memory that only those ops used.
     * NULL where mark is. */
    int (*wait_mark)(qs_backend *be, int slot, qs_error *err);

    /* ---- bf16 weights (a GPU whose GEMMs round their operands to bf16 keeps frozen linears
     * so, at half the memory: backend/registry.h qs_backend_bf16_weights) ----
     * dst [n] bf16 (uint16 bits) = src [n] fp32 rounded to nearest even, NaN quieted: the bits
     * of base/half.h's qs_f32_to_bf16. dst and src do not overlap. */
    int (*to_bf16)(qs_backend *be, uint16_t *dst, const float *src, size_t n, qs_error *err);
    /* Products on bf16 weights: tw = 1, the linear layer y [m, n] = x w^T + beta y with w [n, k]
     * (ldw >= k); tw = 0, y [m, n] = x w + beta y with w [k, n] (ldw >= n: the linear's backward,
     * dx = dy w). x [m, k] fp32 (ldx >= k), w bf16 bits, y fp32 (ldy >= n); beta = 0 ignores
     * what y held. Within the backend's bf16 GEMM tolerance of gemm on the widened w (the CPU
     * backends: exactly that), with gemm's window hint (set_window_rows). */
    int (*linear_bf16)(qs_backend *be, int tw, int m, int n, int k, const float *x, int ldx, const uint16_t *w, int ldw,
                       float beta, float *y, int ldy, qs_error *err);

    /* ---- a finished layer's codes (QLLM's final quantization: 1 byte a weight crosses the bus,
     * not 4) ----
     * Round to nearest of w [rows, cols] with fake_quant_weight's quantizer (bits 2..8): codes
     * [rows, cols] one a byte, scales and zeros [rows, ng] (ng = group > 0 ? ceil(cols / group) :
     * 1), and row_err [rows] (double; NULL: not wanted) = the sum over the row's columns, in
     * column order, of ((double)((code - zero) * scale) - w)^2, each square added as it comes:
     * the bits of quant/affine.c's qs_quant_rtn and qs_dequant_row_sq_err. All backend memory; w
     * is not changed. A NaN or infinite weight is not an error here: its code is some value in
     * 0 .. 2^bits - 1 and its row's row_err is not finite (the caller names the weight). */
    int (*quant_weight)(qs_backend *be, const float *w, int rows, int cols, int group, int bits, int sym, uint8_t *codes,
                        float *scales, float *zeros, double *row_err, qs_error *err);

    /* ---- DL-QAT (../shared/METHODS.md): a weight moved on a fixed grid by a low-rank term ----
     * w [rows, cols] the frozen weights; d [rows, cols] the low-rank term s B A in grid steps;
     * scales, zeros [rows, ng] the fixed min-max grid (quant_weight's, ng and the groups as
     * there); mag [rows, ng] the trained magnitudes; qmax = 2^bits - 1, bits 2..8. Per weight
     *   c = clamp(rint(w / scale + d) + zero, 0, qmax),   y = (mag * scale) * (c - zero)
     * (the float product mag * scale first: the stored scale, so y is the bits of the shard's
     * dequantization). y (NULL: not wanted) may equal d, not w; codes [rows, cols] one a byte
     * (NULL: not wanted); row_err [rows] (NULL: not wanted) = the sum over the row's columns in
     * column order of ((double)y - w)^2, each square added as it comes. A NaN's code is 0. */
    int (*dlqat_weight)(qs_backend *be, float *y, uint8_t *codes, double *row_err, const float *w, const float *d,
                        const float *scales, const float *zeros, const float *mag, int rows, int cols, int group,
                        int bits, qs_error *err);
    /* Its backward from dy = dL/dy [rows, cols] (straight-through round; the clamp passes no
     * gradient where it bites): dd = dy * (mag * scale) where 0 <= rint(w / scale + d) + zero <=
     * qmax, else 0 (overwritten; dd may equal dy); dmag [rows, ng] += the group's sum over its
     * columns in column order, in double, of dy * scale * (c - zero), rounded to float once. */
    int (*dlqat_weight_backward)(qs_backend *be, float *dd, float *dmag, const float *dy, const float *w, const float *d,
                                 const float *scales, const float *zeros, const float *mag, int rows, int cols,
                                 int group, int bits, qs_error *err);

    /* ---- SliderQuant (../shared/METHODS.md): learnable weight clipping ----
     * w [rows, cols] the weights to quantize (W + s B A); gam, bet [rows, ng] the clipping
     * logits (ng and the groups as quant_weight's); bits 2..8, qmax = 2^bits - 1. Per group, with
     * mx, mn its largest and smallest weight and sg(t) = 1 / (1 + exp(-t)) in float:
     *   hi = sg(gam) * mx, lo = sg(bet) * mn,
     *   asymmetric: scale = clamp((hi - lo) / qmax), zero = rint(-lo / scale);
     *   sym: scale = clamp(max(|hi|, |lo|) / (2^(bits-1) - 1)), zero = 2^(bits-1)
     * (clamp to [QS_QUANT_SCALE_MIN, QS_QUANT_SCALE_MAX], quant/affine.h: with gam = bet = +inf
     * it is quant_weight's grid), then c = clamp(rint(w / scale) + zero, 0, qmax) and
     * y = scale * (c - zero). y (NULL: not wanted) may equal w; codes [rows, cols] (NULL: not
     * wanted); scales, zeros [rows, ng] (NULL: not wanted); row_err [rows] (NULL: not wanted) =
     * the sum in column order of ((double)y - w)^2. A NaN weight's code is 0. Columns c >= qcols
     * of each row are not quantized (SliderQuant's incremental quantization): y = w there, each
     * group's grid still taken from all its columns; codes must then be NULL. qcols >= cols: all. */
    int (*lwc_weight)(qs_backend *be, float *y, uint8_t *codes, float *scales, float *zeros, double *row_err,
                      const float *w, const float *gam, const float *bet, int rows, int cols, int group, int bits,
                      int sym, int qcols, qs_error *err);
    /* Its backward from dy [rows, cols], straight-through round (OmniQuant's): where
     * 0 <= rint(w / scale) + zero <= qmax, dw = dy and the scale's gradient gets
     * dy * (rint(w / scale) - w / scale); where the clamp bites dw = 0 and it gets dy * (c - zero).
     * The zero point, mx and mn pass no gradient; a clamped scale passes none to gam, bet. Per
     * group (its sum g_s over columns in column order, in double): dgam += g_s * d scale / d gam,
     * dbet += g_s * d scale / d bet, rounded to float once (dgam, dbet accumulate, +=). dw is
     * overwritten and may equal dy. Columns c >= qcols (not quantized): dw = dy, and nothing
     * to g_s. */
    int (*lwc_weight_backward)(qs_backend *be, float *dw, float *dgam, float *dbet, const float *dy, const float *w,
                               const float *gam, const float *bet, int rows, int cols, int group, int bits, int sym,
                               int qcols, qs_error *err);

    /* ---- SliderQuant: learnable per-channel smoothing scales ----
     * y [rows, cols] = (x * fr(r)) * fc(c) in float, fr and fc the factors of the sides row and
     * col (qs_chan_scale above; NULL or alpha NULL: 1, no multiply), f = a or 1.0f / a. y may
     * equal x. */
    int (*chan_scale)(qs_backend *be, float *y, const float *x, int rows, int cols, const qs_chan_scale *row,
                      const qs_chan_scale *col, qs_error *err);
    /* Its backward from dy = dL/dy: dx (NULL: not wanted) += (dy * fr) * fc in float; for each
     * index k of the column side, col->dalpha[k] += (float)(D * sum over the columns c with
     * k(c) = k, in increasing c, of S_c), S_c = the sum over rows in increasing r of
     * ((double)dy * x) * fr(r), all in double, D = pow > 0 ? 1 : -1 / ((double)a * a) (d f / d a);
     * nothing where |alpha[k]| < QS_CHAN_SCALE_MIN (held there). The row side likewise with the
     * roles of rows and columns swapped. */
    int (*chan_scale_backward)(qs_backend *be, float *dx, const float *dy, const float *x, int rows, int cols,
                               const qs_chan_scale *row, const qs_chan_scale *col, qs_error *err);
} qs_backend_ops;

/* element types of to_f32 */
enum { QS_BE_F32 = 0, QS_BE_F16 = 1, QS_BE_BF16 = 2 };

struct qs_backend {
    const qs_backend_ops *ops;
    void *ctx; /* the backend's own state */
};

#endif
