/* tools/cmd_verify.c - `qstream verify OUT_DIR`: checks the manifest, every recorded shard's file
 * hash against the manifest, and every frame's hash (the same reader resume uses). Exit 0 when
 * intact (a run still in progress is intact), 1 when anything is damaged or missing. */
#include <stdio.h>
#include <stdlib.h>

#include "base/fileio.h"
#include "checkpoint/manifest.h"
#include "checkpoint/shard.h"
#include "tools/commands.h"

int qs_cmd_verify(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: qstream verify OUT_DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    char *mp = qs_path_join(dir, "manifest.json");
    qs_manifest m;
    qs_error err = {0};
    if (qs_manifest_load(&m, mp, &err)) {
        fprintf(stderr, "qstream verify: %s\n", err.msg);
        free(mp);
        return 1;
    }
    int bad = 0;
    for (size_t i = 0; i < m.n; i++) {
        const qs_manifest_block *b = &m.blocks[i];
        char *p = qs_path_join(dir, b->file);
        qs_shard *s;
        qs_error e = {0};
        if (qs_shard_open(&s, p, &e)) {
            fprintf(stderr, "block %d: %s\n", b->block, e.msg);
            bad++;
        } else {
            if (qs_shard_file_xxh3(s) != b->xxh3) {
                qs_error e2 = {0};
                if (qs_shard_verify(s, &e2)) fprintf(stderr, "block %d: %s\n", b->block, e2.msg);
                else fprintf(stderr, "block %d: %s: file hash differs from the manifest's\n", b->block, p);
                bad++;
            } else if (qs_shard_verify(s, &e) || qs_shard_block(s) != b->block) {
                fprintf(stderr, "block %d: %s\n", b->block, e.code ? e.msg : "shard holds another block");
                bad++;
            }
            qs_shard_close(s);
        }
        free(p);
    }
    if (bad) printf("%s: DAMAGED: %d of %zu recorded blocks failed\n", dir, bad, m.n);
    else printf("%s: intact: %zu of %d blocks recorded and verified%s\n", dir, m.n, m.n_blocks, (int)m.n < m.n_blocks ? " (run incomplete)" : "");
    qs_manifest_free(&m);
    free(mp);
    return bad ? 1 : 0;
}
