/* cpu/cpu_gptq.c - GPTQ's lazy batch on the CPU backend (backend.h gptq_batch): the host's
 * column loop (quant/gptq.c, rows over OpenMP) and the lazy update through the backend's own
 * GEMM without windows, whose rows are split at fixed boundaries over the threads
 * (cpu/cpu_gemm.c): the same bits for any thread count. */
#include "cpu/cpu_internal.h"
#include "quant/gptq.h"

int qs_cpu_gptq_batch(qs_backend *be, float *w, int rows, int cols, int i1, int i2, const float *u, const int32_t *perm,
                      int group, int bits, int sym, int static_groups, float *scales, float *zeros, uint8_t *codes,
                      float *err1, double *loss, qs_error *err) {
    QS_RETURN_ERROR_IF(rows < 1 || cols < 1 || i1 < 0 || i2 <= i1 || i2 > cols || bits < 2 || bits > 8, QS_EUSAGE,
                       "gptq_batch: columns %d..%d of [%d, %d] at %d bits", i1, i2, rows, cols, bits);
    QS_RETURN_ERROR_IF(group > 0 && (i1 % group || (i2 < cols && i2 % group)), QS_EUSAGE,
                       "gptq_batch: columns %d..%d are not whole groups of %d", i1, i2, group);
    const qs_qconfig q = {.bits = bits, .group = group, .sym = sym};
    qs_gptq_batch_rows(w, rows, cols, i1, i2, u, perm, &q, static_groups, scales, zeros, codes, err1, loss);
    if (i2 == cols) return 0;
    qs_cpu_ctx *cx = be->ctx;
    const int windows = cx->window_rows; /* the rows of W are not tokens */
    cx->window_rows = 0;
    const int cnt = i2 - i1;
    int rc = qs_cpu_gemm(be, 0, 0, rows, cols - i2, cnt, -1.0f, err1, cnt, u + (size_t)i1 * cols + i2, cols, 1.0f, w + i2,
                         cols, err);
    cx->window_rows = windows;
    return rc;
}
