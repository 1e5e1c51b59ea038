/* cpu/cpu_lse.c - one vocabulary chunk of an online log-sum-exp per row (the LM head's
 * cross-entropy without the full logits). Rows are independent; within a row the chunk's sum is
 * taken in double in a fixed order. */
#include <math.h>

#include "cpu/cpu_exp.h"
#include "cpu/cpu_internal.h"

int qs_cpu_lse_update(qs_backend *be, const float *logits, int n, int vc, int v0, const int32_t *target,
                      float *run_max, float *run_sum, float *tgt_logit, qs_error *err) {
    (void)be;
    QS_RETURN_ERROR_IF(n < 0 || vc < 1, QS_EUSAGE, "lse_update: bad shape [%d, %d]", n, vc);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *row = logits + (size_t)r * vc;
        float m = qs_cpu_row_max(row, vc);
        double s = qs_cpu_row_sumexp(row, vc, m);
        /* merge (m, s) into the running state relative to the larger maximum */
        float M = run_max[r];
        if (m > M) {
            run_sum[r] = (float)((double)run_sum[r] * exp((double)M - m) + s);
            run_max[r] = m;
        } else {
            run_sum[r] = (float)((double)run_sum[r] + s * exp((double)m - M));
        }
        int y = target ? target[r] : -1;
        if (y >= v0 && y < v0 + vc) tgt_logit[r] = row[y - v0];
    }
    return 0;
}
