/* tests/test_tokenizer.c - token ids equal the Hugging Face `tokenizers` package's, from the
 * fixtures of tests/fixtures/gen_tokenizer_ids.py:
 *  - SmolLM2 (byte-level BPE, digits split): the tokenizer.json our GGUF import wrote, the spec
 *    built straight from the GGUF metadata, and that spec written by qs_tok_spec_write_json;
 *  - Mistral-7B's real SentencePiece BPE tokenizer.model (scores, no merges; fetched from PyPI
 *    by scripts/fetch-test-tokenizers.sh): read directly, and written as tokenizer.json;
 *  - small trained tokenizers: SentencePiece-style BPE with byte fallback; byte-level BPE with
 *    the GPT-2, LLaMA-3 and Qwen2 pre-tokenizers;
 * decode(encode(x)) == x for byte-level; the tokenizer.json files we write give the same ids in
 * the Python package (when it is installed); damaged inputs fail with a message naming the file. */
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "io/gguf.h"
#include "io/gguf_vocab.h"
#include "io/tokenizer.h"
#include "tests/testutil.h"

enum { ROUNDTRIP = 1 }; /* check decode(encode(x)) == x */

static char *case_text(const char *name, size_t off, size_t n) {
    if (!strncmp(name, "hex:", 4)) {
        char *s = malloc(n + 1);
        for (size_t i = 0; s && i < n; i++) {
            unsigned v = 0;
            sscanf(name + 4 + 2 * i, "%2x", &v);
            s[i] = (char)v;
        }
        return s;
    }
    char rel[160], *data = NULL;
    snprintf(rel, sizeof rel, "data/%s", name);
    char *path = qs_test_shared_path(rel);
    size_t len;
    qs_error err = {0};
    if (qs_file_read_all(path, 1 << 24, &data, &len, &err) || off + n > len) {
        CHECKF(0, "%s: cannot read %zu+%zu: %s", path, off, n, err.msg);
        free(data);
        data = NULL;
    } else {
        memmove(data, data + off, n);
    }
    free(path);
    return data;
}

/* encodes every case of a fixture and compares the ids; returns the number of cases */
static int check_fixture(const qs_tokenizer *t, const char *fixture, const char *label, int flags) {
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
    int32_t *want = malloc(len * sizeof *want);
    for (char *line = strtok_r(text, "\n", &save); line && want; line = strtok_r(NULL, "\n", &save)) {
        char *name = line, *sp = strchr(line, ' ');
        size_t off, n, nw = 0;
        int used;
        if (!sp || sscanf(sp, " %zu %zu%n", &off, &n, &used) != 2) continue;
        *sp = 0;
        for (char *p = sp + 1 + used, *end;; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            want[nw++] = (int32_t)v;
        }
        char *data = case_text(name, off, n);
        int32_t *ids = NULL;
        size_t nid = 0;
        if (!data || qs_tokenizer_encode(t, data, n, &ids, &nid, &err) != 0) {
            CHECKF(0, "%s: cannot encode %.40s @%zu+%zu: %s", label, name, off, n, err.msg);
            free(data);
            continue;
        }
        size_t first = 0;
        while (first < nid && first < nw && ids[first] == want[first]) first++;
        CHECKF(nid == nw && first == nw, "%s: %.40s @%zu+%zu: %zu ids vs %zu expected, first difference at %zu", label,
               name, off, n, nid, nw, first);
        char *back;
        if ((flags & ROUNDTRIP) && qs_tokenizer_decode(t, ids, nid, &back, &err) == 0) {
            CHECKF(strlen(back) == n && !memcmp(back, data, n), "%s: decode(encode(x)) != x at %.40s @%zu", label, name, off);
            free(back);
        }
        free(ids);
        free(data);
        cases++;
    }
    free(want);
    free(text);
    free(path);
    return cases;
}

static int check_json_file(const char *json, const char *fixture, const char *label, int flags, int min_cases) {
    char *path = qs_path_join(getenv("QS_SRC"), json);
    qs_tokenizer *t;
    qs_error err = {0};
    int n = 0;
    CHECKF(qs_tokenizer_load(&t, json[0] == '/' ? json : path, &err) == 0, "%s: %s", label, err.msg);
    if (t) {
        n = check_fixture(t, fixture, label, flags);
        CHECKF(n >= min_cases, "%s: only %d cases", label, n);
    }
    qs_tokenizer_free(t);
    free(path);
    return n;
}

