/* pipeline/progress.h - progress of `qstream quantize`: one report per finished block.
 *
 * Modes:
 *  - BAR (a terminal): one line redrawn in place ('\r', then "\033[K" to clear the rest):
 *      [#####---------------] 12/80 blocks  ETA 1h02m  312 MB/s  load 1.2s wait 0.0s compute 40.1s store 2.3s
 *    blocks done (resumed ones included) / total; the stage times are means per block of this run.
 *  - LINES: one line per block:
 *      block 12/80: load 1.20 s, wait 0.00 s, compute 40.10 s, store 2.30 s, shard 12.3 MB, elapsed 500.1 s, ETA 1h02m
 *    (the block's own times; "block 12" is block index 11, counted from 1).
 *  - JSON: one object per line (block is the 0-based index, as in blocks/block-NNNN.qsh):
 *      {"block":11,"blocks":80,"load_s":1.200,"wait_load_s":0.000,"compute_s":40.100,"store_s":2.300,
 *       "read_bytes":123,"shard_bytes":456,"elapsed_s":500.100,"eta_s":3720.000}
 *  - QUIET: nothing.
 * ETA = blocks left x mean wall seconds per block finished in this run (elapsed / blocks finished
 * in this run: blocks skipped on resume do not count). MB/s = bytes read this run / elapsed
 * (MB = 10^6 bytes). Elapsed counts from qs_progress_start. Times are passed in (t_now, seconds
 * on any monotonic clock such as qs_now()) so the output is a function of the inputs.
 *
 * Not thread-safe: start, then block_done calls from one thread at a time (the store thread),
 * then finish. Output is flushed after each report. Nothing is allocated. */
#ifndef QS_PIPELINE_PROGRESS_H
#define QS_PIPELINE_PROGRESS_H

#include <stdio.h>

typedef enum qs_progress_mode {
    QS_PROGRESS_QUIET,
    QS_PROGRESS_LINES,
    QS_PROGRESS_BAR,
    QS_PROGRESS_JSON
} qs_progress_mode;

typedef struct qs_progress {
    qs_progress_mode mode;
    FILE *out;               /* borrowed */
    int n_blocks;            /* blocks in the model */
    int first_block;         /* blocks already done when this run started (resume) */
    int done_run;            /* blocks finished in this run */
    int width;               /* BAR: terminal columns (0: unknown, no cut) */
    int drawn;               /* BAR: a line is on the screen (finish ends it) */
    double t_start;          /* t_now of qs_progress_start */
    double load, wait_load, compute, store; /* sums over this run, seconds */
    unsigned long long bytes_in;  /* read this run */
    unsigned long long bytes_out; /* shards written this run */
    int pass;                /* a two-pass run's pass (1, 2; LINES and JSON say it), 0: one pass */
} qs_progress;

/* BAR when out is a terminal (and TERM is not "dumb"), else LINES. JSON is only ever asked for. */
qs_progress_mode qs_progress_auto(FILE *out);

/* Starts reporting on out for a run over n_blocks blocks of which the first first_block are done
 * already. BAR draws the bar at once (no ETA yet) and reads the terminal width from out. */
void qs_progress_start(qs_progress *p, qs_progress_mode mode, FILE *out, int n_blocks, int first_block,
                       double t_now);

/* One finished block (durable): its index and per-stage seconds, the bytes read for it and the
 * size of its shard. */
typedef struct qs_progress_block {
    int block;
    double load, wait_load, compute, store;
    unsigned long long read_bytes, shard_bytes;
} qs_progress_block;
void qs_progress_block_done(qs_progress *p, const qs_progress_block *b, double t_now);

/* Ends the report: BAR ends its line with '\n'; the other modes write nothing. */
void qs_progress_finish(qs_progress *p, double t_now);

/* Formats seconds as an ETA: "42s", "12m05s", "1h02m" (rounded to whole seconds; negative or
 * non-finite -> "--"). Returns buf. */
char *qs_progress_fmt_eta(char *buf, size_t size, double seconds);

#endif
