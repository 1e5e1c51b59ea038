/* io/tokenizer_spm_merges.c - the merges of a SentencePiece vocabulary that has scores and no
 * merge list (GGUF "llama", tokenizer.model), derived as Hugging Face's converter derives them
 * for a tokenizer.json: every split of a token into two vocabulary tokens is a merge; merges are
 * ordered by the merged token's score (descending, then its id), the splits of one token by
 * (left id, right id). The lowest rank then merges the pair whose concatenation has the highest
 * score, SentencePiece's BPE rule. Splits fall on byte boundaries where the converter splits
 * characters: a piece is valid UTF-8, so a part ending inside a character is never a piece. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/tokenizer_internal.h"

typedef struct scored {
    float score;
    int32_t id;
} scored;

static int cmp_by_score(const void *a, const void *b) {
    const scored *x = a, *y = b;
    return x->score > y->score ? -1 : x->score < y->score ? 1 : (x->id > y->id) - (x->id < y->id);
}

int qs_spm_merges_derive(size_t n, const char *const *tokens, const float *scores, qs_spm_merge_fn fn, void *ctx) {
    qs_strmap m;
    scored *order = malloc((n ? n : 1) * sizeof *order);
    if (!order || qs_strmap_init(&m, n)) {
        free(order);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        qs_strmap_put(&m, tokens[i], (uint32_t)strlen(tokens[i]), (int32_t)i);
        order[i] = (scored){scores[i], (int32_t)i};
    }
    qsort(order, n, sizeof *order, cmp_by_score);
    struct split {
        int32_t a, b;
        uint32_t cut;
    } sp[256];
    int rc = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        const char *t = tokens[order[k].id];
        size_t len = strlen(t), ns = 0;
        for (size_t cut = 1; cut < len && ns < 256; cut++) {
            int32_t a = qs_strmap_get(&m, t, cut), b = a >= 0 ? qs_strmap_get(&m, t + cut, len - cut) : -1;
            if (b < 0) continue;
            size_t j = ns++; /* insertion sort by (left id, right id) */
            for (; j > 0 && (sp[j - 1].a > a || (sp[j - 1].a == a && sp[j - 1].b > b)); j--) sp[j] = sp[j - 1];
            sp[j] = (struct split){a, b, (uint32_t)cut};
        }
        for (size_t j = 0; j < ns && !rc; j++) rc = fn(ctx, order[k].id, sp[j].cut, sp[j].a, sp[j].b);
    }
    free(order);
    qs_strmap_free(&m);
    return rc;
}
