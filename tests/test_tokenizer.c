/* tests/test_tokenizer.c - token ids equal the Hugging Face `tokenizers` package's, from the
 * fixtures of tests/fixtures/gen_tokenizer_ids.py: SmolLM2 (byte-level BPE, digits split; the
 * tokenizer.json our GGUF import wrote, and the same spec built straight from the GGUF metadata)
 * and a SentencePiece-style BPE with byte fallback; decode(encode(x)) == x; damaged
 * tokenizer.json files fail with a message naming the file. */
#include <stdint.h>
#include <string.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "io/gguf.h"
#include "io/gguf_vocab.h"
#include "io/tokenizer.h"
#include "tests/testutil.h"

static int check_fixture(const qs_tokenizer *t, const char *fixture, const char *label) {
    char *path = qs_path_join(getenv("QS_SRC"), fixture), *text;
    size_t len;
    qs_error err = {0};
    if (qs_file_read_all(path, 1 << 24, &text, &len, &err)) {
        CHECKF(0, "%s", err.msg);
        free(path);
        return 0;
    }
    int cases = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[128];
        size_t off, n;
        int used;
        if (sscanf(line, "%127s %zu %zu%n", name, &off, &n, &used) != 3) continue;
        static int32_t want[40000];
        size_t nw = 0;
        for (char *p = line + used; *p && nw < 40000;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            want[nw++] = (int32_t)v;
            p = end;
        }
        char rel[160], *data;
        snprintf(rel, sizeof rel, "data/%s", name);
        char *data_path = qs_test_shared_path(rel);
        size_t dlen;
        CHECK(qs_file_read_all(data_path, 1 << 24, &data, &dlen, &err) == 0);
        int32_t *ids = NULL;
        size_t nid = 0;
        if (off + n > dlen || qs_tokenizer_encode(t, data + off, n, &ids, &nid, &err) != 0) {
            CHECKF(0, "%s: cannot encode %s @%zu+%zu: %s", label, name, off, n, err.msg);
            free(data);
            free(data_path);
            continue;
        }
        size_t first = 0;
        while (first < nid && first < nw && ids[first] == want[first]) first++;
        CHECKF(nid == nw && first == nw, "%s: %s @%zu+%zu: %zu ids vs %zu expected, first difference at %zu", label, name,
               off, n, nid, nw, first);
        /* byte-level BPE loses nothing: decoding gives the text back (SentencePiece-style text
         * with "<unk>" in it does not: the normalizer prepends U+2581 after a special token) */
        char *back;
        if (!strncmp(label, "smollm2", 7) && qs_tokenizer_decode(t, ids, nid, &back, &err) == 0) {
            CHECKF(strlen(back) == n && !memcmp(back, data + off, n), "%s: decode(encode(x)) != x at %s @%zu", label, name, off);
            free(back);
        }
        free(ids);
        free(data);
        free(data_path);
        cases++;
    }
    free(text);
    free(path);
    return cases;
}

static void expect_bad(const char *dir, const char *name, const char *json) {
    char *p = qs_path_join(dir, name);
    qs_error err = {0};
    qs_file_write_durable(p, json, strlen(json), &err);
    qs_tokenizer *t;
    CHECKF(qs_tokenizer_load(&t, p, &err) != 0, "%s accepted", name);
    CHECKF(strstr(err.msg, name) != NULL, "%s: message lacks the file name: %s", name, err.msg);
    free(p);
}

