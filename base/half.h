/* base/half.h - IEEE fp16 and bfloat16 <-> fp32 conversions (round to nearest even). */
#ifndef QS_BASE_HALF_H
#define QS_BASE_HALF_H

#include <stddef.h>
#include <stdint.h>

float qs_f16_to_f32(uint16_t h);
uint16_t qs_f32_to_f16(float f);
float qs_bf16_to_f32(uint16_t b);
uint16_t qs_f32_to_bf16(float f);

/* Bulk conversions; src and dst must not overlap. */
void qs_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void qs_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void qs_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void qs_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);

#endif
