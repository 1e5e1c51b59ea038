/* quant/slider.c - SliderQuant's window schedule (quant/slider.h) */
#include "quant/slider.h"

#include <stddef.h>

typedef struct walk {
    qs_slider_window *w; /* NULL: count only */
    int n, pa, pb;
} walk;

/* appends [a, b] unless it repeats the window before it */
static void push(walk *k, int a, int b) {
    if (k->n > 0 && k->pa == a && k->pb == b) return;
    if (k->w) k->w[k->n] = (qs_slider_window){a, b};
    k->n++, k->pa = a, k->pb = b;
}

int qs_slider_schedule(int L, qs_slider_window *w) {
    walk k = {.w = w};
    if (L < 1) return 0;
    for (int j = 0; j < QS_SLIDER_MAX_WINDOW && j < L; j++) push(&k, 0, j); /* shallow: expanding */
    for (int j = 3; j + 1 <= L - 4; j++) push(&k, j, j + 1);                 /* middle: 2 wide, stride 1 */
    for (int j = L - 4 < 0 ? 0 : L - 4; j < L; j++) push(&k, j, L - 1);     /* deep: contracting */
    return k.n;
}

int qs_slider_count(int n_layers) { return qs_slider_schedule(n_layers, NULL); }

int qs_slider_last_window(const qs_slider_window *w, int n, int b) {
    int last = -1;
    for (int i = 0; i < n; i++)
        if (w[i].first <= b && b <= w[i].last) last = i;
    return last;
}
