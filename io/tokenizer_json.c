/* io/tokenizer_json.c - Hugging Face tokenizer.json: reading (the BPE configurations of GPT-2,
 * LLaMA-3, SmolLM, Qwen2, LLaMA-1/2 and Mistral) into a qs_tok_spec, and writing one. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "io/tokenizer_internal.h"

#define BAD(...) qs_error_set(err, QS_EUNSUPPORTED, __VA_ARGS__)
#define SPM_SPACE "\xe2\x96\x81"

static const char *type_of(json_t *o) {
    json_t *t = json_object_get(o, "type");
    return json_is_string(t) ? json_string_value(t) : "";
}

/* visits o, or each element of a Sequence */
static size_t seq_items(json_t *o, json_t **items, size_t max) {
    if (!json_is_object(o)) return 0;
    if (strcmp(type_of(o), "Sequence")) {
        items[0] = o;
        return 1;
    }
    json_t *arr = json_object_get(o, "pretokenizers");
    if (!arr) arr = json_object_get(o, "normalizers");
    if (!arr) arr = json_object_get(o, "processors");
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(arr) && n < max; i++) items[n++] = json_array_get(arr, i);
    return n;
}

static int detect(json_t *root, qs_tok_spec *s, int *space_mode, const char *fn, qs_error *err) {
    json_t *model = json_object_get(root, "model"), *pre = json_object_get(root, "pre_tokenizer"),
           *norm = json_object_get(root, "normalizer");
    json_t *items[8];
    size_t np = seq_items(pre, items, 8);
    int bytelevel = 0, bl_regex = 1, digits = 0, metaspace = 0, prepend = 0, replace = 0, nfc = 0;
    const char *split = NULL;
    for (size_t i = 0; i < np; i++) {
        const char *t = type_of(items[i]);
        if (!strcmp(t, "ByteLevel")) {
            bytelevel = 1;
            json_t *ur = json_object_get(items[i], "use_regex");
            bl_regex = !json_is_false(ur);
            if (json_is_true(json_object_get(items[i], "add_prefix_space")))
                return BAD("%s: unsupported tokenizer: ByteLevel with add_prefix_space", fn);
        } else if (!strcmp(t, "Digits") && json_is_true(json_object_get(items[i], "individual_digits"))) {
            digits = 1;
        } else if (!strcmp(t, "Split")) {
            json_t *re = json_object_get(json_object_get(items[i], "pattern"), "Regex");
            split = json_is_string(re) ? json_string_value(re) : "";
            json_t *beh = json_object_get(items[i], "behavior");
            if (json_is_true(json_object_get(items[i], "invert")) || (json_is_string(beh) && strcmp(json_string_value(beh), "Isolated")))
                return BAD("%s: unsupported tokenizer: Split other than Isolated", fn);
        } else if (!strcmp(t, "Metaspace")) {
            metaspace = 1;
            json_t *ps = json_object_get(items[i], "prepend_scheme"), *ap = json_object_get(items[i], "add_prefix_space"),
                   *rep = json_object_get(items[i], "replacement");
            if (json_is_string(ps))
                metaspace = !strcmp(json_string_value(ps), "first")    ? QS_SPACE_PREFIX_FIRST
                            : !strcmp(json_string_value(ps), "always") ? QS_SPACE_PREFIX_ALWAYS
                                                                       : -1; /* never */
            else
                metaspace = json_is_false(ap) ? -1 : QS_SPACE_PREFIX_ALWAYS; /* the older form */
            if (json_is_true(json_object_get(items[i], "split")))
                return BAD("%s: unsupported tokenizer: Metaspace with split", fn);
            if (json_is_string(rep) && strcmp(json_string_value(rep), SPM_SPACE))
                return BAD("%s: unsupported tokenizer: Metaspace replacement '%s'", fn, json_string_value(rep));
        } else {
            return BAD("%s: unsupported tokenizer: pre_tokenizer type '%s'", fn, t);
        }
    }
    np = seq_items(norm, items, 8);
    for (size_t i = 0; i < np; i++) {
        const char *t = type_of(items[i]);
        json_t *p = json_object_get(items[i], "prepend");
        json_t *pat = json_object_get(json_object_get(items[i], "pattern"), "String"), *con = json_object_get(items[i], "content");
        if (!strcmp(t, "Prepend") && json_is_string(p) && !strcmp(json_string_value(p), SPM_SPACE)) prepend = 1;
        else if (!strcmp(t, "Replace") && json_is_string(pat) && !strcmp(json_string_value(pat), " ") && json_is_string(con) &&
                 !strcmp(json_string_value(con), SPM_SPACE))
            replace = 1;
        else if (!strcmp(t, "Replace")) return BAD("%s: unsupported tokenizer: normalizer Replace other than ' ' -> U+2581", fn);
        else if (!strcmp(t, "NFC")) nfc = 1;
        else return BAD("%s: unsupported tokenizer: normalizer type '%s'", fn, t);
    }
    if (strcmp(type_of(model), "BPE")) return BAD("%s: unsupported tokenizer: model type '%s' (qstream reads BPE)", fn, type_of(model));
    if (bytelevel) {
        s->kind = QS_TOK_BPE_BYTELEVEL;
        if (split) {
            if (!strcmp(split, qs_tok_pre_regex(QS_TOK_PRE_LLAMA3)) && !nfc) s->pre = QS_TOK_PRE_LLAMA3;
            else if (!strcmp(split, qs_tok_pre_regex(QS_TOK_PRE_QWEN2))) s->pre = QS_TOK_PRE_QWEN2;
            else return BAD("%s: unsupported tokenizer: Split regex '%.60s'", fn, split);
        } else if (!bl_regex) {
            return BAD("%s: unsupported tokenizer: ByteLevel without a regex", fn);
        } else {
            s->pre = digits ? QS_TOK_PRE_SMOLLM : QS_TOK_PRE_GPT2;
        }
        if (nfc && s->pre != QS_TOK_PRE_QWEN2) return BAD("%s: unsupported tokenizer: NFC with this pre-tokenizer", fn);
    } else if (metaspace || replace || json_is_true(json_object_get(model, "byte_fallback"))) {
        s->kind = QS_TOK_BPE_SPM;
        s->pre = QS_TOK_PRE_NONE;
        if (metaspace && (prepend || replace))
            return BAD("%s: unsupported tokenizer: both a Metaspace pre-tokenizer and a Prepend/Replace normalizer", fn);
        if (!metaspace && !replace) return BAD("%s: unsupported tokenizer: byte-fallback BPE without U+2581 for spaces", fn);
        *space_mode = metaspace ? (metaspace < 0 ? QS_SPACE_PREFIX_NONE : metaspace) : prepend ? QS_SPACE_PREFIX_EVERY : QS_SPACE_PREFIX_NONE;
        s->add_space_prefix = *space_mode != QS_SPACE_PREFIX_NONE;
    } else {
        return BAD("%s: unsupported tokenizer: BPE without ByteLevel or SentencePiece normalization", fn);
    }
    return 0;
}