int main(void) {
    qs_error err = {0};
    const char *smol = qs_test_smollm_dir();
    qs_tokenizer *t;
    CHECKF(qs_tokenizer_load(&t, smol, &err) == 0, "%s", err.msg);
    if (t) {
        int n = check_fixture(t, "tests/fixtures/smollm2_ids.txt", "smollm2 tokenizer.json");
        CHECKF(n >= 20, "only %d cases", n);
        /* throughput on the whole test file (printed, not asserted) */
        char *wt = qs_test_shared_path("data/wikitext2-test.raw.txt"), *text;
        size_t len, nid;
        int32_t *ids;
        qs_file_read_all(wt, 1 << 24, &text, &len, &err);
        double t0 = qs_now();
        CHECK(qs_tokenizer_encode(t, text, len, &ids, &nid, &err) == 0);
        printf("smollm2: %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", len, nid, qs_now() - t0, len / 1e6 / (qs_now() - t0));
        free(ids);
        free(text);
        free(wt);
        qs_tokenizer_free(t);
    }
    /* the same tokenizer built straight from the GGUF metadata */
    char gguf_path[4096];
    snprintf(gguf_path, sizeof gguf_path, "%s/.cache/SmolLM2-135M-Instruct.Q4_1.gguf", getenv("QS_SRC"));
    qs_gguf *g;
    if (qs_gguf_open(&g, gguf_path, &err) == 0) {
        qs_tok_spec spec;
        CHECKF(qs_gguf_tok_spec_load(g, gguf_path, &spec, &err) == 0, "%s", err.msg);
        CHECK(spec.kind == QS_TOK_BPE_BYTELEVEL && spec.pre == QS_TOK_PRE_SMOLLM && spec.n_tokens == 49152);
        CHECKF(qs_tokenizer_from_spec(&t, &spec, &err) == 0, "%s", err.msg);
        if (t) {
            check_fixture(t, "tests/fixtures/smollm2_ids.txt", "smollm2 from GGUF");
            qs_tokenizer_free(t);
        }
        qs_gguf_tok_spec_free(&spec);
        qs_gguf_free(g);
    } else {
        CHECKF(0, "%s", err.msg);
    }
    /* SentencePiece-style BPE with byte fallback and BOS */
    char *spm = qs_path_join(getenv("QS_SRC"), "tests/fixtures/spm_tokenizer.json");
    CHECKF(qs_tokenizer_load(&t, spm, &err) == 0, "%s", err.msg);
    if (t) {
        CHECK(qs_tokenizer_bos(t) == 1);
        int n = check_fixture(t, "tests/fixtures/spm_ids.txt", "spm");
        CHECK(n >= 20);
        int32_t *ids;
        size_t nid;
        const char *odd = "caf\xc3\xa9 \xe2\x82\xac 42 \xf0\x9f\x98\x80!"; /* characters outside the small vocabulary */
        CHECK(qs_tokenizer_encode(t, odd, strlen(odd), &ids, &nid, &err) == 0);
        char *back;
        CHECK(qs_tokenizer_decode(t, ids, nid, &back, &err) == 0 && !strcmp(back, odd));
        free(back);
        free(ids);
        qs_tokenizer_free(t);
    }
    free(spm);

    char *dir = qs_test_tmpdir("tokenizer");
    expect_bad(dir, "notjson.json", "{\"model\": ");
    expect_bad(dir, "array.json", "[]");
    expect_bad(dir, "nomodel.json", "{\"pre_tokenizer\": null}");
    expect_bad(dir, "unigram.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    expect_bad(dir, "badmerge.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a zz\"]}}");
    expect_bad(dir, "dupid.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}");
    expect_bad(dir, "hole.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 5}, \"merges\": []}}");
    expect_bad(dir, "wordpiece.json",
               "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}");
    char *sm = qs_path_join(smol, "tokenizer.json"), *text;
    size_t len;
    if (qs_file_read_all(sm, 1 << 26, &text, &len, &err) == 0) {
        for (size_t cut = 1; cut < len; cut += len / 7) {
            char name[64];
            snprintf(name, sizeof name, "truncated-%zu.json", cut);
            char saved = text[cut];
            text[cut] = 0;
            expect_bad(dir, name, text);
            text[cut] = saved;
        }
        free(text);
    }
    free(sm);
    free(dir);
    return qs_test_result();
}
