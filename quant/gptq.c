/* quant/gptq.c - GPTQ for one linear layer (quant/gptq.h). */
#include "quant/gptq.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

/* LAPACK (OpenBLAS provides it), Fortran interface, column-major: on our row-major matrices uplo
 * "U" in column-major is the lower triangle in row-major, and a triangular matrix is seen
 * transposed. */
extern void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info);
extern void strtri_(const char *uplo, const char *diag, const int *n, float *a, const int *lda, int *info);

int qs_hessian_init(qs_hessian *h, int n, qs_error *err) {
    memset(h, 0, sizeof *h);
    QS_RETURN_ERROR_IF(n < 1, QS_EUSAGE, "Hessian of %d inputs", n);
    h->h = calloc((size_t)n * n, sizeof(float));
    QS_RETURN_ERROR_IF(!h->h, -ENOMEM, "out of memory for a %d x %d Hessian", n, n);
    h->n = n;
    return 0;
}

void qs_hessian_free(qs_hessian *h) {
    free(h->h);
    memset(h, 0, sizeof *h);
}

int qs_hessian_add(qs_hessian *h, const float *x, int tokens, int ld, qs_error *err) {
    QS_RETURN_ERROR_IF(tokens < 0 || ld < h->n, QS_EUSAGE, "Hessian add: %d tokens, leading dimension %d < %d", tokens,
                       ld, h->n);
    if (tokens == 0) return 0;
    float keep = (float)h->count / (float)(h->count + tokens);
    h->count += tokens;
    /* H = keep * H + (2 / N) X^T X, upper triangle (row-major "upper" = column-major "lower") */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, h->n, tokens, 2.0f / (float)h->count, x, ld, keep, h->h, h->n);
    return 0;
}

void qs_dequant_gidx(const uint8_t *codes, const float *scales, const float *zeros, const int32_t *g_idx, int rows,
                     int cols, int group, float *w) {
    int g = group > 0 ? group : cols, ng = group > 0 ? (cols + group - 1) / group : 1;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < (size_t)rows; r++)
        for (int c = 0; c < cols; c++) {
            int k = g_idx ? g_idx[c] : c / g;
            w[r * cols + c] = ((float)codes[r * cols + c] - zeros[r * ng + k]) * scales[r * ng + k];
        }
}

/* J A J, J the reversal: a row-major square matrix's n^2 floats in reverse order */
static void reverse_square(float *a, int n) {
    const size_t len = (size_t)n * n;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < len / 2; i++) {
        float t = a[i];
        a[i] = a[len - 1 - i];
        a[len - 1 - i] = t;
    }
}

/* U (upper, row-major) with U^T U = H^-1, read from H's upper triangle; 0 or the LAPACK info.
 * The factor is unique, so it is computed without forming H^-1: factor J H J = L L^T, then
 * U = J L^-1 J (U^T U = J L^-T L^-1 J = H^-1, and J (lower) J is upper). One potrf and one
 * trtri, 2/3 n^3 flops, where potrf, potri (trtri + lauum) and potrf again take 4/3 n^3; the
 * CUDA backend's cholesky_inverse takes the same road. */
static int inverse_cholesky_upper(float *a, int n) {
    int info = 0;
    reverse_square(a, n); /* H's upper triangle is now the lower one: column-major "U" */
    spotrf_("U", &n, a, &n, &info); /* J H J = L L^T, L in the lower triangle */
    if (info) return info;
    strtri_("U", "N", &n, a, &n, &info); /* L^-1 */
    if (info) return info;
    reverse_square(a, n);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++) a[(size_t)i * n + j] = 0.0f;
    return 0;
}

