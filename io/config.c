/* io/config.c - config.json of LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM. */
#include "io/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"

#define BAD(...) qs_error_set(err, QS_EFORMAT, __VA_ARGS__)

static int get_int(json_t *root, const char *key, int required, int dflt, int *out, const char *fn, qs_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return BAD("%s: missing required field '%s'", fn, key);
        *out = dflt;
        return 0;
    }
    if (json_is_array(v) && json_array_size(v) > 0) v = json_array_get(v, 0); /* eos_token_id: [a, b] */
    if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > 0x7fffffff)
        return BAD("%s: field '%s' must be an integer", fn, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *root, const char *key, int required, float dflt, float *out, const char *fn, qs_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return BAD("%s: missing required field '%s'", fn, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v)) return BAD("%s: field '%s' must be a number", fn, key);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(json_t *root, const char *key, int dflt) {
    json_t *v = json_object_get(root, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int parse_rope_scaling(qs_model_config *c, json_t *rs, const char *fn, qs_error *err) {
    c->rope_scaling = QS_ROPE_SCALING_NONE;
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return BAD("%s: rope_scaling must be an object or null", fn);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "";
    if (!strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3"))
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported rope_scaling type '%s' (qstream supports llama3)", fn, type);
    c->rope_scaling = QS_ROPE_SCALING_LLAMA3;
    int rc = get_float(rs, "factor", 1, 0, &c->rope_factor, fn, err);
    if (!rc) rc = get_float(rs, "low_freq_factor", 1, 0, &c->rope_low_freq_factor, fn, err);
    if (!rc) rc = get_float(rs, "high_freq_factor", 1, 0, &c->rope_high_freq_factor, fn, err);
    if (!rc) rc = get_int(rs, "original_max_position_embeddings", 1, 0, &c->rope_original_max_position, fn, err);
    if (!rc && (c->rope_factor <= 0 || c->rope_low_freq_factor <= 0 ||
                c->rope_high_freq_factor <= c->rope_low_freq_factor || c->rope_original_max_position <= 0))
        rc = BAD("%s: rope_scaling llama3 parameters out of range", fn);
    return rc;
}

int qs_config_parse(qs_model_config *c, const char *json, size_t len, const char *fn, qs_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) return BAD("%s: not valid JSON (line %d: %s)", fn, je.line, je.text);
    int rc = 0;
    if (!json_is_object(root)) rc = BAD("%s: not a JSON object", fn);
    const char *arch = NULL;
    json_t *archs = json_object_get(root, "architectures"), *mt = json_object_get(root, "model_type");
    if (!rc) {
        if (json_is_array(archs) && json_is_string(json_array_get(archs, 0)))
            arch = json_string_value(json_array_get(archs, 0));
        const char *model_type = json_is_string(mt) ? json_string_value(mt) : "";
        if (arch ? !strcmp(arch, "LlamaForCausalLM") : !strcmp(model_type, "llama")) c->arch = QS_ARCH_LLAMA;
        else if (arch ? !strcmp(arch, "MistralForCausalLM") : !strcmp(model_type, "mistral")) c->arch = QS_ARCH_MISTRAL;
        else if (arch ? !strcmp(arch, "Qwen2ForCausalLM") : !strcmp(model_type, "qwen2")) c->arch = QS_ARCH_QWEN2;
        else
            rc = qs_error_set(err, QS_EUNSUPPORTED,
                              "%s: unsupported architecture '%s' (qstream supports LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                              fn, arch ? arch : model_type);
    }
    if (!rc) rc = get_int(root, "hidden_size", 1, 0, &c->hidden_size, fn, err);
    if (!rc) rc = get_int(root, "intermediate_size", 1, 0, &c->intermediate_size, fn, err);
    if (!rc) rc = get_int(root, "num_hidden_layers", 1, 0, &c->n_layers, fn, err);
    if (!rc) rc = get_int(root, "num_attention_heads", 1, 0, &c->n_heads, fn, err);
    if (!rc) rc = get_int(root, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads, fn, err);
    if (!rc) rc = get_int(root, "vocab_size", 1, 0, &c->vocab_size, fn, err);
    if (!rc) rc = get_int(root, "max_position_embeddings", 0, 2048, &c->max_position_embeddings, fn, err);
    if (!rc) rc = get_int(root, "head_dim", 0, c->n_heads > 0 ? c->hidden_size / c->n_heads : 0, &c->head_dim, fn, err);
    if (!rc) rc = get_float(root, "rms_norm_eps", 0, 1e-6f, &c->rms_eps, fn, err);
    if (!rc) rc = get_float(root, "rope_theta", 0, 10000.0f, &c->rope_theta, fn, err);
    if (!rc) rc = get_int(root, "bos_token_id", 0, -1, &c->bos_token_id, fn, err);
    if (!rc) rc = get_int(root, "eos_token_id", 0, -1, &c->eos_token_id, fn, err);
    if (!rc) rc = parse_rope_scaling(c, json_object_get(root, "rope_scaling"), fn, err);
    if (!rc) {
        c->tie_word_embeddings = get_bool(root, "tie_word_embeddings", 0);
        c->attention_bias = c->arch == QS_ARCH_QWEN2 ? 1 : get_bool(root, "attention_bias", 0);
        if (c->arch == QS_ARCH_MISTRAL) rc = get_int(root, "sliding_window", 0, 0, &c->sliding_window, fn, err);
        if (c->arch == QS_ARCH_QWEN2 && get_bool(root, "use_sliding_window", 0))
            rc = get_int(root, "sliding_window", 0, 0, &c->sliding_window, fn, err);
        if (json_is_true(json_object_get(root, "mlp_bias")))
            rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: mlp_bias is not supported", fn);
    }
    json_t *act = json_object_get(root, "hidden_act");
    if (!rc && act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu")))
        rc = qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported hidden_act '%s' (qstream supports silu)", fn,
                          json_is_string(act) ? json_string_value(act) : "?");
    if (!rc) {
        if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
            c->n_kv_heads <= 0 || c->vocab_size <= 0 || c->head_dim <= 0 || (c->head_dim & 1))
            rc = BAD("%s: sizes must be positive (and head_dim even)", fn);
        else if (c->n_heads % c->n_kv_heads)
            rc = BAD("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", fn, c->n_heads, c->n_kv_heads);
        else if (!json_object_get(root, "head_dim") && c->hidden_size % c->n_heads)
            rc = BAD("%s: hidden_size %d is not a multiple of num_attention_heads %d", fn, c->hidden_size, c->n_heads);
        else if (!(c->rms_eps > 0) || !(c->rope_theta > 0) || !isfinite(c->rope_theta))
            rc = BAD("%s: rms_norm_eps and rope_theta must be positive", fn);
    }
    json_decref(root);
    return rc;
}

int qs_config_load(qs_model_config *cfg, const char *path, qs_error *err) {
    char *file = qs_path_or_default(path, ".json", "config.json"), *text;
    size_t len;
    int rc = file ? qs_file_read_all(file, 16u << 20, &text, &len, err) : qs_error_set(err, -ENOMEM, "out of memory");
    if (!rc) {
        rc = qs_config_parse(cfg, text, len, file, err);
        free(text);
    }
    free(file);
    return rc;
}

int qs_config_write(const qs_model_config *c, const char *path, qs_error *err) {
    static const char *archs[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
    static const char *types[] = {"llama", "mistral", "qwen2"};
    json_t *r = json_object(), *a = json_array();
    json_array_append_new(a, json_string(archs[c->arch]));
    json_object_set_new(r, "architectures", a);
    json_object_set_new(r, "model_type", json_string(types[c->arch]));
    json_object_set_new(r, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(r, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(r, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(r, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(r, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(r, "head_dim", json_integer(c->head_dim));
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(r, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(r, "rms_norm_eps", json_real(c->rms_eps));
    json_object_set_new(r, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(r, "hidden_act", json_string("silu"));
    json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    if (c->arch == QS_ARCH_LLAMA) json_object_set_new(r, "attention_bias", json_boolean(c->attention_bias));
    if (c->sliding_window) json_object_set_new(r, "sliding_window", json_integer(c->sliding_window));
    if (c->arch == QS_ARCH_QWEN2) json_object_set_new(r, "use_sliding_window", json_boolean(c->sliding_window > 0));
    if (c->bos_token_id >= 0) json_object_set_new(r, "bos_token_id", json_integer(c->bos_token_id));
    if (c->eos_token_id >= 0) json_object_set_new(r, "eos_token_id", json_integer(c->eos_token_id));
    if (c->rope_scaling == QS_ROPE_SCALING_LLAMA3) {
        json_t *rs = json_object();
        json_object_set_new(rs, "rope_type", json_string("llama3"));
        json_object_set_new(rs, "factor", json_real(c->rope_factor));
        json_object_set_new(rs, "low_freq_factor", json_real(c->rope_low_freq_factor));
        json_object_set_new(rs, "high_freq_factor", json_real(c->rope_high_freq_factor));
        json_object_set_new(rs, "original_max_position_embeddings", json_integer(c->rope_original_max_position));
        json_object_set_new(r, "rope_scaling", rs);
    }
    json_object_set_new(r, "torch_dtype", json_string("float32"));
    char *text = json_dumps(r, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(r);
    if (!text) return qs_error_set(err, -ENOMEM, "out of memory");
    int rc = qs_file_write_durable(path, text, strlen(text), err);
    free(text);
    return rc;
}
