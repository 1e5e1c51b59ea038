/* pipeline/compute_rtn.c - COMPUTE for RTN: no data. Tensors are converted to float a few rows
 * at a time and their packed codes written back into the slab over their own source bytes, so a
 * slot never grows beyond its block. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "pipeline/quantize_internal.h"

#define ROWS_CHUNK 64

int qs_compute_rtn(qs_qrun *q, int blk, qs_qslot *s, qs_error *err) {
    const qs_qconfig *qc = &q->o->q;
    (void)blk;
    for (size_t i = 0; i < s->n; i++) {
        const qs_tensor_info *t = s->t[i];
        const uint8_t *src = s->r[i].data;
        size_t es = qs_dtype_size(t->dtype);
        if (t->n_dims == 1) { /* norms and biases stay float */
            int which = -1;
            for (int k = 0; k < QS_N_OTHER; k++)
                if (strstr(t->name, qs_block_other_names[k])) which = k;
            s->other[which] = malloc(sizeof(float) * t->n_elems);
            if (!s->other[which]) return qs_error_set(err, -ENOMEM, "out of memory");
            qs_qrun_to_f32(t, src, t->n_elems, s->other[which]);
            continue;
        }
        qs_qlin_out *out = &s->lin[i];
        int rows = (int)t->shape[0], cols = (int)t->shape[1], ng = qs_qconfig_groups(qc, cols);
        uint8_t *packed = (uint8_t *)s->r[i].data; /* written behind the rows still to be read */
        size_t row_packed = qs_packed_size((size_t)cols, qc->bits);
        out->scales = malloc(sizeof(float) * (size_t)rows * ng);
        out->zeros = malloc(sizeof(float) * (size_t)rows * ng);
        if (!out->scales || !out->zeros) return qs_error_set(err, -ENOMEM, "out of memory");
        double se = 0, row_se[ROWS_CHUNK];
        for (int r0 = 0; r0 < rows; r0 += ROWS_CHUNK) {
            int nr = rows - r0 < ROWS_CHUNK ? rows - r0 : ROWS_CHUNK;
            qs_qrun_to_f32(t, src + (size_t)r0 * cols * es, (size_t)nr * cols, q->rows);
            QS_FORWARD_IF_ERROR(qs_quant_rtn(q->rows, nr, cols, qc, q->codes, out->scales + (size_t)r0 * ng,
                                             out->zeros + (size_t)r0 * ng, t->name, err));
            qs_dequant_row_sq_err(q->codes, out->scales + (size_t)r0 * ng, out->zeros + (size_t)r0 * ng, nr, cols,
                                  qc->group, q->rows, row_se);
            /* the chunk's rows are all converted: their packed codes (which end at or before the
             * next row of the source) may be written in any order */
#pragma omp parallel for schedule(static)
            for (int r = 0; r < nr; r++)
                qs_pack_codes(q->codes + (size_t)r * cols, (size_t)cols, qc->bits, packed + (size_t)(r0 + r) * row_packed);
            for (int r = 0; r < nr; r++) se += row_se[r];
        }
        out->packed = packed;
        out->own_packed = 0;
        out->packed_bytes = row_packed * (size_t)rows;
        /* the source bytes behind the packed codes are dead: give their pages back, so a slot
         * waiting for STORE holds about a quarter of its block (the next LOAD refills them) */
        uintptr_t dead0 = ((uintptr_t)packed + out->packed_bytes + 4095) & ~(uintptr_t)4095,
                  dead1 = ((uintptr_t)src + t->nbytes) & ~(uintptr_t)4095;
        if (dead1 > dead0) madvise((void *)dead0, dead1 - dead0, MADV_DONTNEED);
        out->mse = se / ((double)rows * cols);
    }
    return 0;
}