/* the same factor on a backend (a GPU's solver): hp goes there and back */
static int backend_cholesky(qs_backend *be, float *hp, int n, int *info, const char *what, qs_error *err) {
    const size_t bytes = sizeof(float) * (size_t)n * n;
    float *d = be->ops->alloc(be, bytes);
    QS_RETURN_ERROR_IF(!d, -ENOMEM, "%s: out of %s memory for the %d x %d Hessian's factor (%zu bytes)", what,
                       be->ops->name, n, n, bytes);
    int rc = be->ops->upload(be, d, hp, bytes, err);
    if (!rc) rc = be->ops->cholesky_inverse(be, d, n, info, err);
    if (!rc && !*info) rc = be->ops->download(be, hp, d, bytes, err);
    be->ops->free(be, d);
    return rc;
}

typedef struct { float d; int i; } diag_ix;
static int by_diag_desc(const void *a, const void *b) {
    const diag_ix *x = a, *y = b;
    if (x->d != y->d) return x->d > y->d ? -1 : 1;
    return x->i - y->i;
}

/* lazy batch columns: a group must lie inside one batch, so that its quantizer sees every
 * earlier column's update: batches are a multiple of the group size */
static int batch_columns(const qs_gptq_opts *o) {
    int B = o->block_size > 0 ? o->block_size : 128;
    if (o->q.group > 0) B = B < o->q.group ? o->q.group : B - B % o->q.group;
    return B;
}

void qs_gptq_batch_rows(float *w, int rows, int cols, int i1, int i2, const float *u, const int32_t *perm,
                        const qs_qconfig *q, int static_groups, float *scales, float *zeros, uint8_t *codes,
                        float *err1, double *loss) {
    const size_t C = (size_t)cols;
    const int cnt = i2 - i1, G = q->group > 0 ? q->group : cols, ng = qs_qconfig_groups(q, cols);
    /* inside a batch every row is independent: rows in parallel, columns in order */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *row = w + (size_t)r * C, *e = err1 + (size_t)r * cnt;
        float sc = scales[(size_t)r * ng], ze = zeros[(size_t)r * ng];
        for (int i = i1; i < i2; i++) {
            if (q->group > 0) {
                if (static_groups) {
                    size_t k = (size_t)r * ng + (size_t)(perm[i] / G);
                    sc = scales[k], ze = zeros[k];
                } else if (i % G == 0) {
                    int len = cols - i < G ? cols - i : G;
                    qs_quant_params(row + i, len, q, &sc, &ze);
                    scales[(size_t)r * ng + i / G] = sc, zeros[(size_t)r * ng + i / G] = ze;
                }
            }
            uint8_t code = qs_quant_code(row[i], sc, ze, q->bits);
            float deq = ((float)code - ze) * sc, ui = u[(size_t)i * C + i];
            float ei = (row[i] - deq) / ui;
            loss[r] += (double)(row[i] - deq) * (row[i] - deq) / ((double)ui * ui) / 2.0;
            codes[(size_t)r * C + perm[i]] = code;
            row[i] = deq;
            const float *urow = u + (size_t)i * C;
            for (int j = i + 1; j < i2; j++) row[j] -= ei * urow[j];
            e[i - i1] = ei;
        }
    }
}

/* the batches run in the layer's own backend copy (w_be): in processing order already (no
 * act-order), or with in_place_reorder the host's permuted copy uploaded into it */
static int in_place(const qs_gptq_opts *o, int w_be) { return w_be && (!o->act_order || o->in_place_reorder); }

size_t qs_gptq_backend_bytes(int rows, int cols, const qs_gptq_opts *o, int w_be) {
    const size_t R = (size_t)rows, C = (size_t)cols, ng = (size_t)qs_qconfig_groups(&o->q, cols);
    size_t B = (size_t)batch_columns(o);
    if (B > C) B = C;
    const size_t wcopy = in_place(o, w_be) ? 0 : R * C;
    return sizeof(float) * (wcopy + C * C + R * B + 2 * R * ng) + R * C + sizeof(int32_t) * 3 * C + sizeof(double) * R;
}

/* the layer's buffers in backend memory (gptq_batch) */
typedef struct gptq_mem {
    float *w, *u, *sc, *ze, *e;
    int32_t *perm;
    uint8_t *codes;
    double *loss;
    int w_borrowed; /* w is the layer's own copy (o->w_be) */
} gptq_mem;

