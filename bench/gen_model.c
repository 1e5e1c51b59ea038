/* bench/gen_model.c - writes a synthetic LLaMA model directory for benchmarks.
 *
 * usage: gen_model OUT_DIR [--shape 70b|7b|tiny] [--layers N] [--shards N] [--dtype bf16|f16|f32] [--vocab N]
 * 70b: LLaMA-2-70B block shapes (hidden 8192, intermediate 28672, 64 heads, 8 KV heads),
 * vocab 32000, untied; weights seeded uniform in +-1/sqrt(in) (values do not matter for I/O and
 * memory figures, shapes and bytes do). Tensors are spread over --shards files with a
 * model.safetensors.index.json, one file per group of blocks, as Hugging Face shards them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "base/half.h"
#include "io/config.h"
#include "io/safetensors.h"

typedef struct gen_tensor {
    char name[96];
    int64_t rows, cols; /* cols = 0: 1-D [rows] */
    int shard;
} gen_tensor;

static uint64_t rng_state;
static inline float urand(void) { /* xorshift64*, uniform in [-1, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (float)((rng_state * 2685821657736338717ull) >> 40) / 8388608.0f - 1.0f;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: gen_model OUT_DIR [--shape 70b|7b|tiny] [--layers N] [--shards N] [--dtype bf16|f16|f32] [--vocab N]\n");
        return 2;
    }
    const char *out = argv[1], *shape = "70b", *dt = "bf16";
    int layers = 3, shards = 2, vocab = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--shape")) shape = argv[i + 1];
        else if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shards")) shards = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dtype")) dt = argv[i + 1];
        else if (!strcmp(argv[i], "--vocab")) vocab = atoi(argv[i + 1]);
    }
    qs_model_config cfg = {.arch = QS_ARCH_LLAMA, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                           .bos_token_id = 1, .eos_token_id = 2, .vocab_size = 32000,
                           .max_position_embeddings = 4096};
    if (!strcmp(shape, "70b")) {
        cfg.hidden_size = 8192, cfg.intermediate_size = 28672, cfg.n_heads = 64, cfg.n_kv_heads = 8;
    } else if (!strcmp(shape, "7b")) {
        cfg.hidden_size = 4096, cfg.intermediate_size = 11008, cfg.n_heads = 32, cfg.n_kv_heads = 32;
    } else {
        cfg.hidden_size = 256, cfg.intermediate_size = 688, cfg.n_heads = 8, cfg.n_kv_heads = 4;
        cfg.vocab_size = 1024;
    }
    cfg.n_layers = layers;
    if (vocab > 0) cfg.vocab_size = vocab;
    cfg.head_dim = cfg.hidden_size / cfg.n_heads;
    qs_dtype dtype = !strcmp(dt, "f32") ? QS_DTYPE_F32 : !strcmp(dt, "f16") ? QS_DTYPE_F16 : QS_DTYPE_BF16;
    if (shards < 1) shards = 1;

    int64_t H = cfg.hidden_size, I = cfg.intermediate_size, KV = (int64_t)cfg.n_kv_heads * cfg.head_dim;
    size_t nt = 0, cap = 4 + 9 * (size_t)layers;
    gen_tensor *ts = calloc(cap, sizeof *ts);
    ts[nt++] = (gen_tensor){.rows = cfg.vocab_size, .cols = H, .shard = 0, .name = "model.embed_tokens.weight"};
    static const char *lin[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    for (int l = 0; l < layers; l++) {
        int sh = (int)((int64_t)l * shards / (layers + 1));
        int64_t rows[7] = {H, KV, KV, H, I, I, H}, cols[7] = {H, H, H, H, H, H, I};
        for (int j = 0; j < 7; j++) {
            ts[nt] = (gen_tensor){.rows = rows[j], .cols = cols[j], .shard = sh};
            snprintf(ts[nt++].name, sizeof ts[0].name, "model.layers.%d.%s.weight", l, lin[j]);
        }
        ts[nt] = (gen_tensor){.rows = H, .shard = sh};
        snprintf(ts[nt++].name, sizeof ts[0].name, "model.layers.%d.input_layernorm.weight", l);
        ts[nt] = (gen_tensor){.rows = H, .shard = sh};
        snprintf(ts[nt++].name, sizeof ts[0].name, "model.layers.%d.post_attention_layernorm.weight", l);
    }
    ts[nt] = (gen_tensor){.rows = H, .shard = shards - 1, .name = "model.norm.weight"};
    nt++;
    ts[nt] = (gen_tensor){.rows = cfg.vocab_size, .cols = H, .shard = shards - 1, .name = "lm_head.weight"};
    nt++;

    qs_error err = {0};
    if (qs_mkdir_p(out, &err)) goto fail;
    char *cfg_path = qs_path_join(out, "config.json");
    if (qs_config_write(&cfg, cfg_path, &err)) goto fail;
    free(cfg_path);
    size_t max_elems = 0;
    for (size_t i = 0; i < nt; i++) {
        size_t e = (size_t)ts[i].rows * (size_t)(ts[i].cols ? ts[i].cols : 1);
        if (e > max_elems) max_elems = e;
    }
    float *f = malloc(max_elems * sizeof(float));
    void *buf = malloc(max_elems * 4);
    /* index.json: weight_map name -> file */
    size_t idx_cap = nt * 160 + 256, idx_len = 0;
    char *idx = malloc(idx_cap);
    idx_len += (size_t)snprintf(idx + idx_len, idx_cap - idx_len, "{\"metadata\": {}, \"weight_map\": {");
    for (int s = 0; s < shards; s++) {
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, shards);
        char *path = qs_path_join(out, fname);
        qs_st_writer *w;
        if (qs_st_writer_open(&w, path, &err)) goto fail;
        for (size_t i = 0; i < nt; i++) {
            if (ts[i].shard != s) continue;
            int64_t shp[2] = {ts[i].rows, ts[i].cols};
            if (qs_st_writer_declare(w, ts[i].name, dtype, ts[i].cols ? 2 : 1, shp, &err)) goto fail;
            idx_len += (size_t)snprintf(idx + idx_len, idx_cap - idx_len, "%s\"%s\": \"%s\"",
                                        idx_len > 40 ? ", " : "", ts[i].name, fname);
        }
        for (size_t i = 0; i < nt; i++) {
            if (ts[i].shard != s) continue;
            size_t n = (size_t)ts[i].rows * (size_t)(ts[i].cols ? ts[i].cols : 1);
            rng_state = 0x9E3779B97F4A7C15ull ^ (i + 1);
            float amp = ts[i].cols ? 1.0f / sqrtf((float)ts[i].cols) : 0.0f;
            for (size_t k = 0; k < n; k++) f[k] = ts[i].cols ? amp * urand() : 1.0f;
            if (dtype == QS_DTYPE_BF16) qs_f32_to_bf16_n(f, buf, n);
            else if (dtype == QS_DTYPE_F16) qs_f32_to_f16_n(f, buf, n);
            else memcpy(buf, f, n * 4);
            if (qs_st_writer_write(w, buf, &err)) goto fail;
        }
        if (qs_st_writer_close(w, &err)) goto fail;
        free(path);
    }
    idx_len += (size_t)snprintf(idx + idx_len, idx_cap - idx_len, "}}\n");
    char *idx_path = qs_path_join(out, "model.safetensors.index.json");
    if (qs_file_write_durable(idx_path, idx, idx_len, &err)) goto fail;
    printf("gen_model: %s: %s shapes, %d layers, %d shards, %s\n", out, shape, layers, shards, dt);
    free(idx_path);
    free(idx);
    free(f);
    free(buf);
    free(ts);
    return 0;
fail:
    fprintf(stderr, "gen_model: %s\n", err.msg);
    return 1;
}
