/* tests/test_import_gguf.c - qs_import_gguf on tiny llama GGUF files written by
 * tests/gguf_writer.h: config.json, tokenizer.json and model.safetensors (HF names and shapes,
 * values exact, Q/K rows un-permuted from the interleaved-RoPE layout), and refusals that leave
 * nothing behind (other architecture, missing / unknown / misshapen tensors, a sharded index
 * in the output directory). */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "model/import_gguf.h"
#include "tests/gguf_writer.h"
#include "tests/testutil.h"

enum { H = 32, NH = 4, NKV = 2, HD = 8, FF = 64, NL = 2, V = 8, MAXT = 40 };

typedef struct fixture {
    const char *arch;
    int untied, bias, drop_ffn_up1, bad_shape, extra_tensor; /* bias 1: q/k/v, 2: and the output (refused) */
} fixture;

static gw_tensor ts[MAXT];
static float *data[MAXT];
static int nt;

/* a tensor whose element i is 10000 * index + i (exact in float); Q8_0 for the embedding */
static void add(const char *name, uint64_t ne0, uint64_t ne1, int nd) {
    static char names[MAXT][64];
    snprintf(names[nt], sizeof names[nt], "%s", name);
    size_t n = ne0 * ne1;
    data[nt] = malloc(n * sizeof(float) + 64);
    gw_tensor *t = &ts[nt];
    *t = (gw_tensor){names[nt], nd, {ne0, ne1}, QS_GGML_F32, data[nt], n * sizeof(float)};
    if (!strcmp(name, "token_embd.weight")) { /* Q8_0 with d = 1: values (i % 200) - 100 */
        uint8_t *q = (uint8_t *)data[nt];
        for (size_t b = 0; b < n / 32; b++) {
            q[34 * b] = 0x00, q[34 * b + 1] = 0x3c;
            for (int j = 0; j < 32; j++) q[34 * b + 2 + j] = (uint8_t)(int8_t)((b * 32 + j) % 200 - 100);
        }
        t->type = QS_GGML_Q8_0;
        t->nbytes = n / 32 * 34;
    } else {
        for (size_t i = 0; i < n; i++) data[nt][i] = (float)(10000 * nt + (int)i);
    }
    nt++;
}

static float expect_at(int ti, size_t i) {
    if (ts[ti].type == QS_GGML_Q8_0) return (float)((int)(i % 200) - 100);
    return (float)(10000 * ti + (int)i);
}