static void mem_free(qs_backend *be, gptq_mem *m) {
    if (!be) return;
    if (!m->w_borrowed) be->ops->free(be, m->w);
    be->ops->free(be, m->u), be->ops->free(be, m->sc), be->ops->free(be, m->ze);
    be->ops->free(be, m->e), be->ops->free(be, m->perm), be->ops->free(be, m->codes), be->ops->free(be, m->loss);
    memset(m, 0, sizeof *m);
}

static int mem_alloc(qs_backend *be, gptq_mem *m, int rows, int cols, const qs_gptq_opts *o, const char *what,
                     qs_error *err) {
    const size_t R = (size_t)rows, C = (size_t)cols, ng = (size_t)qs_qconfig_groups(&o->q, cols);
    size_t B = (size_t)batch_columns(o);
    if (B > C) B = C;
    m->w_borrowed = in_place(o, o->w_be != NULL);
    m->w = m->w_borrowed ? o->w_be : be->ops->alloc(be, sizeof(float) * R * C);
    m->u = be->ops->alloc(be, sizeof(float) * C * C);
    m->sc = be->ops->alloc(be, sizeof(float) * R * ng);
    m->ze = be->ops->alloc(be, sizeof(float) * R * ng);
    m->e = be->ops->alloc(be, sizeof(float) * R * B);
    m->perm = be->ops->alloc(be, sizeof(int32_t) * C);
    m->codes = be->ops->alloc(be, R * C);
    m->loss = be->ops->alloc(be, sizeof(double) * R);
    if (m->w && m->u && m->sc && m->ze && m->e && m->perm && m->codes && m->loss) return 0;
    mem_free(be, m);
    return qs_error_set(err, -ENOMEM, "%s: out of %s memory for GPTQ of [%d, %d] (%zu bytes: weights, factor, codes)",
                        what, be->ops->name, rows, cols, qs_gptq_backend_bytes(rows, cols, o, o->w_be != NULL));
}

/* dst[:, k] = src[:, map[k]], both [rows, cols] in backend memory (map: host, [cols]; NULL: a
 * copy): a gather with nothing added and no factor, which is exact. 0 with *done = 1, or 0 with
 * *done = 0 where the backend has no gather (the caller moves the weights through the host). */
static int move_columns(qs_backend *be, float *dst, const float *src, int rows, int cols, const int32_t *map, int *done,
                        qs_error *err) {
    *done = 0;
    if (!map) {
        QS_FORWARD_IF_ERROR(be->ops->copy(be, dst, src, sizeof(float) * (size_t)rows * cols, err));
        *done = 1;
        return 0;
    }
    if (!be->ops->gather) return 0;
    const size_t ib = sizeof(int32_t) * (size_t)cols;
    int32_t *h = malloc(2 * ib), *d = be->ops->alloc(be, 2 * ib);
    int rc = h && d ? 0 : qs_error_set(err, -ENOMEM, "out of memory for GPTQ's column order (%d columns)", cols);
    if (!rc) {
        for (int k = 0; k < cols; k++) h[k] = map[k], h[cols + k] = -1;
        rc = be->ops->upload(be, d, h, 2 * ib, err);
    }
    if (!rc) rc = be->ops->gather(be, dst, src, rows, cols, d, d + cols, NULL, err);
    if (!rc) *done = 1;
    if (d) be->ops->free(be, d);
    free(h);
    return rc;
}

