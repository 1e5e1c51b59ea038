/* io/config.c - config.json of LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM.
 *
 * Defaults follow the transformers config classes: num_key_value_heads = num_attention_heads,
 * head_dim = hidden_size / num_attention_heads, rope_theta 10000, rms_norm_eps 1e-6,
 * max_position_embeddings 2048, tie_word_embeddings false, hidden_act silu, sliding_window 4096
 * (Mistral; null = none). Qwen2 always has q/k/v biases; its sliding window counts only with
 * use_sliding_window. */
#include "io/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"

#define BAD(...) qs_error_set(err, QS_EFORMAT, __VA_ARGS__)
#define QS_CONFIG_MAX_BYTES (16u << 20)

static const char *const arch_names[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
static const char *const model_types[] = {"llama", "mistral", "qwen2"};

/* An integer field; null or absent gives dflt unless required. With list_ok, a list gives its
 * first element (eos_token_id: [128001, 128008, 128009]) and an empty list gives dflt. */
static int get_int(json_t *obj, const char *key, int required, int list_ok, int dflt, int *out, const char *fn,
                   qs_error *err) {
    json_t *v = json_object_get(obj, key);
    if (list_ok && json_is_array(v)) v = json_array_size(v) ? json_array_get(v, 0) : NULL;
    if (!v || json_is_null(v)) {
        if (required) return BAD("%s: missing required field '%s'", fn, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > 0x7fffffff)
        return BAD("%s: field '%s' must be an integer (-1 to 2^31 - 1)", fn, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *obj, const char *key, int required, float dflt, float *out, const char *fn,
                     qs_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) return BAD("%s: missing required field '%s'", fn, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v)) return BAD("%s: field '%s' must be a number", fn, key);
    double d = json_number_value(v);
    if (!isfinite((float)d)) return BAD("%s: field '%s' (%g) is out of range", fn, key, d);
    *out = (float)d;
    return 0;
}

static int get_bool(json_t *obj, const char *key, int dflt, int *out, const char *fn, qs_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) *out = dflt;
    else if (json_is_boolean(v)) *out = json_is_true(v);
    else return BAD("%s: field '%s' must be true or false", fn, key);
    return 0;
}

/* architectures[0] decides; model_type when there is no architectures list */
static int parse_arch(qs_model_config *c, json_t *root, const char *fn, qs_error *err) {
    json_t *archs = json_object_get(root, "architectures"), *mt = json_object_get(root, "model_type");
    const char *arch = json_is_array(archs) ? json_string_value(json_array_get(archs, 0)) : NULL;
    const char *type = json_string_value(mt);
    if (!arch && !type) return BAD("%s: neither 'architectures' nor 'model_type' names the architecture", fn);
    for (int a = 0; a <= QS_ARCH_QWEN2; a++)
        if (arch ? !strcmp(arch, arch_names[a]) : !strcmp(type, model_types[a])) {
            c->arch = (qs_arch)a;
            return 0;
        }
    return qs_error_set(err, QS_EUNSUPPORTED,
                        "%s: unsupported architecture '%s' (qstream supports LlamaForCausalLM, MistralForCausalLM, "
                        "Qwen2ForCausalLM)",
                        fn, arch ? arch : type);
}

/* null, {"rope_type"|"type": "default"} -> none; "llama3" with its four parameters */
static int parse_rope_scaling(qs_model_config *c, json_t *rs, const char *fn, qs_error *err) {
    c->rope_scaling = QS_ROPE_SCALING_NONE;
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return BAD("%s: rope_scaling must be an object or null", fn);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!json_is_string(t)) return BAD("%s: rope_scaling has no 'rope_type' string", fn);
    const char *type = json_string_value(t);
    if (!strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3"))
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported rope_scaling type '%s' (qstream supports llama3)",
                            fn, type);
    c->rope_scaling = QS_ROPE_SCALING_LLAMA3;
    QS_FORWARD_IF_ERROR(get_float(rs, "factor", 1, 0, &c->rope_factor, fn, err));
    QS_FORWARD_IF_ERROR(get_float(rs, "low_freq_factor", 1, 0, &c->rope_low_freq_factor, fn, err));
    QS_FORWARD_IF_ERROR(get_float(rs, "high_freq_factor", 1, 0, &c->rope_high_freq_factor, fn, err));
    return get_int(rs, "original_max_position_embeddings", 1, 0, 0, &c->rope_original_max_position, fn, err);
}