/* the Python package agrees with a tokenizer.json we wrote (skipped when it is not installed) */
static void check_in_python(const char *json, const char *fixture) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/fixtures/check_tokenizer_json.py' '%s' '%s/%s' '%s/data'", getenv("QS_SRC"),
             json, getenv("QS_SRC"), fixture, qs_test_shared());
    int rc = system(cmd);
    int status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    CHECKF(status == 0 || status == 77, "%s: the Python tokenizers package gives other ids (exit %d)", json, status);
}

static void throughput(const qs_tokenizer *t, const char *label) {
    char *wt = qs_test_shared_path("data/wikitext2-test.raw.txt"), *text;
    size_t len, nid;
    int32_t *ids;
    qs_error err = {0};
    CHECK(qs_file_read_all(wt, 1 << 24, &text, &len, &err) == 0);
    double t0 = qs_now();
    CHECK(qs_tokenizer_encode(t, text, len, &ids, &nid, &err) == 0);
    double dt = qs_now() - t0;
    printf("%s: wikitext2-test %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", label, len, nid, dt, len / 1e6 / dt);
    free(ids);
    free(text);
    free(wt);
}

static void expect_bad_bytes(const char *dir, const char *name, const void *data, size_t len) {
    char *p = qs_path_join(dir, name);
    qs_error err = {0};
    qs_file_write_durable(p, data, len, &err);
    qs_tokenizer *t;
    CHECKF(qs_tokenizer_load(&t, p, &err) != 0, "%s accepted", name);
    CHECKF(strstr(err.msg, name) != NULL, "%s: message lacks the file name: %s", name, err.msg);
    qs_tokenizer_free(t);
    free(p);
}

static void expect_bad(const char *dir, const char *name, const char *json) { expect_bad_bytes(dir, name, json, strlen(json)); }

static void smollm2(const char *tmp) {
    qs_error err = {0};
    qs_tokenizer *t;
    const char *smol = qs_test_smollm_dir();
    CHECKF(qs_tokenizer_load(&t, smol, &err) == 0, "%s", err.msg);
    if (t) {
        check_fixture(t, "tests/fixtures/smollm2_ids.txt", "smollm2 tokenizer.json", ROUNDTRIP);
        throughput(t, "smollm2");
        qs_tokenizer_free(t);
    }
    /* the same tokenizer built straight from the GGUF metadata, and written back as JSON */
    char *gguf_path = qs_path_join(getenv("QS_SRC"), ".cache/SmolLM2-135M-Instruct.Q4_1.gguf");
    qs_gguf *g;
    if (qs_gguf_open(&g, gguf_path, &err) == 0) {
        qs_tok_spec spec;
        CHECKF(qs_gguf_tok_spec_load(g, gguf_path, &spec, &err) == 0, "%s", err.msg);
        CHECK(spec.kind == QS_TOK_BPE_BYTELEVEL && spec.pre == QS_TOK_PRE_SMOLLM && spec.n_tokens == 49152);
        CHECKF(qs_tokenizer_from_spec(&t, &spec, &err) == 0, "%s", err.msg);
        if (t) check_fixture(t, "tests/fixtures/smollm2_ids.txt", "smollm2 from GGUF", ROUNDTRIP);
        qs_tokenizer_free(t);
        char *json = qs_path_join(tmp, "smollm2-written.json");
        CHECKF(qs_tok_spec_write_json(&spec, json, &err) == 0, "%s", err.msg);
        check_json_file(json, "tests/fixtures/smollm2_ids.txt", "smollm2 spec -> JSON", ROUNDTRIP, 30);
        check_in_python(json, "tests/fixtures/smollm2_ids.txt");
        free(json);
        qs_gguf_tok_spec_free(&spec);
        qs_gguf_free(g);
    } else {
        CHECKF(0, "%s", err.msg);
    }
    free(gguf_path);
}

/* Mistral-7B's tokenizer.model: merges ranked by score (read directly), and the merges derived
 * from the scores in the tokenizer.json we write */
