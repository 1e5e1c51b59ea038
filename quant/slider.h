/* quant/slider.h - SliderQuant's window schedule (../shared/METHODS.md): windows of
 * consecutive decoder blocks, trained one after another.
 *
 * For L blocks: the shallow phase expands [0], [0,1], [0,1,2], [0..3]; the middle phase slides a
 * window of 2 by one block, [3,4], [4,5], ..., [L-5,L-4]; the deep phase contracts [L-4..L-1],
 * [L-3..L-1], [L-2,L-1], [L-1]. Fewer than 8 blocks: the phases overlap and a window that repeats
 * the one before it is dropped (4 blocks: [0], [0,1], [0,1,2], [0..3], [1..3], [2,3], [3]).
 * Starts and ends never decrease, so a block is final (quantized and stored) once the window
 * after the last one holding it starts past it, and the quantized path's input moves forward
 * only when a window's start does. */
#ifndef QS_QUANT_SLIDER_H
#define QS_QUANT_SLIDER_H

/* the largest window: four blocks */
#define QS_SLIDER_MAX_WINDOW 4

typedef struct qs_slider_window {
    int first, last; /* blocks first..last, inclusive */
} qs_slider_window;

/* The schedule of n_layers >= 1 blocks into w (room for qs_slider_count(n_layers)); returns the
 * number of windows (0 for n_layers < 1). */
int qs_slider_count(int n_layers);
int qs_slider_schedule(int n_layers, qs_slider_window *w);

/* index of the last window holding block b (its parameters are final after it) */
int qs_slider_last_window(const qs_slider_window *w, int n, int b);

#endif
