/* tests/test_stories_logits.c - stories260k (a real trained LLaMA-architecture model: GQA 8/4
 * heads, tied embeddings) against the float32 reference logits of ../shared/models/README.md.
 * Tolerance 1e-4 absolute: the reference is another float32 implementation, and 5 layers of fp32
 * sums of 64-172 terms differ by reduction order at the 1e-6..1e-5 level. */
#include <math.h>
#include <stdint.h>

#include "model/logits.h"
#include "tests/testutil.h"

int main(void) {
    char *model = qs_test_shared_path("models/stories260k");
    const int32_t ids[16] = {1, 67, 89, 120, 300, 45, 7, 260, 511, 2, 33, 400, 150, 99, 12, 88};
    const float want0[6] = {1.973871f, 2.654902f, 1.974989f, 1.974209f, 1.974348f, 1.974841f};
    const float want3[6] = {10.719442f, 4.953121f, 10.718704f, 10.718534f, 10.717457f, 10.718503f};
    float *lg;
    int vocab;
    qs_error err = {0};
    CHECKF(qs_logits_compute(model, ids, 16, NULL, 0, &lg, &vocab, &err) == 0, "%s", err.msg);
    if (!qs_test_failures) {
        CHECK(vocab == 512);
        double worst = 0;
        for (int j = 0; j < 6; j++) {
            double d0 = fabs(lg[j] - want0[j]), d3 = fabs(lg[3 * vocab + j] - want3[j]);
            worst = fmax(worst, fmax(d0, d3));
        }
        printf("stories260k: max |logit - reference| = %.2e\n", worst);
        CHECKF(worst < 1e-4, "logits differ from the reference by %.3g", worst);
        /* a shorter prefix gives the same logits at its positions (causality). Not bit for bit:
         * the attention GEMMs' key count is the prefix length, and OpenBLAS rounds a row
         * differently for another width (~1e-6 relative of logits ~10); a token that saw a later
         * one would move its logits by far more than 1e-4 */
        float *lg8;
        CHECK(qs_logits_compute(model, ids, 8, NULL, 0, &lg8, &vocab, &err) == 0);
        double d = 0;
        for (int i = 0; i < 8 * vocab; i++) d = fmax(d, fabs(lg8[i] - lg[i]));
        CHECKF(d < 1e-4, "prefix logits differ by %.3g", d);
        free(lg8);
        free(lg);
    }
    free(model);
    return qs_test_result();
}