static void mistral(const char *tmp) {
    qs_error err = {0};
    char *model = qs_path_join(getenv("QS_SRC"), ".cache/mistral-spm/tokenizer.model");
    if (access(model, F_OK) != 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "bash '%s/scripts/fetch-test-tokenizers.sh' '%s/.cache'", getenv("QS_SRC"), getenv("QS_SRC"));
        if (system(cmd) != 0) fprintf(stderr, "fetch-test-tokenizers.sh failed\n");
    }
    qs_tok_spm_model *store;
    qs_tok_spec spec;
    if (qs_tok_spm_model_load(&store, &spec, model, &err) != 0) {
        CHECKF(0, "%s (scripts/fetch-test-tokenizers.sh fetches it)", err.msg);
        free(model);
        return;
    }
    CHECK(spec.kind == QS_TOK_BPE_SPM && spec.n_tokens == 32000 && spec.bos_id == 1 && spec.add_bos && spec.add_space_prefix);
    qs_tokenizer *t;
    CHECKF(qs_tokenizer_load(&t, model, &err) == 0, "%s", err.msg);
    if (t) {
        int n = check_fixture(t, "tests/fixtures/mistral_ids.txt", "mistral tokenizer.model", 0);
        CHECKF(n >= 30, "only %d cases", n);
        throughput(t, "mistral (merges by score)");
        const char *odd = "caf\xc3\xa9 \xe2\x82\xac 42 \xf0\x9f\x98\x80!  x"; /* an emoji through byte fallback */
        int32_t *ids;
        size_t nid;
        char *back = NULL;
        CHECK(qs_tokenizer_encode(t, odd, strlen(odd), &ids, &nid, &err) == 0);
        CHECK(qs_tokenizer_decode(t, ids, nid, &back, &err) == 0 && back && !strcmp(back, odd));
        free(back);
        free(ids);
        qs_tokenizer_free(t);
    }
    char *json = qs_path_join(tmp, "mistral-written.json");
    double t0 = qs_now();
    CHECKF(qs_tok_spec_write_json(&spec, json, &err) == 0, "%s", err.msg);
    printf("mistral: tokenizer.json with merges derived from scores written in %.2f s\n", qs_now() - t0);
    check_json_file(json, "tests/fixtures/mistral_ids.txt", "mistral spec -> JSON", 0, 30);
    check_in_python(json, "tests/fixtures/mistral_ids.txt");
    free(json);
    qs_tok_spm_model_free(store);
    free(model);
}

