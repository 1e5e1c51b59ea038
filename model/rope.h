/* model/rope.h - rotary embedding tables (rotate-half convention), with LLaMA-3 frequency
 * scaling, computed in double precision and stored as float. */
#ifndef QS_MODEL_ROPE_H
#define QS_MODEL_ROPE_H

#include "base/error.h"
#include "io/config.h"

typedef struct qs_rope_table {
    int n_pos, half;
    float *cos_t; /* [n_pos, half] */
    float *sin_t; /* [n_pos, half] */
} qs_rope_table;

int qs_rope_table_init(qs_rope_table *r, const qs_model_config *cfg, int n_pos, qs_error *err);
void qs_rope_table_free(qs_rope_table *r);

#endif