static int parse_fields(qs_model_config *c, json_t *root, const char *fn, qs_error *err) {
    QS_FORWARD_IF_ERROR(parse_arch(c, root, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "hidden_size", 1, 0, 0, &c->hidden_size, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "intermediate_size", 1, 0, 0, &c->intermediate_size, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "num_hidden_layers", 1, 0, 0, &c->n_layers, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "num_attention_heads", 1, 0, 0, &c->n_heads, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "num_key_value_heads", 0, 0, c->n_heads, &c->n_kv_heads, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "vocab_size", 1, 0, 0, &c->vocab_size, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "max_position_embeddings", 0, 0, 2048, &c->max_position_embeddings, fn, err));
    int head_dflt = c->n_heads > 0 ? c->hidden_size / c->n_heads : 0;
    QS_FORWARD_IF_ERROR(get_int(root, "head_dim", 0, 0, head_dflt, &c->head_dim, fn, err));
    QS_FORWARD_IF_ERROR(get_float(root, "rms_norm_eps", 0, 1e-6f, &c->rms_eps, fn, err));
    QS_FORWARD_IF_ERROR(get_float(root, "rope_theta", 0, 10000.0f, &c->rope_theta, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "bos_token_id", 0, 0, -1, &c->bos_token_id, fn, err));
    QS_FORWARD_IF_ERROR(get_int(root, "eos_token_id", 0, 1, -1, &c->eos_token_id, fn, err));
    QS_FORWARD_IF_ERROR(parse_rope_scaling(c, json_object_get(root, "rope_scaling"), fn, err));
    QS_FORWARD_IF_ERROR(get_bool(root, "tie_word_embeddings", 0, &c->tie_word_embeddings, fn, err));
    if (c->arch == QS_ARCH_QWEN2) c->attention_bias = 1;
    else QS_FORWARD_IF_ERROR(get_bool(root, "attention_bias", 0, &c->attention_bias, fn, err));
    int use_window = c->arch == QS_ARCH_MISTRAL;
    if (c->arch == QS_ARCH_QWEN2) QS_FORWARD_IF_ERROR(get_bool(root, "use_sliding_window", 0, &use_window, fn, err));
    /* absent: the config classes' default 4096; null: no window */
    c->sliding_window = 0;
    if (use_window) QS_FORWARD_IF_ERROR(get_int(root, "sliding_window", 0, 0, 4096, &c->sliding_window, fn, err));
    if (use_window && json_is_null(json_object_get(root, "sliding_window"))) c->sliding_window = 0;
    int mlp_bias;
    QS_FORWARD_IF_ERROR(get_bool(root, "mlp_bias", 0, &mlp_bias, fn, err));
    if (mlp_bias) return qs_error_set(err, QS_EUNSUPPORTED, "%s: mlp_bias true is not supported", fn);
    json_t *act = json_object_get(root, "hidden_act");
    if (act && !json_is_null(act) && !(json_is_string(act) && !strcmp(json_string_value(act), "silu")))
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: unsupported hidden_act '%s' (qstream supports silu)", fn,
                            json_is_string(act) ? json_string_value(act) : "(not a string)");
    return 0;
}

/* consistency of parsed (or caller-filled) sizes */
static int check_config(const qs_model_config *c, const char *fn, qs_error *err) {
    if ((int)c->arch < 0 || c->arch > QS_ARCH_QWEN2) return BAD("%s: unknown architecture %d", fn, (int)c->arch);
    struct { const char *name; int v; } pos[] = {
        {"hidden_size", c->hidden_size}, {"intermediate_size", c->intermediate_size},
        {"num_hidden_layers", c->n_layers}, {"num_attention_heads", c->n_heads},
        {"num_key_value_heads", c->n_kv_heads}, {"head_dim", c->head_dim},
        {"vocab_size", c->vocab_size}, {"max_position_embeddings", c->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        if (pos[i].v <= 0) return BAD("%s: %s must be positive (it is %d)", fn, pos[i].name, pos[i].v);
    if (c->head_dim & 1) return BAD("%s: head_dim %d must be even (RoPE rotates pairs)", fn, c->head_dim);
    if (c->n_heads % c->n_kv_heads)
        return BAD("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", fn, c->n_heads,
                   c->n_kv_heads);
    if (c->sliding_window < 0)
        return BAD("%s: sliding_window must be positive or null (it is %d)", fn, c->sliding_window);
    if (!(c->rms_eps > 0) || !isfinite(c->rms_eps)) return BAD("%s: rms_norm_eps must be positive", fn);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta)) return BAD("%s: rope_theta must be positive", fn);
    if (c->rope_scaling != QS_ROPE_SCALING_NONE && c->rope_scaling != QS_ROPE_SCALING_LLAMA3)
        return BAD("%s: unknown rope_scaling %d", fn, (int)c->rope_scaling);
    if (c->rope_scaling == QS_ROPE_SCALING_LLAMA3 &&
        (!(c->rope_factor > 0) || !(c->rope_low_freq_factor > 0) || !isfinite(c->rope_factor) ||
         !(c->rope_high_freq_factor > c->rope_low_freq_factor) || !isfinite(c->rope_high_freq_factor) ||
         c->rope_original_max_position <= 0))
        return BAD("%s: rope_scaling llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                   "original_max_position_embeddings > 0",
                   fn);
    return 0;
}

