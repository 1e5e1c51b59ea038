/* backend/backend.h - the compute backend seam: a table of operations plus a context, in the
 * style of ggml's backend interface. Pointers passed to the ops are backend memory (from
 * ops->alloc); for the CPU backend that is host memory. All matrices are row-major fp32 here;
 * a GPU backend may keep bf16/fp16 copies of weights internally. Ops are deterministic: the
 * same inputs give the same bits, run after run. */
#ifndef QS_BACKEND_BACKEND_H
#define QS_BACKEND_BACKEND_H

#include <stddef.h>

#include "base/error.h"

typedef struct qs_backend qs_backend;

typedef struct qs_backend_ops {
    const char *name;
    void (*destroy)(qs_backend *be);
    /* memory: alloc returns NULL when out of memory */
    void *(*alloc)(qs_backend *be, size_t bytes);
    void (*free)(qs_backend *be, void *p);
    int (*upload)(qs_backend *be, void *dst, const void *src_host, size_t bytes, qs_error *err);
    int (*download)(qs_backend *be, void *dst_host, const void *src, size_t bytes, qs_error *err);

    /* C[m, n] = alpha * op(A) op(B) + beta * C; op(A) is [m, k], op(B) is [k, n]; trans_b = 1 with
     * B stored [n, k] is the linear layer y = x W^T */
    void (*gemm)(qs_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
    /* y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * gamma; y may equal x */
    void (*rmsnorm)(qs_backend *be, float *y, const float *x, const float *gamma, int rows, int dim, float eps);
    /* rotate-half RoPE in place on x [n_tok, row_stride]: heads of head_dim at column h*head_dim;
     * token t has position pos[t]; cos/sin tables [max_pos, head_dim/2] */
    void (*rope)(qs_backend *be, float *x, int n_tok, int n_heads, int head_dim, int row_stride,
                 const int *pos, const float *cos_t, const float *sin_t);
    /* causal GQA attention of one sequence: q [seqlen, n_heads*head_dim], k and v
     * [seqlen, n_kv_heads*head_dim]; out [seqlen, n_heads*head_dim]; scale 1/sqrt(head_dim).
     * Returns 0, or -ENOMEM when its scratch cannot be allocated (out is then untouched). */
    int (*attention)(qs_backend *be, float *out, const float *q, const float *k, const float *v, int seqlen,
                      int n_heads, int n_kv_heads, int head_dim);
    /* y = silu(gate) * up, elementwise; y may equal gate */
    void (*swiglu)(qs_backend *be, float *y, const float *gate, const float *up, size_t n);
    /* y += x */
    void (*add)(qs_backend *be, float *y, const float *x, size_t n);
    /* y[r, :] += bias */
    void (*add_bias)(qs_backend *be, float *y, const float *bias, int rows, int cols);
} qs_backend_ops;

struct qs_backend {
    const qs_backend_ops *ops;
    void *ctx;
};

#endif