static void corrupt(const char *dir) {
    expect_bad(dir, "notjson.json", "{\"model\": ");
    expect_bad(dir, "array.json", "[]");
    expect_bad(dir, "nomodel.json", "{\"pre_tokenizer\": null}");
    expect_bad(dir, "unigram.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    expect_bad(dir, "novocab.json", "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"merges\": []}}");
    expect_bad(dir, "badmerge.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a zz\"]}}");
    expect_bad(dir, "mergeresult.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", \"b\"]]}}");
    expect_bad(dir, "mergeshape.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\"]]}}");
    expect_bad(dir, "dupid.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}");
    expect_bad(dir, "hole.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 5}, \"merges\": []}}");
    expect_bad(dir, "negid.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": -1}, \"merges\": []}}");
    expect_bad(dir, "hugeid.json",
               "{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 4000000000}, \"merges\": []}}");
    expect_bad(dir, "addedid.json",
               "{\"added_tokens\": [{\"id\": 99999999, \"content\": \"x\"}], \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, "
               "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_bad(dir, "wordpiece.json",
               "{\"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}");
    expect_bad(dir, "splitre.json",
               "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    expect_bad(dir, "nfkc.json",
               "{\"normalizer\": {\"type\": \"NFKC\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    /* the unsupported-type message names the type */
    qs_tokenizer *t;
    qs_error err = {0};
    const char *wp = "{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
    CHECK(qs_tokenizer_parse_json(&t, wp, strlen(wp), "x.json", &err) == QS_EUNSUPPORTED);
    CHECKF(strstr(err.msg, "x.json: unsupported tokenizer: pre_tokenizer type 'Whitespace'"), "%s", err.msg);
    /* truncations of a real tokenizer.json */
    char *sm = qs_path_join(getenv("QS_SRC"), "tests/fixtures/llama3_tokenizer.json"), *text;
    size_t len;
    if (qs_file_read_all(sm, 1 << 26, &text, &len, &err) == 0) {
        for (size_t cut = 1; cut < len; cut += len / 7) {
            char name[64];
            snprintf(name, sizeof name, "truncated-%zu.json", cut);
            expect_bad_bytes(dir, name, text, cut);
        }
        free(text);
    }
    free(sm);
    /* SentencePiece models: not a protobuf, truncated, a unigram model */
    expect_bad(dir, "garbage.model", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
    expect_bad_bytes(dir, "empty.model", "", 0);
    char *model = qs_path_join(getenv("QS_SRC"), ".cache/mistral-spm/tokenizer.model");
    if (qs_file_read_all(model, 1 << 26, &text, &len, &err) == 0) {
        expect_bad_bytes(dir, "cut.model", text, len / 3);
        /* pieces only, then a trainer_spec saying model_type 1 (unigram) */
        char buf[64] = {0x0a, 0x05, 0x0a, 0x01, 'a', 0x18, 0x01, 0x12, 0x02, 0x18, 0x01};
        expect_bad_bytes(dir, "unigram.model", buf, 11);
        free(text);
    }
    free(model);
}

/* Qwen2's NFC: added tokens are matched in the raw text, then each segment is normalized (here
 * '>' + U+0338 would compose to U+226F); NUL bytes survive normalization. Ids from `tokenizers`. */
static void qwen2_nfc(void) {
    static const struct {
        const char *s;
        size_t len;
        int32_t want[12];
        size_t n;
    } cases[] = {
        {"<|endoftext|>\xcc\xb8x", 16, {0, 138, 118, 89}, 4},
        {"a\0b e\xcc\x81\0\xcc\xb8", 10, {66, 190, 67, 222, 129, 104, 190, 138, 118}, 9},
    };
    char *p = qs_path_join(getenv("QS_SRC"), "tests/fixtures/qwen2_tokenizer.json");
    qs_tokenizer *t;
    qs_error err = {0};
    CHECKF(qs_tokenizer_load(&t, p, &err) == 0, "%s", err.msg);
    for (size_t c = 0; t && c < sizeof cases / sizeof *cases; c++) {
        int32_t *ids = NULL;
        size_t n = 0;
        CHECK(qs_tokenizer_encode(t, cases[c].s, cases[c].len, &ids, &n, &err) == 0);
        CHECKF(n == cases[c].n && ids && !memcmp(ids, cases[c].want, n * sizeof *ids), "qwen2 NFC case %zu: %zu ids", c, n);
        free(ids);
    }
    qs_tokenizer_free(t);
    free(p);
}

int main(void) {
    char *tmp = qs_test_tmpdir("tokenizer");
    smollm2(tmp);
    mistral(tmp);
    /* small trained tokenizers */
    check_json_file("tests/fixtures/spm_tokenizer.json", "tests/fixtures/spm_ids.txt", "spm (trained)", 0, 30);
    check_json_file("tests/fixtures/gpt2_tokenizer.json", "tests/fixtures/gpt2_ids.txt", "gpt2 (trained)", ROUNDTRIP, 30);
    check_json_file("tests/fixtures/llama3_tokenizer.json", "tests/fixtures/llama3_ids.txt", "llama3 (trained)", 0, 30);
    check_json_file("tests/fixtures/qwen2_tokenizer.json", "tests/fixtures/qwen2_ids.txt", "qwen2 (trained)", 0, 30);
    qs_tokenizer *t;
    qs_error err = {0};
    char *p = qs_path_join(getenv("QS_SRC"), "tests/fixtures/llama3_tokenizer.json");
    CHECKF(qs_tokenizer_load(&t, p, &err) == 0, "%s", err.msg);
    if (t) {
        CHECK(qs_tokenizer_bos(t) == 0);
        int32_t *ids;
        size_t n;
        char *back = NULL;
        const char *s = "I'M here\n\n  123456 caf\xc3\xa9";
        CHECK(qs_tokenizer_encode(t, s, strlen(s), &ids, &n, &err) == 0 && n > 2 && ids[0] == 0);
        CHECK(qs_tokenizer_decode(t, ids, n, &back, &err) == 0 && back && !strcmp(back, s));
        free(back);
        free(ids);
        qs_tokenizer_free(t);
    }
    free(p);
    qwen2_nfc();
    corrupt(tmp);
    free(tmp);
    return qs_test_result();
}
