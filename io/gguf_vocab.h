/* io/gguf_vocab.h - the tokenizer described by a GGUF file's tokenizer.ggml.* metadata. */
#ifndef QS_IO_GGUF_VOCAB_H
#define QS_IO_GGUF_VOCAB_H

#include "io/gguf.h"
#include "io/tokenizer.h"

/* Fills spec (its arrays and strings malloc'd; free with qs_gguf_tok_spec_free). Model "gpt2" ->
 * byte-level BPE, "llama" -> SentencePiece-style BPE; pre "smollm", "llama-bpe", "qwen2",
 * "gpt-2"/"default". Anything else is QS_EUNSUPPORTED naming the file. */
int qs_gguf_tok_spec_load(const qs_gguf *g, const char *name_for_errors, qs_tok_spec *spec, qs_error *err);
void qs_gguf_tok_spec_free(qs_tok_spec *spec);

#endif