/* LLaMA-style post-processor: TemplateProcessing whose single sequence starts with a special token */
static const char *bos_of(json_t *pp) {
    json_t *items[4];
    size_t n = seq_items(pp, items, 4);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(type_of(items[i]), "TemplateProcessing")) continue;
        json_t *first = json_array_get(json_object_get(items[i], "single"), 0);
        json_t *id = json_object_get(json_object_get(first, "SpecialToken"), "id");
        if (json_is_string(id)) return json_string_value(id);
    }
    return NULL;
}

/* tokenizer.json text as a spec, then a tokenizer in *out (out non-NULL) or the spec handed to
 * visit (the spec's strings live in the JSON until visit returns) */
static int parse_json(qs_tokenizer **out, qs_tok_spec_fn visit, void *ctx, const char *text, size_t len, const char *fn,
                      qs_error *err) {
    if (out) *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    if (!root) return qs_error_set(err, QS_EFORMAT, "%s: not valid JSON (line %d: %s)", fn, je.line, je.text);
    qs_tok_spec s;
    memset(&s, 0, sizeof s);
    s.bos_id = s.eos_id = s.unk_id = -1;
    int space_mode = QS_SPACE_PREFIX_NONE;
    int rc = json_is_object(root) ? detect(root, &s, &space_mode, fn, err) : qs_error_set(err, QS_EFORMAT, "%s: not a JSON object", fn);
    json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab"),
           *merges = json_object_get(model, "merges"), *added = json_object_get(root, "added_tokens");
    if (!rc && (!json_is_object(vocab) || !json_is_array(merges)))
        rc = qs_error_set(err, QS_EFORMAT, "%s: model.vocab (object) and model.merges (array) are required", fn);
    size_t n = 0;
    const char *k;
    json_t *v;
    if (!rc) {
        json_object_foreach(vocab, k, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24)) {
                rc = qs_error_set(err, QS_EFORMAT, "%s: vocab entry '%.40s' has a bad id", fn, k);
                break;
            }
            if ((size_t)json_integer_value(v) + 1 > n) n = (size_t)json_integer_value(v) + 1;
        }
        for (size_t i = 0; !rc && i < json_array_size(added); i++) {
            json_t *id = json_object_get(json_array_get(added, i), "id");
            if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24) ||
                !json_is_string(json_object_get(json_array_get(added, i), "content")))
                rc = qs_error_set(err, QS_EFORMAT, "%s: added_tokens[%zu] is malformed", fn, i);
            else if ((size_t)json_integer_value(id) + 1 > n) n = (size_t)json_integer_value(id) + 1;
        }
    }
    const char **tokens = calloc(n ? n : 1, sizeof *tokens);
    int32_t *types = calloc(n ? n : 1, sizeof *types);
    const char **mstr = calloc(json_array_size(merges) + 1, sizeof *mstr);
    char **owned = calloc(json_array_size(merges) + 1, sizeof *owned);
    if (!rc && (!tokens || !types || !mstr || !owned)) rc = qs_error_set(err, -ENOMEM, "out of memory");
    if (!rc) {
        json_object_foreach(vocab, k, v) {
            size_t id = (size_t)json_integer_value(v);
            if (tokens[id]) {
                rc = qs_error_set(err, QS_EFORMAT, "%s: id %zu is used by two vocab entries", fn, id);
                break;
            }
            tokens[id] = k;
            types[id] = 1;
        }
        for (size_t i = 0; !rc && i < json_array_size(added); i++) {
            json_t *a = json_array_get(added, i);
            size_t id = (size_t)json_integer_value(json_object_get(a, "id"));
            tokens[id] = json_string_value(json_object_get(a, "content"));
            types[id] = json_is_true(json_object_get(a, "special")) ? 3 : 4;
        }
        for (size_t i = 0; !rc && i < n; i++)
            if (!tokens[i]) rc = qs_error_set(err, QS_EFORMAT, "%s: no token has id %zu", fn, i);
    }
    for (size_t i = 0; !rc && i < json_array_size(merges); i++) {
        json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            mstr[i] = json_string_value(m);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            const char *a = json_string_value(json_array_get(m, 0)), *b = json_string_value(json_array_get(m, 1));
            owned[i] = malloc(strlen(a) + strlen(b) + 2);
            if (!owned[i]) rc = qs_error_set(err, -ENOMEM, "out of memory");
            else sprintf(owned[i], "%s %s", a, b), mstr[i] = owned[i];
        } else {
            rc = qs_error_set(err, QS_EFORMAT, "%s: merges[%zu] is malformed", fn, i);
        }
    }
    if (!rc) {
        s.n_tokens = n, s.tokens = tokens, s.types = types;
        s.n_merges = json_array_size(merges), s.merges = mstr;
        const char *bos = bos_of(json_object_get(root, "post_processor"));
        for (size_t i = 0; bos && i < n; i++)
            if (!strcmp(tokens[i], bos)) s.bos_id = (int32_t)i, s.add_bos = 1;
        json_t *unk = json_object_get(model, "unk_token");
        for (size_t i = 0; json_is_string(unk) && i < n; i++)
            if (!strcmp(tokens[i], json_string_value(unk))) s.unk_id = (int32_t)i;
        if (!out) {
            rc = visit(&s, ctx, err);
        } else {
            rc = qs_tokenizer_from_spec(out, &s, err);
            if (rc) qs_error_prefix(err, "%s", fn);
        }
        if (!rc && out && json_is_true(json_object_get(model, "ignore_merges"))) (*out)->ignore_merges = 1;
        if (!rc && out && s.kind == QS_TOK_BPE_SPM) {
            (*out)->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
            (*out)->add_space_prefix = space_mode;
        }
    }
    for (size_t i = 0; owned && i < json_array_size(merges); i++) free(owned[i]);
    free(owned);
    free(mstr);
    free(tokens);
    free(types);
    json_decref(root);
    return rc;
}

