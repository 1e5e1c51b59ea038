/* tests/test_shard.c - block shards: round trip of float (shuffled) and integer tensors, the same
 * bytes for the same inputs, the file hash reported at write equals the reader's, and damage is
 * always caught: every sampled single-byte flip and every truncation point fails open or verify
 * with a message naming the file. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "checkpoint/shard.h"
#include "tests/testutil.h"

#define NF 3000
#define NC 4096

static float wf[NF];
static uint16_t wb[NF];
static uint8_t codes[NC];
static int32_t gidx[257];

static int write_one(const char *path, int threads, qs_shard_write_info *info) {
    qs_shard_tensor ts[4] = {
        {.name = "self_attn.q_proj.scales", .role = "scales", .dtype = QS_DTYPE_F32, .n_dims = 2, .shape = {100, 30}, .data = wf},
        {.name = "input_layernorm.weight", .role = "norm", .dtype = QS_DTYPE_BF16, .n_dims = 1, .shape = {NF}, .data = wb},
        {.name = "self_attn.q_proj.codes", .role = "codes", .dtype = QS_DTYPE_U8, .n_dims = 2, .shape = {64, 64}, .data = codes},
        {.name = "g_idx", .role = "gather", .dtype = QS_DTYPE_I32, .n_dims = 1, .shape = {257}, .data = gidx},
    };
    qs_shard_opts o = {.zstd_level = 5, .zstd_threads = threads};
    qs_error err = {0};
    int rc = qs_shard_write(path, 7, "{\"method\":\"rtn\",\"wbits\":4,\"group\":128}", ts, 4, &o, info, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    return rc;
}

static int open_and_verify(const char *path, qs_error *err) {
    qs_shard *s;
    int rc = qs_shard_open(&s, path, err);
    if (rc) return rc;
    rc = qs_shard_verify(s, err);
    qs_shard_close(s);
    return rc;
}

int main(void) {
    uint32_t x = 12345;
    for (int i = 0; i < NF; i++) {
        x = x * 1664525u + 1013904223u;
        wf[i] = (float)((int)(x >> 8) - (1 << 23)) / (1 << 20);
        wb[i] = (uint16_t)(0x3f80 + (x >> 28));
    }
    for (int i = 0; i < NC; i++) codes[i] = (uint8_t)((i * 7 + (i >> 5)) & 15);
    for (int i = 0; i < 257; i++) gidx[i] = i / 128;

    char *dir = qs_test_tmpdir("shard");
    char *p1 = qs_path_join(dir, "block-0007.qsh"), *p2 = qs_path_join(dir, "again.qsh"),
         *p3 = qs_path_join(dir, "mt.qsh"), *bad = qs_path_join(dir, "bad.qsh");
    qs_shard_write_info info, info2;
    CHECK(write_one(p1, 0, &info) == 0);
    CHECK(write_one(p2, 0, &info2) == 0);
    CHECK(write_one(p3, 2, NULL) == 0);
    char tmp_name[4096];
    snprintf(tmp_name, sizeof tmp_name, "%s.tmp", p1);
    CHECK(access(tmp_name, F_OK) != 0); /* no temp file left behind */

    char *a, *b;
    size_t la, lb;
    qs_error err = {0};
    CHECK(qs_file_read_all(p1, 1 << 26, &a, &la, &err) == 0);
    CHECK(qs_file_read_all(p2, 1 << 26, &b, &lb, &err) == 0);
    CHECKF(la == lb && memcmp(a, b, la) == 0, "same inputs gave different shard bytes");
    CHECK(info.file_bytes == la && info.file_xxh3 == info2.file_xxh3);
    CHECK(info.raw_bytes == NF * 4 + NF * 2 + NC + 257 * 4);
    printf("shard: %llu raw bytes -> %llu compressed, file %zu bytes\n", (unsigned long long)info.raw_bytes,
           (unsigned long long)info.compressed_bytes, la);

    /* round trip, both writers */
    const char *paths[2] = {p1, p3};
    for (int k = 0; k < 2; k++) {
        qs_shard *s;
        if (qs_shard_open(&s, paths[k], &err)) {
            CHECKF(0, "%s", err.msg);
            continue;
        }
        CHECK(qs_shard_block(s) == 7 && qs_shard_count(s) == 4);
        CHECK(strstr(qs_shard_meta_json(s), "\"group\":128") != NULL);
        CHECKF(qs_shard_verify(s, &err) == 0, "%s", err.msg);
        if (k == 0) CHECK(qs_shard_file_xxh3(s) == info.file_xxh3);
        float rf[NF];
        uint16_t rb[NF];
        uint8_t rc8[NC];
        int32_t ri[257];
        const qs_shard_entry *e = qs_shard_find(s, "self_attn.q_proj.codes");
        CHECK(e && e->shape[0] == 64 && e->dtype == QS_DTYPE_U8 && !e->shuffle && e->offset % 4096 == 0);
        CHECK(qs_shard_read(s, 0, rf, &err) == 0 && memcmp(rf, wf, sizeof wf) == 0);
        CHECK(qs_shard_read(s, 1, rb, &err) == 0 && memcmp(rb, wb, sizeof wb) == 0);
        CHECK(qs_shard_read(s, 2, rc8, &err) == 0 && memcmp(rc8, codes, sizeof codes) == 0);
        CHECK(qs_shard_read(s, 3, ri, &err) == 0 && memcmp(ri, gidx, sizeof gidx) == 0);
        qs_shard_close(s);
    }

    /* single-byte flips at sampled positions everywhere: all must be caught */
    int missed = 0, tried = 0;
    for (size_t pos = 0; pos < la; pos += (pos < 64 ? 1 : 37)) {
        a[pos] ^= 0x5a;
        qs_file_write_durable(bad, a, la, &err);
        a[pos] ^= 0x5a;
        qs_error e2 = {0};
        tried++;
        if (open_and_verify(bad, &e2) == 0) {
            missed++;
            fprintf(stderr, "flip at %zu not detected\n", pos);
        } else if (!strstr(e2.msg, "bad.qsh")) {
            missed++;
            fprintf(stderr, "flip at %zu: message lacks the file name: %s\n", pos, e2.msg);
        }
    }
    CHECKF(missed == 0, "%d of %d flips missed", missed, tried);
    /* a flip inside a frame names the tensor */
    {
        qs_shard *s;
        qs_shard_open(&s, p1, &err);
        const qs_shard_entry *e = qs_shard_find(s, "input_layernorm.weight");
        size_t pos = (size_t)(e->offset + e->csize / 2);
        qs_shard_close(s);
        a[pos] ^= 1;
        qs_file_write_durable(bad, a, la, &err);
        a[pos] ^= 1;
        qs_error e2 = {0};
        CHECK(open_and_verify(bad, &e2) != 0);
        CHECKF(strstr(e2.msg, "input_layernorm.weight") && strstr(e2.msg, "block 7"), "%s", e2.msg);
    }
    /* truncations */
    int trunc_missed = 0;
    for (size_t len = 0; len < la; len += (len < 40 ? 1 : 501)) {
        qs_file_write_durable(bad, a, len, &err);
        qs_error e2 = {0};
        if (open_and_verify(bad, &e2) == 0) trunc_missed++;
    }
    CHECKF(trunc_missed == 0, "%d truncations missed", trunc_missed);

    /* a directory that does not exist: clear error, nothing written */
    char *nodir = qs_path_join(dir, "no/such/dir/block.qsh");
    CHECK(write_one(nodir, 0, NULL) != 0);

    free(a);
    free(b);
    free(p1);
    free(p2);
    free(p3);
    free(bad);
    free(nodir);
    free(dir);
    return qs_test_result();
}