int qs_config_parse(qs_model_config *c, const char *json, size_t len, const char *fn, qs_error *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return BAD("%s: not valid JSON (line %d: %s)", fn, je.line, je.text);
    int rc = json_is_object(root) ? parse_fields(c, root, fn, err) : BAD("%s: not a JSON object", fn);
    json_t *hd = json_object_get(root, "head_dim");
    if (!rc && (!hd || json_is_null(hd)) && c->n_heads > 0 && c->hidden_size % c->n_heads)
        rc = BAD("%s: hidden_size %d is not a multiple of num_attention_heads %d (and no head_dim)", fn,
                 c->hidden_size, c->n_heads);
    if (!rc) rc = check_config(c, fn, err);
    json_decref(root);
    return rc;
}

int qs_config_load(qs_model_config *cfg, const char *path, qs_error *err) {
    char *file = qs_path_or_default(path, ".json", "config.json"), *text;
    size_t len;
    if (!file) return qs_error_set(err, -ENOMEM, "%s: out of memory", path);
    int rc = qs_file_read_all(file, QS_CONFIG_MAX_BYTES, &text, &len, err);
    if (!rc) {
        rc = qs_config_parse(cfg, text, len, file, err);
        free(text);
    }
    free(file);
    return rc;
}

/* x as the double of its shortest decimal that reads back as the same float, so that 1e-5f is
 * written "1e-05" rather than "9.99999975e-06" */
static json_t *json_float(float x) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    return json_real(strtod(buf, NULL));
}

int qs_config_write(const qs_model_config *c, const char *path, qs_error *err) {
    QS_FORWARD_IF_ERROR(check_config(c, path, err));
    if (c->arch == QS_ARCH_MISTRAL && c->attention_bias)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: MistralForCausalLM has no attention bias", path);
    if (c->arch == QS_ARCH_QWEN2 && !c->attention_bias)
        return qs_error_set(err, QS_EUNSUPPORTED, "%s: Qwen2ForCausalLM always has q/k/v biases", path);
    json_t *r = json_object(), *a = json_array();
    json_array_append_new(a, json_string(arch_names[c->arch]));
    json_object_set_new(r, "architectures", a);
    json_object_set_new(r, "model_type", json_string(model_types[c->arch]));
    json_object_set_new(r, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(r, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(r, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(r, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(r, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(r, "head_dim", json_integer(c->head_dim));
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(r, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(r, "rms_norm_eps", json_float(c->rms_eps));
    json_object_set_new(r, "rope_theta", json_float(c->rope_theta));
    json_object_set_new(r, "hidden_act", json_string("silu"));
    json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    if (c->arch == QS_ARCH_LLAMA) {
        json_object_set_new(r, "attention_bias", json_boolean(c->attention_bias));
        json_object_set_new(r, "mlp_bias", json_false());
    }
    /* null, not absent: MistralConfig's default window is 4096 */
    if (c->arch == QS_ARCH_QWEN2) json_object_set_new(r, "use_sliding_window", json_boolean(c->sliding_window > 0));
    if (c->arch != QS_ARCH_LLAMA)
        json_object_set_new(r, "sliding_window", c->sliding_window > 0 ? json_integer(c->sliding_window) : json_null());
    /* null, not absent: LlamaConfig's defaults are 1 and 2 */
    json_object_set_new(r, "bos_token_id", c->bos_token_id >= 0 ? json_integer(c->bos_token_id) : json_null());
    json_object_set_new(r, "eos_token_id", c->eos_token_id >= 0 ? json_integer(c->eos_token_id) : json_null());
    if (c->rope_scaling == QS_ROPE_SCALING_LLAMA3) {
        json_t *rs = json_object();
        json_object_set_new(rs, "rope_type", json_string("llama3"));
        json_object_set_new(rs, "factor", json_float(c->rope_factor));
        json_object_set_new(rs, "low_freq_factor", json_float(c->rope_low_freq_factor));
        json_object_set_new(rs, "high_freq_factor", json_float(c->rope_high_freq_factor));
        json_object_set_new(rs, "original_max_position_embeddings", json_integer(c->rope_original_max_position));
        json_object_set_new(r, "rope_scaling", rs);
    } else {
        json_object_set_new(r, "rope_scaling", json_null());
    }
    json_object_set_new(r, "torch_dtype", json_string("float32"));
    char *text = json_dumps(r, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(r);
    if (!text) return qs_error_set(err, -ENOMEM, "%s: out of memory", path);
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps leaves no newline; the NUL is not written */
    int rc = qs_file_write_durable(path, text, n + 1, err);
    free(text);
    return rc;
}