int qs_gptq_quantize(float *w, int rows, int cols, float *H, const qs_gptq_opts *o, uint8_t *codes, float *scales,
                     float *zeros, int32_t *g_idx, qs_gptq_stats *stats, const char *what, qs_error *err) {
    const qs_qconfig *q = &o->q;
    QS_RETURN_ERROR_IF(q->bits < 2 || q->bits > 8, QS_EUSAGE, "%s: %d-bit weights are not supported (2..8)", what, q->bits);
    QS_RETURN_ERROR_IF(rows < 1 || cols < 1, QS_EUSAGE, "%s: shape [%d, %d]", what, rows, cols);
    const size_t n = (size_t)rows * cols, C = (size_t)cols;
    const size_t nf = qs_first_nonfinite(w, n);
    QS_RETURN_ERROR_IF(nf < n, QS_EFORMAT, "%s: weight [%zu, %zu] is %s", what, nf / C, nf % C,
                       isnan(w[nf]) ? "NaN" : "infinite");
    const int G = q->group > 0 ? q->group : cols, ng = qs_qconfig_groups(q, cols), B = batch_columns(o);
    qs_backend *be = o->be && o->be->ops->gptq_batch ? o->be : NULL; /* the batches run there */
    /* the Hessian stays in backend memory: the matrix to factor is made there */
    const int h_be = be && o->h_be && be->ops->gptq_hessian;
    QS_RETURN_ERROR_IF(!h_be && !H, QS_EUSAGE, "%s: no Hessian (a backend Hessian needs a backend with gptq_hessian)", what);
    float damp = o->damp > 0 ? o->damp : 0.01f;
    gptq_mem dm = {0};
    int w_be_done = 0;
    int32_t *perm = malloc(sizeof(int32_t) * C), *inv = NULL;
    float *wp = NULL, *hp = h_be ? NULL : malloc(sizeof(float) * C * C), *diag = malloc(sizeof(float) * C);
    float *err1 = be ? NULL : malloc(sizeof(float) * (size_t)rows * B);
    double *loss = calloc((size_t)rows, sizeof(double));
    int rc = perm && (h_be || hp) && diag && (be || err1) && loss ? 0
                                                                     : qs_error_set(err, -ENOMEM, "%s: out of memory for GPTQ", what);
    if (!rc && be) rc = mem_alloc(be, &dm, rows, cols, o, what, err);
    if (rc) goto done;
    if (h_be) {
        int bad = 0;
        rc = be->ops->gptq_hessian(be, NULL, o->h_be, cols, NULL, 0.0f, diag, &bad, err);
        if (!rc && bad) rc = qs_error_set(err, QS_EFORMAT, "%s: the Hessian has values that are not finite", what);
        if (rc) goto done;
    } else {
        for (size_t i = 0; i < C; i++)
            for (size_t j = i; j < C; j++) {
                float v = H[i * C + j];
                if (!isfinite(v)) {
                    rc = qs_error_set(err, QS_EFORMAT, "%s: Hessian [%zu, %zu] is not finite", what, i, j);
                    goto done;
                }
                H[j * C + i] = v; /* mirror the upper triangle */
            }
        for (size_t j = 0; j < C; j++) diag[j] = H[j * C + j];
    }
    /* dead inputs */
    int any_dead = 0;
    for (size_t j = 0; j < C; j++)
        if (diag[j] == 0.0f) {
            any_dead = 1;
            diag[j] = 1.0f;
            if (H && !h_be) H[j * C + j] = 1.0f;
            for (int r = 0; r < rows; r++) w[(size_t)r * C + j] = 0.0f;
        }
    if (q->group > 0 && o->static_groups) /* static groups: quantizers of the original W */
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < ng; k++) {
                int len = cols - k * G < G ? cols - k * G : G;
                qs_quant_params(w + (size_t)r * C + (size_t)k * G, len, q, &scales[(size_t)r * ng + k], &zeros[(size_t)r * ng + k]);
            }
    /* processing order */
    if (o->act_order) {
        diag_ix *d = malloc(sizeof(diag_ix) * C);
        if (!d) {
            rc = qs_error_set(err, -ENOMEM, "%s: out of memory for GPTQ", what);
            goto done;
        }
        for (size_t j = 0; j < C; j++) d[j] = (diag_ix){diag[j], (int)j};
        qsort(d, C, sizeof *d, by_diag_desc);
        for (size_t j = 0; j < C; j++) perm[j] = d[j].i;
        free(d);
    } else {
        for (size_t j = 0; j < C; j++) perm[j] = (int32_t)j;
    }
    /* the host's copy in processing order: for the host's batches, an upload, or per-channel
     * quantizers in that order (a tie of -0 and +0 keeps the first); not when the backend
     * copies or gathers the layer itself and the quantizers come from elsewhere */
    int ident = 1;
    for (size_t j = 0; j < C && ident; j++) ident = perm[j] == (int32_t)j;
    const int wp_needed = !be || !o->w_be || any_dead || (!ident && !be->ops->gather) || (q->group <= 0 && !ident) ||
                          (!ident && dm.w_borrowed);
    if (wp_needed && !(wp = malloc(sizeof(float) * n))) {
        rc = qs_error_set(err, -ENOMEM, "%s: out of memory for GPTQ", what);
        goto done;
    }
    if (wp_needed)
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++)
            for (size_t j = 0; j < C; j++) wp[(size_t)r * C + j] = w[(size_t)r * C + perm[j]];
    double mean = 0;
    for (size_t j = 0; j < C; j++) mean += diag[j];
    mean /= (double)C;
    if (be) rc = be->ops->upload(be, dm.perm, perm, sizeof(int32_t) * C, err);
    if (rc) goto done;
    /* U: upper Cholesky factor of (P H P^T + damp)^-1, raising the dampening if needed */
    qs_backend *solver = o->be && o->be->ops->cholesky_inverse ? o->be : NULL;
    const size_t ubytes = sizeof(float) * C * C;
    for (int attempt = 0;; attempt++) {
        const float add = (float)(damp * mean);
        int info = 0, bad = 0;
        if (h_be) { /* made where the Hessian is */
            rc = be->ops->gptq_hessian(be, dm.u, o->h_be, cols, dm.perm, add, NULL, &bad, err);
        } else {
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < C; i++)
                for (size_t j = 0; j < C; j++) hp[i * C + j] = H[(size_t)perm[i] * C + perm[j]];
            for (size_t j = 0; j < C; j++) hp[j * C + j] += add;
            if (be) rc = be->ops->upload(be, dm.u, hp, ubytes, err);
        }
        if (!rc && be && solver) { /* factored where the batches run: U stays there */
            rc = be->ops->cholesky_inverse(be, dm.u, cols, &info, err);
        } else if (!rc && solver) {
            rc = backend_cholesky(solver, hp, cols, &info, what, err);
        } else if (!rc) { /* the host's LAPACK (a backend's U goes there and back: the CPU's is host memory) */
            if (h_be && !hp && !(hp = malloc(ubytes))) rc = qs_error_set(err, -ENOMEM, "%s: out of memory for GPTQ", what);
            if (!rc && h_be) rc = be->ops->download(be, hp, dm.u, ubytes, err);
            if (!rc) info = inverse_cholesky_upper(hp, cols);
            if (!rc && !info && be) rc = be->ops->upload(be, dm.u, hp, ubytes, err);
        }
        if (rc) goto done;
        if (!info) break;
        if (attempt == 3) {
            rc = qs_error_set(err, QS_EFORMAT, "%s: the Hessian is not positive definite even with %g dampening (the factor's info %d: "
                              "its trailing minor of that order)",
                              what, (double)damp, info);
            goto done;
        }
        damp *= 10.0f;
    }
    /* per-channel quantizer from the whole (dead-zeroed) row */
    if (q->group <= 0)
#pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) qs_quant_params((wp ? wp : w) + (size_t)r * C, cols, q, &scales[r], &zeros[r]);
    if (be) {
        const size_t qb = sizeof(float) * (size_t)rows * ng;
        free(hp), hp = NULL; /* U is in backend memory now, and soon the weights */
        /* the batches' input, the layer in processing order: the layer's own backend copy where
         * it holds the same values (no dead input zeroed on the host), else the host's wp */
        int moved = dm.w_borrowed && !any_dead && ident; /* the batches run in the layer itself */
        if (o->w_be && !any_dead && !dm.w_borrowed)
            rc = move_columns(be, dm.w, o->w_be, rows, cols, ident ? NULL : perm, &moved, err);
        if (!rc && !moved) rc = be->ops->upload(be, dm.w, wp, sizeof(float) * n, err);
        free(wp), wp = NULL;
        if (!rc) rc = be->ops->upload(be, dm.loss, loss, sizeof(double) * (size_t)rows, err);
        if (!rc && (q->group <= 0 || o->static_groups)) rc = be->ops->upload(be, dm.sc, scales, qb, err);
        if (!rc && (q->group <= 0 || o->static_groups)) rc = be->ops->upload(be, dm.ze, zeros, qb, err);
        for (int i1 = 0; i1 < cols && !rc; i1 += B) {
            const int i2 = i1 + B < cols ? i1 + B : cols;
            rc = be->ops->gptq_batch(be, dm.w, rows, cols, i1, i2, dm.u, dm.perm, q->group, q->bits, q->sym,
                                     o->static_groups, dm.sc, dm.ze, dm.codes, dm.e, dm.loss, err);
        }
        /* dm.w holds the dequantized weights in processing order (each column's
         * (code - zero) * scale, the host's dequantization): back into the layer in the original
         * order, by the inverse order */
        if (!rc && o->w_be && !ident && !dm.w_borrowed && !(inv = malloc(sizeof(int32_t) * C)))
            rc = qs_error_set(err, -ENOMEM, "%s: out of memory for GPTQ", what);
        for (size_t j = 0; !rc && inv && j < C; j++) inv[perm[j]] = (int32_t)j;
        if (!rc && dm.w_borrowed) w_be_done = ident; /* else the host's result goes up below */
        else if (!rc && o->w_be) rc = move_columns(be, o->w_be, dm.w, rows, cols, ident ? NULL : inv, &w_be_done, err);
        if (!rc && o->codes_be && o->w_be_only && w_be_done) *o->codes_be = dm.codes, dm.codes = NULL;
        else if (!rc) rc = be->ops->download(be, codes, dm.codes, n, err);
        if (!rc) rc = be->ops->download(be, scales, dm.sc, qb, err);
        if (!rc) rc = be->ops->download(be, zeros, dm.ze, qb, err);
        if (!rc) rc = be->ops->download(be, loss, dm.loss, sizeof(double) * (size_t)rows, err);
        if (rc) goto done;
    } else {
        for (int i1 = 0; i1 < cols; i1 += B) {
            const int i2 = i1 + B < cols ? i1 + B : cols, cnt = i2 - i1;
            qs_gptq_batch_rows(wp, rows, cols, i1, i2, hp, perm, q, o->static_groups, scales, zeros, codes, err1, loss);
            if (i2 < cols) /* lazy update of every later column: W[:, i2:] -= Err1 U[i1:i2, i2:] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, cols - i2, cnt, -1.0f, err1, cnt,
                            hp + (size_t)i1 * C + i2, cols, 1.0f, wp + i2, cols);
        }
    }
    for (size_t i = 0; i < C; i++)
        g_idx[perm[i]] = q->group <= 0 ? 0 : o->static_groups ? perm[i] / G : (int)(i / (size_t)G);
    if (!(o->w_be_only && w_be_done)) qs_dequant_gidx(codes, scales, zeros, g_idx, rows, cols, q->group, w);
    if (dm.w_borrowed && !w_be_done) { /* the layer held them in processing order: the same values, in order */
        rc = be->ops->upload(be, o->w_be, w, sizeof(float) * n, err);
        w_be_done = !rc;
        if (rc) goto done;
    }
    if (stats) {
        stats->loss = 0;
        for (int r = 0; r < rows; r++) stats->loss += loss[r];
        stats->damp_used = damp;
        stats->w_be_done = w_be_done;
    }
done:
    mem_free(be, &dm);
    free(perm), free(inv), free(wp), free(hp), free(diag), free(err1), free(loss);
    return rc;
}
