/* io/gguf_vocab.h - the tokenizer described by a GGUF file's tokenizer.ggml.* metadata. */
#ifndef QS_IO_GGUF_VOCAB_H
#define QS_IO_GGUF_VOCAB_H

#include "io/gguf.h"
#include "io/tokenizer.h"

/* Fills spec (its arrays and strings malloc'd; free with qs_gguf_tok_spec_free). Model "gpt2" ->
 * byte-level BPE, "llama" -> SentencePiece-style BPE; pre "smollm", "llama-bpe"/"llama3",
 * "qwen2", "gpt-2"/"default"/absent. Anything else is QS_EUNSUPPORTED naming the file.
 * Defaults: add_bos_token 1 for SPM, 0 for byte-level; add_space_prefix 1 for SPM; absent
 * special ids are -1 (present ones must be below the token count). name_for_errors may be
 * NULL (the GGUF's own name is used). On error spec is zeroed and owns nothing. */
int qs_gguf_tok_spec_load(const qs_gguf *g, const char *name_for_errors, qs_tok_spec *spec, qs_error *err);
void qs_gguf_tok_spec_free(qs_tok_spec *spec); /* NULL or a zeroed spec are fine */

#endif
