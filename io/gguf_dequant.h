/* io/gguf_dequant.h - ggml block formats: sizes and dequantization to float32. */
#ifndef QS_IO_GGUF_DEQUANT_H
#define QS_IO_GGUF_DEQUANT_H

#include <stddef.h>
#include <stdint.h>

/* elements per block and bytes per block of a ggml type; 0 when unsupported */
size_t qs_ggml_block_size(uint32_t type);
size_t qs_ggml_block_bytes(uint32_t type);
/* Dequantizes n elements (a multiple of the block size) from src; 0 or -1 (unsupported type). */
int qs_ggml_dequantize(uint32_t type, const void *src, float *dst, uint64_t n);

#endif
