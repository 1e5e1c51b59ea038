/* tests/test_config.c - config.json of LLaMA / LLaMA-3.1 (llama3 RoPE scaling) / Mistral / Qwen2,
 * the write/read round trip, and unsupported or inconsistent configs (clear messages). */
#include <string.h>

#include "base/fileio.h"
#include "io/config.h"
#include "tests/testutil.h"

static int parse(const char *json, qs_model_config *c, qs_error *err) { return qs_config_parse(c, json, strlen(json), "cfg.json", err); }

static void expect_bad(const char *json, const char *want) {
    qs_model_config c;
    qs_error err = {0};
    CHECKF(parse(json, &c, &err) != 0, "accepted: %s", json);
    CHECKF(strstr(err.msg, "cfg.json") && strstr(err.msg, want), "message '%s' lacks '%s'", err.msg, want);
}

int main(void) {
    qs_model_config c;
    qs_error err = {0};
    char *p = qs_test_shared_path("models/stories260k");
    CHECKF(qs_config_load(&c, p, &err) == 0, "%s", err.msg);
    CHECK(c.arch == QS_ARCH_LLAMA && c.hidden_size == 64 && c.intermediate_size == 172 && c.n_layers == 5 && c.n_heads == 8 &&
          c.n_kv_heads == 4 && c.head_dim == 8 && c.vocab_size == 512 && c.tie_word_embeddings == 1 && c.rope_theta == 10000.0f &&
          c.rms_eps == 1e-5f && c.rope_scaling == QS_ROPE_SCALING_NONE && !c.attention_bias);
    free(p);
    const char *llama31 =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4096, \"intermediate_size\": 14336, \"num_hidden_layers\": 32,"
        "\"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"vocab_size\": 128256, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0,"
        "\"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192,"
        "\"rope_type\": \"llama3\"}, \"eos_token_id\": [128001, 128008, 128009], \"bos_token_id\": 128000, \"hidden_act\": \"silu\"}";
    CHECKF(parse(llama31, &c, &err) == 0, "%s", err.msg);
    CHECK(c.rope_scaling == QS_ROPE_SCALING_LLAMA3 && c.rope_factor == 8.0f && c.rope_original_max_position == 8192 &&
          c.head_dim == 128 && c.eos_token_id == 128001 && c.n_kv_heads == 8 && !c.tie_word_embeddings);
    /* round trip */
    char *dir = qs_test_tmpdir("config"), *out = qs_path_join(dir, "config.json");
    qs_model_config back;
    CHECK(qs_config_write(&c, out, &err) == 0 && qs_config_load(&back, dir, &err) == 0);
    CHECK(memcmp(&c, &back, sizeof c) == 0);
    char *written;
    size_t wlen;
    CHECK(qs_file_read_all(out, 1 << 20, &written, &wlen, &err) == 0);
    if (written) {
        CHECKF(strstr(written, "\"rope_type\": \"llama3\"") && strstr(written, "\"rms_norm_eps\": 1e-5") &&
               strstr(written, "\"rope_theta\": 500000.0") && strstr(written, "\"architectures\": [\n    \"LlamaForCausalLM\"") &&
               strstr(written, "\"eos_token_id\": 128001"), "%s", written);
        free(written);
    }
    const char *mistral = "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 4096, \"intermediate_size\": 14336,"
                          "\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"vocab_size\": 32000,"
                          "\"sliding_window\": 4096, \"rms_norm_eps\": 1e-05}";
    CHECKF(parse(mistral, &c, &err) == 0, "%s", err.msg);
    CHECK(c.arch == QS_ARCH_MISTRAL && c.sliding_window == 4096 && c.rope_theta == 10000.0f);
    const char *qwen = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 896, \"intermediate_size\": 4864,"
                       "\"num_hidden_layers\": 24, \"num_attention_heads\": 14, \"num_key_value_heads\": 2, \"vocab_size\": 151936,"
                       "\"rope_theta\": 1000000.0, \"tie_word_embeddings\": true, \"use_sliding_window\": false, \"sliding_window\": 32768}";
    CHECKF(parse(qwen, &c, &err) == 0, "%s", err.msg);
    CHECK(c.arch == QS_ARCH_QWEN2 && c.attention_bias == 1 && c.sliding_window == 0 && c.head_dim == 64 && c.tie_word_embeddings);
    CHECK(qs_config_write(&c, out, &err) == 0 && qs_config_load(&back, out, &err) == 0 && memcmp(&c, &back, sizeof c) == 0);

    expect_bad("{\"architectures\": [\"GPTNeoXForCausalLM\"], \"hidden_size\": 8}", "unsupported architecture 'GPTNeoXForCausalLM'");
    expect_bad("{\"architectures\": [\"LlamaForCausalLM\"], \"intermediate_size\": 8}", "hidden_size");
    expect_bad("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"big\"}", "hidden_size");
    expect_bad("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 8,"
               "\"num_key_value_heads\": 3, \"vocab_size\": 10}", "multiple");
    expect_bad("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 8,"
               "\"vocab_size\": 10, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}}", "unsupported rope_scaling type 'yarn'");
    expect_bad("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 8,"
               "\"vocab_size\": 10, \"hidden_act\": \"gelu\"}", "hidden_act 'gelu'");
    expect_bad("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 0, \"num_attention_heads\": 8,"
               "\"vocab_size\": 10}", "positive");
    expect_bad("[1]", "not a JSON object");
    expect_bad("{\"architectures\": [\"GPTNeoXForCausalLM\"], \"model_type\": \"llama\"}", "GPTNeoXForCausalLM");
    expect_bad("{\"hidden_size\": 64}", "architecture");
    expect_bad("{\"model_type\": \"gpt2\"}", "unsupported architecture 'gpt2'");
#define LL "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 8, \"vocab_size\": 10"
    expect_bad(LL ", \"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 2}}", "unsupported rope_scaling type 'linear'");
    expect_bad(LL ", \"rope_scaling\": {\"factor\": 2}}", "rope_type");
    expect_bad(LL ", \"rope_scaling\": [2]}", "rope_scaling");
    expect_bad(LL ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"low_freq_factor\": 1, \"high_freq_factor\": 4,"
                  " \"original_max_position_embeddings\": 8192}}", "'factor'");
    expect_bad(LL ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 1,"
                  " \"original_max_position_embeddings\": 8192}}", "low_freq_factor < high_freq_factor");
    expect_bad(LL ", \"tie_word_embeddings\": \"yes\"}", "tie_word_embeddings");
    expect_bad(LL ", \"mlp_bias\": true}", "mlp_bias");
    expect_bad(LL ", \"num_key_value_heads\": 16}", "multiple");
    expect_bad(LL ", \"hidden_act\": 3}", "hidden_act");
    expect_bad(LL ", \"rms_norm_eps\": \"small\"}", "rms_norm_eps");
    expect_bad(LL ", \"rms_norm_eps\": 0}", "rms_norm_eps");
    expect_bad(LL ", \"rope_theta\": 1e300}", "rope_theta");
    expect_bad(LL ", \"head_dim\": 7}", "head_dim");
    expect_bad(LL ", \"eos_token_id\": [\"x\"]}", "eos_token_id");
    expect_bad(LL ", \"vocab_size\": 11}", "");  /* duplicate key */
    expect_bad("{\"model_type\": \"llama\", \"hidden_size\": 60, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
               " \"num_attention_heads\": 8, \"vocab_size\": 10}", "hidden_size 60 is not a multiple of num_attention_heads 8");
    expect_bad("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
               " \"num_attention_heads\": 0, \"vocab_size\": 10}", "num_attention_heads must be positive");
    /* accepted variants: model_type fallback, "default" rope type, explicit head_dim, empty eos list */
    CHECKF(parse(LL ", \"rope_scaling\": {\"type\": \"default\"}, \"eos_token_id\": [], \"head_dim\": 16}", &c, &err) == 0,
           "%s", err.msg);
    CHECK(c.arch == QS_ARCH_LLAMA && c.rope_scaling == QS_ROPE_SCALING_NONE && c.eos_token_id == -1 && c.head_dim == 16 &&
          c.n_kv_heads == 8 && c.rms_eps == 1e-6f && c.max_position_embeddings == 2048 && c.bos_token_id == -1);
    CHECKF(parse("{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
                 " \"num_attention_heads\": 4, \"vocab_size\": 10, \"use_sliding_window\": true, \"sliding_window\": 128}", &c, &err) == 0,
           "%s", err.msg);
    CHECK(c.arch == QS_ARCH_QWEN2 && c.sliding_window == 128 && c.attention_bias == 1);
    /* Mistral: null window = none; absent = MistralConfig's 4096; written back as null */
    CHECKF(parse("{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
                 " \"num_attention_heads\": 4, \"vocab_size\": 10, \"sliding_window\": null, \"eos_token_id\": 2}", &c, &err) == 0,
           "%s", err.msg);
    CHECK(c.arch == QS_ARCH_MISTRAL && c.sliding_window == 0 && c.eos_token_id == 2);
    CHECK(qs_config_write(&c, out, &err) == 0 && qs_config_load(&back, out, &err) == 0 && memcmp(&c, &back, sizeof c) == 0);
    char *text;
    size_t len;
    CHECK(qs_file_read_all(out, 1 << 20, &text, &len, &err) == 0);
    if (text) {
        CHECK(strstr(text, "\"sliding_window\": null") && strstr(text, "\"bos_token_id\": null") &&
              strstr(text, "\"torch_dtype\": \"float32\"") && strstr(text, "\"model_type\": \"mistral\"") && text[len - 1] == '\n');
        free(text);
    }
    CHECKF(parse("{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1,"
                 " \"num_attention_heads\": 4, \"vocab_size\": 10}", &c, &err) == 0, "%s", err.msg);
    CHECK(c.sliding_window == 4096);
    /* the writer refuses what the target class cannot express */
    c.attention_bias = 1;
    CHECK(qs_config_write(&c, out, &err) == QS_EUNSUPPORTED && strstr(err.msg, "config.json"));
    c.attention_bias = 0;
    c.n_heads = 0;
    CHECK(qs_config_write(&c, out, &err) != 0 && strstr(err.msg, "num_attention_heads"));
    /* a missing file names its path */
    char *nowhere = qs_path_join(dir, "nowhere");
    CHECK(qs_config_load(&c, nowhere, &err) != 0 && strstr(err.msg, "nowhere/config.json"));
    free(nowhere);
    expect_bad("{\"model_type\": ", "not valid JSON");
    free(dir);
    free(out);
    return qs_test_result();
}