int qs_tokenizer_parse_json(qs_tokenizer **out, const char *text, size_t len, const char *fn, qs_error *err) {
    return parse_json(out, NULL, NULL, text, len, fn, err);
}

static int load_spm_model(qs_tokenizer **out, const char *file, qs_error *err) {
    qs_tok_spm_model *m;
    qs_tok_spec spec;
    QS_FORWARD_IF_ERROR(qs_tok_spm_model_load(&m, &spec, file, err));
    int rc = qs_tokenizer_from_spec(out, &spec, err);
    if (rc) qs_error_prefix(err, "%s", file);
    qs_tok_spm_model_free(m);
    return rc;
}

int qs_tokenizer_load(qs_tokenizer **out, const char *path, qs_error *err) {
    *out = NULL;
    size_t n = strlen(path);
    if (n >= 6 && !strcmp(path + n - 6, ".model")) return load_spm_model(out, path, err);
    char *file = qs_path_or_default(path, ".json", "tokenizer.json"), *text;
    if (file && access(file, F_OK) != 0 && strcmp(file, path)) { /* a directory with only tokenizer.model */
        char *model = qs_path_join(path, "tokenizer.model");
        if (model && access(model, F_OK) == 0) {
            free(file);
            int rc = load_spm_model(out, model, err);
            free(model);
            return rc;
        }
        free(model);
    }
    size_t len;
    int rc = file ? qs_file_read_all(file, 512u << 20, &text, &len, err) : qs_error_set(err, -ENOMEM, "out of memory");
    if (!rc) {
        rc = qs_tokenizer_parse_json(out, text, len, file, err);
        free(text);
    }
    free(file);
    return rc;
}

