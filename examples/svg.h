/* svg.h: the examples' small SVG writer: shapes, text (XML-escaped), a
 * line chart with labelled axes, and the training curve nielsen and
 * mnist_mlp draw with --plot. Every write is checked: svg_close reports
 * whether the whole file reached the disk. */
#ifndef EXAMPLES_SVG_H
#define EXAMPLES_SVG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    bool failed; /* a write failed: svg_close returns false */
} svg;

/* Creates path and writes the <svg> element of width x height pixels;
 * false (and s->f NULL) if the file cannot be created. */
bool svg_open(svg *s, const char *path, double width, double height);
/* Ends the picture and closes the file; true when every write succeeded. */
bool svg_close(svg *s);

/* Colours are SVG colour strings ("#d62728", "rgb(1,2,3)", "none"). */
void svg_rect(svg *s, double x, double y, double w, double h, const char *fill);
void svg_circle(svg *s, double cx, double cy, double r, const char *fill, const char *stroke);
void svg_line(svg *s, double x1, double y1, double x2, double y2, const char *stroke);
/* n points (xs[i], ys[i]) joined by straight lines. */
void svg_polyline(svg *s, const double *xs, const double *ys, size_t n, const char *stroke);
/* text at (x, y): anchor "start", "middle" or "end", size in pixels,
 * turned by rotate degrees about (x, y). */
void svg_text(svg *s, double x, double y, const char *anchor, double size, double rotate,
              const char *text);

/* One series against x, with its axes: ticks at round values, the labels,
 * a title above. */
typedef struct {
    const char *title, *x_label, *y_label;
    const char *colour;
    const double *xs, *ys;
    size_t n; /* >= 1 */
} svg_chart;

/* Draws c in the box of width w and height h whose top left is (x, y). */
void svg_line_chart(svg *s, double x, double y, double w, double h, const svg_chart *c);

/* The training curve: the mean training cost and the test accuracy (as a
 * fraction, drawn in %) of epochs first_epoch .. first_epoch + n - 1, in
 * two panels under title, written to path. False if it cannot be written. */
bool svg_training_curve(const char *path, const char *title, size_t first_epoch,
                        const double *cost, const double *accuracy, size_t n);

#endif
