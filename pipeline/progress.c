/* pipeline/progress.c - progress bar, lines or JSON lines for `qstream quantize`. */
#include "pipeline/progress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BAR_CELLS 20

qs_progress_mode qs_progress_auto(FILE *out) {
    const char *term = getenv("TERM");
    if (!out || !isatty(fileno(out)) || (term && !strcmp(term, "dumb"))) return QS_PROGRESS_LINES;
    return QS_PROGRESS_BAR;
}

char *qs_progress_fmt_eta(char *buf, size_t size, double seconds) {
    if (!isfinite(seconds) || seconds < 0 || seconds >= 3.6e8) {
        snprintf(buf, size, "--");
        return buf;
    }
    long long s = llround(seconds);
    if (s < 60) snprintf(buf, size, "%llds", s);
    else if (s < 3600) snprintf(buf, size, "%lldm%02llds", s / 60, s % 60);
    else snprintf(buf, size, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    return buf;
}

static int done_total(const qs_progress *p) { return p->first_block + p->done_run; }

/* blocks left x mean wall seconds per block of this run; -1 before any block of this run */
static double eta_seconds(const qs_progress *p, double elapsed) {
    if (p->done_run < 1) return -1;
    int left = p->n_blocks - done_total(p);
    return (left > 0 ? left : 0) * (elapsed / p->done_run);
}

static void draw_bar(qs_progress *p, double t_now) {
    char line[512], eta[32];
    int n = p->n_blocks > 0 ? p->n_blocks : 1, done = done_total(p);
    int cells = (int)((long long)(done < 0 ? 0 : done > n ? n : done) * BAR_CELLS / n);
    size_t k = 0;
    line[k++] = '[';
    for (int i = 0; i < BAR_CELLS; i++) line[k++] = i < cells ? '#' : '-';
    double elapsed = t_now - p->t_start;
    k += (size_t)snprintf(line + k, sizeof line - k, "] %d/%d blocks  ETA %s", done, p->n_blocks,
                          qs_progress_fmt_eta(eta, sizeof eta, eta_seconds(p, elapsed)));
    if (p->done_run > 0) {
        double r = elapsed > 0 ? (double)p->bytes_in / 1e6 / elapsed : 0, d = p->done_run;
        snprintf(line + k, sizeof line - k, r < 10 ? "  %.1f MB/s" : "  %.0f MB/s", r);
        k = strlen(line);
        snprintf(line + k, sizeof line - k, "  load %.1fs wait %.1fs compute %.1fs store %.1fs", p->load / d,
                 p->wait_load / d, p->compute / d, p->store / d);
        k = strlen(line);
    }
    if (p->width > 1 && k > (size_t)p->width - 1) line[k = (size_t)p->width - 1] = 0; /* no wrap */
    fprintf(p->out, "\r%s\033[K", line);
    p->drawn = 1;
}

void qs_progress_start(qs_progress *p, qs_progress_mode mode, FILE *out, int n_blocks, int first_block,
                       double t_now) {
    memset(p, 0, sizeof *p);
    p->mode = out ? mode : QS_PROGRESS_QUIET;
    p->out = out;
    p->n_blocks = n_blocks;
    p->first_block = first_block;
    p->t_start = t_now;
    if (p->mode != QS_PROGRESS_BAR) return;
    struct winsize ws;
    if (!ioctl(fileno(out), TIOCGWINSZ, &ws)) p->width = ws.ws_col;
    draw_bar(p, t_now);
    fflush(out);
}

void qs_progress_block_done(qs_progress *p, const qs_progress_block *b, double t_now) {
    p->done_run++;
    p->load += b->load;
    p->wait_load += b->wait_load;
    p->compute += b->compute;
    p->store += b->store;
    p->bytes_in += b->read_bytes;
    p->bytes_out += b->shard_bytes;
    double elapsed = t_now - p->t_start, eta = eta_seconds(p, elapsed);
    char e[32];
    switch (p->mode) {
    case QS_PROGRESS_QUIET: return;
    case QS_PROGRESS_BAR: draw_bar(p, t_now); break;
    case QS_PROGRESS_LINES:
        if (p->pass) fprintf(p->out, "pass %d/2: ", p->pass);
        fprintf(p->out,
                "block %d/%d: load %.2f s, wait %.2f s, compute %.2f s, store %.2f s, shard %.1f MB, elapsed %.1f s, "
                "ETA %s\n",
                b->block + 1, p->n_blocks, b->load, b->wait_load, b->compute, b->store, (double)b->shard_bytes / 1e6,
                elapsed, qs_progress_fmt_eta(e, sizeof e, eta));
        break;
    case QS_PROGRESS_JSON:
        fprintf(p->out,
                "{\"block\":%d,\"blocks\":%d,\"load_s\":%.3f,\"wait_load_s\":%.3f,\"compute_s\":%.3f,\"store_s\":%.3f,"
                "\"read_bytes\":%llu,\"shard_bytes\":%llu,\"elapsed_s\":%.3f,\"eta_s\":%.3f",
                b->block, p->n_blocks, b->load, b->wait_load, b->compute, b->store, b->read_bytes, b->shard_bytes,
                elapsed, eta);
        fprintf(p->out, p->pass ? ",\"pass\":%d}\n" : "}\n", p->pass);
        break;
    }
    fflush(p->out);
}

void qs_progress_finish(qs_progress *p, double t_now) {
    (void)t_now;
    if (p->mode == QS_PROGRESS_BAR && p->drawn) {
        fputc('\n', p->out);
        fflush(p->out);
        p->drawn = 0;
    }
}