int qs_tok_spec_visit(const char *dir, qs_tok_spec_fn visit, void *ctx, qs_error *err) {
    char *model = qs_path_join(dir, "tokenizer.model"), *file = qs_path_join(dir, "tokenizer.json"), *text = NULL;
    int rc = model && file ? 1 : qs_error_set(err, -ENOMEM, "out of memory");
    if (rc == 1 && access(model, F_OK) == 0) {
        qs_tok_spm_model *m;
        qs_tok_spec spec;
        rc = qs_tok_spm_model_load(&m, &spec, model, err);
        if (!rc) rc = visit(&spec, ctx, err);
        qs_tok_spm_model_free(m);
    } else if (rc == 1) {
        size_t len;
        rc = access(file, F_OK) ? -ENOENT : qs_file_read_all(file, 512u << 20, &text, &len, err);
        if (!rc) rc = parse_json(NULL, visit, ctx, text, len, file, err);
    }
    free(text), free(model), free(file);
    return rc;
}

/* ---- writing ---- */

static json_t *bytelevel_obj(int use_regex) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", use_regex);
}

static json_t *template_bos(const char *bos, int32_t bos_id) {
    return json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
                     "type", "TemplateProcessing",
                     "single", "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                     "pair", "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                     "SpecialToken", "id", bos, "type_id", 1, "Sequence", "id", "B", "type_id", 1,
                     "special_tokens", bos, "id", bos, "ids", bos_id, "tokens", bos);
}

/* SentencePiece vocabularies (GGUF "llama", tokenizer.model) carry scores, not merges: as Hugging
 * Face's converter does, every split of a token into two vocabulary tokens becomes a merge,
 * ordered by the merged token's score (descending, then its id), the splits of one token by
 * (left id, right id). Splits fall on byte boundaries like the converter's (on characters):
 * a piece is valid UTF-8, so a piece that ends inside a character is never in the vocabulary. */
static int append_merge(void *ctx, int32_t merged, uint32_t cut, int32_t a, int32_t b) {
    const qs_tok_spec *s = ((void **)ctx)[0];
    json_t *arr = ((void **)ctx)[1];
    (void)a, (void)b;
    const char *t = s->tokens[merged];
    size_t len = strlen(t);
    char *buf = malloc(len + 2);
    if (!buf) return -ENOMEM;
    memcpy(buf, t, cut);
    buf[cut] = ' ';
    memcpy(buf + cut + 1, t + cut, len - cut + 1);
    int rc = json_array_append_new(arr, json_string(buf)) ? -ENOMEM : 0;
    free(buf);
    return rc;
}