static void build(gw *img, const fixture *f) {
    gw m = {0};
    gw_kv_str(&m, "general.architecture", f->arch);
    gw_kv_u32(&m, "llama.embedding_length", H);
    gw_kv_u32(&m, "llama.feed_forward_length", FF);
    gw_kv_u32(&m, "llama.block_count", NL);
    gw_kv_u32(&m, "llama.attention.head_count", NH);
    gw_kv_u32(&m, "llama.attention.head_count_kv", NKV);
    gw_kv_u32(&m, "llama.context_length", 256);
    gw_kv_u32(&m, "llama.rope.dimension_count", HD);
    gw_kv_f32(&m, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
    gw_kv_f32(&m, "llama.rope.freq_base", 50000.0f);
    gw_kv_str(&m, "tokenizer.ggml.model", "llama");
    const char *toks[V] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", ("\xe2\x96\x81" "a"), ("\xe2\x96\x81" "b")};
    gw_kv_strs(&m, "tokenizer.ggml.tokens", toks, V);
    gw_kv_arr_hdr(&m, "tokenizer.ggml.scores", QS_GGUF_F32, V);
    float sc[V] = {0, 0, 0, -1, -2, -3, -4, -5};
    gw_put(&m, sc, sizeof sc);
    gw_kv_arr_hdr(&m, "tokenizer.ggml.token_type", QS_GGUF_I32, V);
    int32_t ty[V] = {2, 3, 3, 1, 1, 1, 1, 1};
    gw_put(&m, ty, sizeof ty);
    gw_kv_u32(&m, "tokenizer.ggml.bos_token_id", 1);
    gw_kv_u32(&m, "tokenizer.ggml.eos_token_id", 2);
    gw_kv_u32(&m, "tokenizer.ggml.unknown_token_id", 0);
    for (int i = 0; i < nt; i++) free(data[i]);
    nt = 0;
    add("token_embd.weight", H, V, 2);
    for (int l = 0; l < NL; l++) {
        char n[64];
#define T(kind, ne0, ne1, nd) (snprintf(n, sizeof n, "blk.%d.%s", l, kind), add(n, ne0, ne1, nd))
        T("attn_norm.weight", H, 1, 1);
        T("attn_q.weight", H, NH * HD, 2);
        T("attn_k.weight", H, NKV * HD, 2);
        T("attn_v.weight", H, NKV * HD, 2);
        T("attn_output.weight", NH * HD, f->bad_shape && l == 1 ? H + 32 : H, 2);
        if (f->bias) {
            T("attn_q.bias", NH * HD, 1, 1);
            T("attn_k.bias", NKV * HD, 1, 1);
            T("attn_v.bias", NKV * HD, 1, 1);
            if (f->bias == 2) T("attn_output.bias", H, 1, 1); /* refused: the model has none */
        }
        T("ffn_norm.weight", H, 1, 1);
        T("ffn_gate.weight", H, FF, 2);
        if (!(f->drop_ffn_up1 && l == 1)) T("ffn_up.weight", H, FF, 2);
        T("ffn_down.weight", FF, H, 2);
#undef T
    }
    add("output_norm.weight", H, 1, 1);
    if (f->untied) add("output.weight", H, V, 2);
    if (f->extra_tensor) add("blk.0.attn_qkv.weight", H, 3 * H, 2);
    gw_file(img, 3, &m, ts, (size_t)nt, 32, NULL);
    free(m.p);
}

/* HF row of a Q/K projection -> stored (GGUF) row */
static int stored_row(int hf_row) {
    int h = hf_row / HD, i = hf_row % HD;
    return h * HD + (i < HD / 2 ? 2 * i : 2 * (i - HD / 2) + 1);
}

static void check_output(const char *out, const fixture *f) {
    qs_error err = {0};
    qs_model_config c;
    CHECKF(qs_config_load(&c, out, &err) == 0, "%s", err.msg);
    CHECK(c.hidden_size == H && c.intermediate_size == FF && c.n_layers == NL && c.n_heads == NH && c.n_kv_heads == NKV);
    CHECK(c.head_dim == HD && c.vocab_size == V && c.max_position_embeddings == 256 && c.rms_eps == 1e-6f && c.rope_theta == 50000.0f);
    CHECK(c.tie_word_embeddings == !f->untied && c.attention_bias == f->bias && c.bos_token_id == 1 && c.eos_token_id == 2);
    qs_catalog *cat;
    CHECKF(qs_catalog_open(&cat, out, &err) == 0, "%s", err.msg);
    if (!cat) return;
    CHECKF(qs_catalog_count(cat) == (size_t)nt, "%zu tensors, want %d", qs_catalog_count(cat), nt);
    static const char *hf[][2] = {{"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"}, {"attn_k", "self_attn.k_proj"},
                                  {"attn_v", "self_attn.v_proj"}, {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
                                  {"ffn_gate", "mlp.gate_proj"}, {"ffn_up", "mlp.up_proj"}, {"ffn_down", "mlp.down_proj"}};
    for (int ti = 0; ti < nt; ti++) {
        char name[128];
        int l = -1, rope = 0;
        const char *g = ts[ti].name;
        if (!strcmp(g, "token_embd.weight")) snprintf(name, sizeof name, "model.embed_tokens.weight");
        else if (!strcmp(g, "output_norm.weight")) snprintf(name, sizeof name, "model.norm.weight");
        else if (!strcmp(g, "output.weight")) snprintf(name, sizeof name, "lm_head.weight");
        else {
            char kind[32], suffix[16];
            sscanf(g, "blk.%d.%31[a-z_].%15s", &l, kind, suffix);
            for (size_t k = 0; k < sizeof hf / sizeof hf[0]; k++)
                if (!strcmp(kind, hf[k][0])) snprintf(name, sizeof name, "model.layers.%d.%s.%s", l, hf[k][1], suffix);
            rope = !strcmp(kind, "attn_q") || !strcmp(kind, "attn_k");
        }
        const qs_tensor_info *t = qs_catalog_find(cat, name);
        CHECKF(t && t->dtype == QS_DTYPE_F32, "%s missing", name);
        if (!t) continue;
        int64_t cols = (int64_t)ts[ti].ne[0], rows = ts[ti].n_dims == 2 ? (int64_t)ts[ti].ne[1] : 1;
        CHECKF(ts[ti].n_dims == 2 ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols : t->n_dims == 1 && t->shape[0] == cols,
               "%s shape", name);
        float *w = malloc(t->n_elems * sizeof(float));
        CHECK(qs_catalog_read_f32(cat, t, w, &err) == 0);
        int bad = 0;
        if (ts[ti].n_dims == 1 && rope) /* a Q/K bias: one column */
            for (int64_t r = 0; r < cols; r++) bad += w[r] != expect_at(ti, (size_t)stored_row((int)r));
        else
            for (int64_t r = 0; r < rows; r++)
                for (int64_t col = 0; col < cols; col++)
                    bad += w[r * cols + col] != expect_at(ti, (size_t)((rope ? stored_row((int)r) : r) * cols + col));
        CHECKF(bad == 0, "%s: %d values differ", name, bad);
        free(w);
    }
    qs_catalog_free(cat);
    qs_tokenizer *tok;
    CHECKF(qs_tokenizer_load(&tok, out, &err) == 0, "%s", err.msg);
    if (tok) {
        CHECK(qs_tokenizer_vocab_size(tok) == V && qs_tokenizer_bos(tok) == 1);
        int32_t *ids = NULL;
        size_t n = 0;
        CHECKF(qs_tokenizer_encode(tok, "a b", 3, &ids, &n, &err) == 0, "%s", err.msg);
        CHECKF(n == 3 && ids[0] == 1 && ids[1] == 6 && ids[2] == 7, "encode 'a b': %zu ids", n);
        free(ids);
        qs_tokenizer_free(tok);
    }
}

static int exists(const char *d, const char *name) {
    char *p = qs_path_join(d, name);
    int r = access(p, F_OK) == 0;
    free(p);
    return r;
}

/* import must fail naming want, leaving no output file */
static void expect_refused(const char *dir, const char *name, const fixture *f, const char *want) {
    gw img = {0};
    build(&img, f);
    char *in = qs_path_join(dir, name), *out = qs_path_join(dir, "refused");
    gw_save(&img, in);
    qs_error err = {0};
    int rc = qs_import_gguf(in, out, NULL, &err);
    CHECKF(rc < 0 && strstr(err.msg, want), "%s: rc %d '%s' lacks '%s'", name, rc, err.msg, want);
    CHECKF(!exists(out, "config.json") && !exists(out, "model.safetensors") && !exists(out, "tokenizer.json") &&
               !exists(out, "model.safetensors.tmp"),
           "%s: output left behind", name);
    free(in);
    free(out);
    free(img.p);
}

int main(void) {
    char *dir = qs_test_tmpdir("import_gguf");
    /* the permutation helper against the definition */
    float src[2 * HD * 3], dst[2 * HD * 3];
    for (int i = 0; i < 2 * HD * 3; i++) src[i] = (float)i;
    qs_unpermute_rope_rows(src, dst, 2, HD, 3);
    int bad = 0;
    for (int r = 0; r < 2 * HD; r++)
        for (int c = 0; c < 3; c++) bad += dst[r * 3 + c] != src[stored_row(r) * 3 + c];
    CHECK(bad == 0);

    static const fixture ok[] = {{"llama", 0, 0, 0, 0, 0}, {"llama", 1, 1, 0, 0, 0}};
    for (int k = 0; k < 2; k++) {
        gw img = {0};
        build(&img, &ok[k]);
        char name[64];
        snprintf(name, sizeof name, "tiny-%d.gguf", k);
        char *in = qs_path_join(dir, name), *out = qs_path_join(dir, k ? "out-untied" : "out-tied");
        CHECK(gw_save(&img, in) == 0);
        qs_error err = {0};
        qs_import_summary s = {0};
        CHECKF(qs_import_gguf(in, out, &s, &err) == 0, "%s", err.msg);
        CHECK(s.n_tensors == nt && s.n_layers == NL && s.vocab == V);
        check_output(out, &ok[k]);
        /* importing again over a finished import replaces it */
        CHECKF(qs_import_gguf(in, out, NULL, &err) == 0, "%s", err.msg);
        free(in);
        free(out);
        free(img.p);
    }
    expect_refused(dir, "qwen2.gguf", &(fixture){"qwen2", 0, 0, 0, 0, 0}, "unsupported architecture 'qwen2'");
    expect_refused(dir, "missing.gguf", &(fixture){"llama", 0, 0, 1, 0, 0}, "'blk.1.ffn_up.weight' is missing");
    expect_refused(dir, "shape.gguf", &(fixture){"llama", 0, 0, 0, 1, 0}, "'blk.1.attn_output.weight': shape [64, 32], expected [32, 32]");
    expect_refused(dir, "unknown.gguf", &(fixture){"llama", 0, 0, 0, 0, 1}, "'blk.0.attn_qkv.weight' is not part of a llama model");
    expect_refused(dir, "obias.gguf", &(fixture){"llama", 0, 2, 0, 0, 0}, "'blk.0.attn_output.bias': a bias on the attention output is not supported");
    /* a sharded model already in the output directory would shadow model.safetensors */
    char *out = qs_path_join(dir, "sharded"), *in = qs_path_join(dir, "tiny-0.gguf"), *idx = qs_path_join(out, "model.safetensors.index.json");
    qs_error err = {0};
    CHECK(qs_mkdir_p(out, &err) == 0 && qs_file_write_durable(idx, "{}", 2, &err) == 0);
    CHECK(qs_import_gguf(in, out, NULL, &err) < 0 && strstr(err.msg, "sharded") && !exists(out, "model.safetensors"));
    CHECK(qs_import_gguf("/nonexistent/x.gguf", out, NULL, &err) < 0 && strstr(err.msg, "/nonexistent/x.gguf"));
    free(out);
    free(in);
    free(idx);
    for (int i = 0; i < nt; i++) free(data[i]);
    free(dir);
    return qs_test_result();
}
