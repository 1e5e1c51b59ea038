/* io/tokenizer.h - tokenizers of LLaMA-family models.
 *
 * Two model kinds:
 *  - QS_TOK_BPE_BYTELEVEL: GPT-2 style byte-level BPE with a pre-tokenizer regex
 *    (GPT-2, LLaMA-3, SmolLM/StarCoder (digits split individually), Qwen2 (+NFC)).
 *  - QS_TOK_BPE_SPM: SentencePiece-style BPE (LLaMA-1/2, Mistral): " " -> U+2581, a prefix
 *    U+2581, merges by rank (tokenizer.json) or by score (GGUF "llama" vocab), byte fallback
 *    <0xNN> for characters not in the vocabulary.
 * Ids equal those of the Hugging Face `tokenizers` package for the same tokenizer.json
 * (including special tokens added by its post-processor, e.g. LLaMA's BOS). */
#ifndef QS_IO_TOKENIZER_H
#define QS_IO_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef enum qs_tok_kind { QS_TOK_BPE_BYTELEVEL = 0, QS_TOK_BPE_SPM = 1 } qs_tok_kind;

typedef enum qs_tok_pre {
    QS_TOK_PRE_GPT2 = 0, /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    QS_TOK_PRE_LLAMA3,   /* LLaMA-3 regex (also Qwen2's, with NFC) */
    QS_TOK_PRE_SMOLLM,   /* \p{N} individually, then GPT-2 */
    QS_TOK_PRE_QWEN2,
    QS_TOK_PRE_NONE      /* SPM */
} qs_tok_pre;

/* Everything needed to build a tokenizer, as found in GGUF metadata (tokenizer.ggml.*) or in a
 * tokenizer.json. Strings are borrowed (the spec does not own them) unless noted. */
typedef struct qs_tok_spec {
    qs_tok_kind kind;
    qs_tok_pre pre;
    size_t n_tokens;
    const char **tokens;      /* [n_tokens] NUL-terminated UTF-8 token strings */
    const float *scores;      /* [n_tokens] or NULL (SPM merge priority when no merges) */
    const int32_t *types;     /* [n_tokens] GGUF token types (1 normal, 2 unknown, 3 control,
                                 4 user-defined, 6 byte) or NULL */
    size_t n_merges;
    const char **merges;      /* [n_merges] "left right", rank = index; may be 0 for SPM */
    int32_t bos_id, eos_id, unk_id; /* -1 when absent */
    int add_bos;              /* prepend BOS to encodings */
    int add_space_prefix;     /* SPM: prepend U+2581 */
} qs_tok_spec;

typedef struct qs_tokenizer qs_tokenizer;

/* Loads MODEL_DIR/tokenizer.json (or a path to one; or a SentencePiece tokenizer.model, below). Unsupported tokenizer types are a clear
 * error naming the file. */
int qs_tokenizer_load(qs_tokenizer **out, const char *path, qs_error *err);
/* Parses tokenizer.json text (for tests and the fuzzer). */
int qs_tokenizer_parse_json(qs_tokenizer **out, const char *json, size_t len,
                            const char *path_for_errors, qs_error *err);
/* Builds from a spec (copies what it needs; the spec may be freed afterwards). */
int qs_tokenizer_from_spec(qs_tokenizer **out, const qs_tok_spec *spec, qs_error *err);
/* Writes a Hugging Face tokenizer.json equivalent to spec (loadable by the `tokenizers`
 * package and by qs_tokenizer_load, giving the same ids), durably. */
int qs_tok_spec_write_json(const qs_tok_spec *spec, const char *path, qs_error *err);
void qs_tokenizer_free(qs_tokenizer *t); /* NULL is fine */

/* A SentencePiece model file (tokenizer.model, a protobuf; BPE models such as LLaMA-1/2's and
 * Mistral's) as a spec: kind QS_TOK_BPE_SPM, tokens, scores and types, no merges (scores rank the
 * merges), add_bos and add_space_prefix as LlamaTokenizer does. The spec's strings and arrays
 * belong to *store: keep it until the spec is no longer used, then qs_tok_spm_model_free it
 * (NULL is fine). qs_tokenizer_load reads such a file when given a path ending in ".model", or a
 * directory with tokenizer.model and no tokenizer.json. On error nothing is allocated. */
typedef struct qs_tok_spm_model qs_tok_spm_model;
int qs_tok_spm_model_load(qs_tok_spm_model **store, qs_tok_spec *spec, const char *path, qs_error *err);
int qs_tok_spm_model_parse(qs_tok_spm_model **store, qs_tok_spec *spec, const void *data, size_t len,
                           const char *path_for_errors, qs_error *err);
void qs_tok_spm_model_free(qs_tok_spm_model *store);

/* The spec of a model directory's tokenizer: tokenizer.model when there is one (its scores
 * rank SentencePiece merges), else tokenizer.json (for a tokenizer.json, add_space_prefix is 1
 * when a SentencePiece one prepends U+2581 to its text). visit gets it while its strings are
 * valid; its return value is returned. -ENOENT (err untouched) when the directory has
 * neither file. */
typedef int (*qs_tok_spec_fn)(const qs_tok_spec *spec, void *ctx, qs_error *err);
int qs_tok_spec_visit(const char *model_dir, qs_tok_spec_fn visit, void *ctx, qs_error *err);

/* Encodes len bytes of UTF-8 text. *ids is malloc'd (caller frees); *n_ids its length.
 * Invalid UTF-8 is handled as the reference does (byte-level: bytes; SPM: byte fallback). */
int qs_tokenizer_encode(const qs_tokenizer *t, const char *text, size_t len, int32_t **ids,
                        size_t *n_ids, qs_error *err);
size_t qs_tokenizer_vocab_size(const qs_tokenizer *t);
int32_t qs_tokenizer_bos(const qs_tokenizer *t);
/* Decodes ids back to text (malloc'd, NUL-terminated); for tools and tests. */
int qs_tokenizer_decode(const qs_tokenizer *t, const int32_t *ids, size_t n, char **text,
                        qs_error *err);

#endif
