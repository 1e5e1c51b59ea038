/* tests/test_eval_small.c - the streamed perplexity on stories260k equals exp of the mean NLL
 * computed directly from full logits window by window; it is the same bits run to run; and
 * windows are independent (the tail is dropped). */
#include <math.h>
#include <string.h>

#include "model/eval.h"
#include "model/logits.h"
#include "tests/testutil.h"

int main(void) {
    char *model = qs_test_shared_path("models/stories260k");
    enum { N = 64 * 5 + 17, L = 64 };
    int32_t ids[N];
    uint32_t x = 7;
    for (int i = 0; i < N; i++) { /* seeded random ids: the model is lost on them */
        x = x * 1103515245u + 12345u;
        ids[i] = (int32_t)((x >> 16) % 512);
    }
    qs_eval_opts o = {.seqlen = L};
    qs_eval_result r1, r2;
    qs_error err = {0};
    CHECKF(qs_eval_perplexity(model, ids, N, &o, &r1, &err) == 0, "%s", err.msg);
    CHECK(qs_eval_perplexity(model, ids, N, &o, &r2, &err) == 0);
    CHECK(r1.windows == 5 && r1.tokens == 5 * L && r1.predicted == 5 * (L - 1));
    CHECKF(memcmp(&r1.nll, &r2.nll, sizeof r1.nll) == 0, "not deterministic: %.17g vs %.17g", r1.nll, r2.nll);
    CHECK(isfinite(r1.ppl) && r1.ppl > 1);
    /* on text the model wrote itself (greedy, from BOS) perplexity must be low: a broken layer
     * or a wrong RoPE would not give that */
    {
        enum { G = 2 * L };
        int32_t gen[G];
        gen[0] = 1; /* BOS, then greedy within one window; the second window repeats the first */
        for (int i = 1; i < L; i++) {
            float *lg;
            int V;
            CHECK(qs_logits_compute(model, gen, i, NULL, 0, &lg, &V, &err) == 0);
            int best = 0;
            for (int j = 1; j < V; j++) best = lg[(size_t)(i - 1) * V + j] > lg[(size_t)(i - 1) * V + best] ? j : best;
            gen[i] = best;
            free(lg);
        }
        memcpy(gen + L, gen, sizeof(int32_t) * L);
        qs_eval_result rg;
        CHECK(qs_eval_perplexity(model, gen, G, &o, &rg, &err) == 0);
        printf("stories260k: ppl %.3f on its own greedy text, %.1f on random ids\n", rg.ppl, r1.ppl);
        CHECKF(rg.ppl < 3.0 && rg.ppl < r1.ppl / 100, "ppl %.3f on greedy text", rg.ppl);
    }
    /* reference: full logits per window, log-softmax in double */
    double nll = 0;
    for (int w = 0; w < 5; w++) {
        float *lg;
        int V;
        CHECK(qs_logits_compute(model, ids + w * L, L, NULL, 0, &lg, &V, &err) == 0);
        for (int p = 0; p < L - 1; p++) {
            const float *row = lg + (size_t)p * V;
            double m = row[0], s = 0;
            for (int j = 1; j < V; j++) m = fmax(m, row[j]);
            for (int j = 0; j < V; j++) s += exp(row[j] - m);
            nll += m + log(s) - row[ids[w * L + p + 1]];
        }
        free(lg);
    }
    nll /= 5 * (L - 1);
    printf("stories260k: streamed ppl %.6f, reference %.6f\n", r1.ppl, exp(nll));
    /* the two paths differ only in float32 summation order of the LM head: 1e-5 relative */
    CHECKF(fabs(r1.nll - nll) < 1e-5 * fabs(nll) + 1e-6, "streamed NLL %.9f vs reference %.9f", r1.nll, nll);
    /* --max-windows takes the first windows only */
    o.max_windows = 2;
    CHECK(qs_eval_perplexity(model, ids, N, &o, &r2, &err) == 0 && r2.windows == 2 && r2.predicted == 2 * (L - 1));
    /* too little text is a clear error */
    o.max_windows = 0;
    CHECK(qs_eval_perplexity(model, ids, L - 1, &o, &r2, &err) != 0 && strstr(err.msg, "fewer than one window"));
    free(model);
    return qs_test_result();
}