int qs_tok_spec_write_json(const qs_tok_spec *s, const char *path, qs_error *err) {
    json_t *root = json_object(), *added = json_array(), *vocab = json_object(), *merges = json_array();
    for (size_t i = 0; i < s->n_tokens; i++) {
        json_object_set_new(vocab, s->tokens[i], json_integer((json_int_t)i));
        int type = s->types ? s->types[i] : 1;
        if (type == 2 || type == 3 || type == 4) /* unknown and control tokens are special, user-defined ones not */
            json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (int)i, "content", s->tokens[i],
                                                   "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", type != 4));
    }
    int spm = s->kind == QS_TOK_BPE_SPM;
    if (s->n_merges)
        for (size_t i = 0; i < s->n_merges; i++) json_array_append_new(merges, json_string(s->merges[i]));
    else if (spm && s->scores && qs_spm_merges_derive(s->n_tokens, s->tokens, s->scores, append_merge, (void *[]){(void *)s, merges})) {
        json_decref(root);
        return qs_error_set(err, -ENOMEM, "out of memory");
    }
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_object_set_new(root, "added_tokens", added);
    const char *bos = s->add_bos && s->bos_id >= 0 && (size_t)s->bos_id < s->n_tokens ? s->tokens[s->bos_id] : NULL;
    if (spm) {
        json_t *norm = json_array();
        if (s->add_space_prefix) json_array_append_new(norm, json_pack("{s:s, s:s}", "type", "Prepend", "prepend", SPM_SPACE));
        json_array_append_new(norm, json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ", "content", SPM_SPACE));
        json_object_set_new(root, "normalizer", json_pack("{s:s, s:o}", "type", "Sequence", "normalizers", norm));
        json_object_set_new(root, "pre_tokenizer", json_null());
        json_t *dec = json_pack("[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]", "type", "Replace", "pattern", "String", SPM_SPACE, "content", " ",
                                "type", "ByteFallback", "type", "Fuse");
        if (s->add_space_prefix) json_array_append_new(dec, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ", "start", 1, "stop", 0));
        json_object_set_new(root, "decoder", json_pack("{s:s, s:o}", "type", "Sequence", "decoders", dec));
    } else {
        json_t *pre;
        if (s->pre == QS_TOK_PRE_SMOLLM)
            pre = json_pack("{s:s, s:[{s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type", "Digits", "individual_digits", 1, bytelevel_obj(1));
        else if (s->pre == QS_TOK_PRE_LLAMA3 || s->pre == QS_TOK_PRE_QWEN2)
            pre = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex",
                            qs_tok_pre_regex(s->pre), "behavior", "Isolated", "invert", 0, bytelevel_obj(0));
        else
            pre = bytelevel_obj(1);
        json_object_set_new(root, "normalizer", s->pre == QS_TOK_PRE_QWEN2 ? json_pack("{s:s}", "type", "NFC") : json_null());
        json_object_set_new(root, "pre_tokenizer", pre);
        json_object_set_new(root, "decoder", bytelevel_obj(1));
    }
    json_object_set_new(root, "post_processor", bos ? template_bos(bos, s->bos_id) : (spm ? json_null() : bytelevel_obj(1)));
    const char *unk = spm && s->unk_id >= 0 && (size_t)s->unk_id < s->n_tokens ? s->tokens[s->unk_id] : NULL;
    json_t *model = json_pack("{s:s, s:n, s:o, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                              "unk_token", unk ? json_string(unk) : json_null(), "continuing_subword_prefix", "end_of_word_suffix",
                              "fuse_unk", spm, "byte_fallback", spm, "ignore_merges", s->pre == QS_TOK_PRE_LLAMA3, "vocab", vocab, "merges", merges);
    json_object_set_new(root, "model", model);
    char *text = model ? json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text) return qs_error_set(err, -ENOMEM, "%s: cannot build tokenizer.json", path);
    int rc = qs_file_write_durable(path, text, strlen(text), err);
    free(text);
    return rc;
}
