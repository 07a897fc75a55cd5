/* svg.c: see svg.h. */
#include "svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

/* Every write goes through here, so one failed write marks the file. */
static void put(svg *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (s->f && vfprintf(s->f, fmt, ap) < 0)
        s->failed = true;
    va_end(ap);
}

bool svg_open(svg *s, const char *path, double width, double height)
{
    *s = (svg){.f = fopen(path, "w")};
    if (!s->f)
        return false;
    put(s, "<?xml version='1.0' encoding='UTF-8'?>\n"
           "<svg xmlns='http://www.w3.org/2000/svg' width='%g' height='%g' "
           "viewBox='0 0 %g %g' font-family='sans-serif'>\n", width, height, width, height);
    svg_rect(s, 0, 0, width, height, "white");
    return true;
}

bool svg_close(svg *s)
{
    if (!s->f)
        return false;
    put(s, "</svg>\n");
    bool ok = fclose(s->f) == 0 && !s->failed;
    s->f = NULL;
    return ok;
}

void svg_rect(svg *s, double x, double y, double w, double h, const char *fill)
{
    put(s, "<rect x='%.2f' y='%.2f' width='%.2f' height='%.2f' fill='%s'/>\n", x, y, w, h, fill);
}

void svg_circle(svg *s, double cx, double cy, double r, const char *fill, const char *stroke)
{
    put(s, "<circle cx='%.2f' cy='%.2f' r='%.2f' fill='%s' stroke='%s' stroke-width='0.7'/>\n",
        cx, cy, r, fill, stroke);
}

void svg_line(svg *s, double x1, double y1, double x2, double y2, const char *stroke)
{
    put(s, "<line x1='%.2f' y1='%.2f' x2='%.2f' y2='%.2f' stroke='%s' stroke-width='1'/>\n", x1,
        y1, x2, y2, stroke);
}

void svg_polyline(svg *s, const double *xs, const double *ys, size_t n, const char *stroke)
{
    put(s, "<polyline fill='none' stroke='%s' stroke-width='2' points='", stroke);
    for (size_t i = 0; i < n; i++)
        put(s, "%s%.2f,%.2f", i ? " " : "", xs[i], ys[i]);
    put(s, "'/>\n");
}

void svg_text(svg *s, double x, double y, const char *anchor, double size, double rotate,
              const char *text)
{
    put(s, "<text x='%.2f' y='%.2f' text-anchor='%s' font-size='%g'", x, y, anchor, size);
    if (rotate != 0)
        put(s, " transform='rotate(%g %.2f %.2f)'", rotate, x, y);
    put(s, ">");
    for (const char *c = text; *c; c++) /* the five characters XML reserves */
        switch (*c) {
        case '&': put(s, "&amp;"); break;
        case '<': put(s, "&lt;"); break;
        case '>': put(s, "&gt;"); break;
        case '\'': put(s, "&apos;"); break;
        case '"': put(s, "&quot;"); break;
        default: put(s, "%c", *c);
        }
    put(s, "</text>\n");
}

/* ---------------------------------------------------------- charts */

/* An axis from lo to hi in steps of step: a round number (1, 2 or 5 times
 * a power of ten) giving at most about 6 ticks. */
typedef struct {
    double lo, hi, step;
} axis;

static axis nice_axis(double lo, double hi, bool integers)
{
    if (!(hi > lo)) { /* one value, or all equal: a unit around it */
        double pad = lo != 0 ? fabs(lo) / 10 : 1;
        lo -= pad;
        hi += pad;
    }
    double raw = (hi - lo) / 5, p = pow(10, floor(log10(raw))), step = 10 * p;
    if (raw <= p)
        step = p;
    else if (raw <= 2 * p)
        step = 2 * p;
    else if (raw <= 5 * p)
        step = 5 * p;
    if (integers && step < 1)
        step = 1;
    return (axis){floor(lo / step) * step, ceil(hi / step) * step, step};
}

static void range_of(const double *v, size_t n, double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            *lo = v[i] < *lo ? v[i] : *lo;
            *hi = v[i] > *hi ? v[i] : *hi;
        }
    if (*lo > *hi)
        *lo = *hi = 0; /* nothing finite to show */
}

/* The plot area inside a chart's box, and the maps from data to pixels. */
typedef struct {
    double left, top, width, height;
    axis ax, ay;
} frame;

static double fx(const frame *f, double x)
{
    return f->left + (x - f->ax.lo) / (f->ax.hi - f->ax.lo) * f->width;
}

static double fy(const frame *f, double y)
{
    return f->top + (f->ay.hi - y) / (f->ay.hi - f->ay.lo) * f->height;
}

/* The ticks of an axis (a few; the bound keeps a degenerate one finite). */
static size_t ticks(const axis *a)
{
    double k = (a->hi - a->lo) / a->step;
    return k >= 0 && k < 20 ? (size_t)(k + 0.5) + 1 : 2;
}

/* The axes' lines, their ticks with values, and the grid. */
static void draw_axes(svg *s, const frame *f, const svg_chart *c)
{
    char num[32];
    double bottom = f->top + f->height, right = f->left + f->width;
    for (size_t i = 0, n = ticks(&f->ay); i < n; i++) {
        double v = f->ay.lo + (double)i * f->ay.step, y = fy(f, v);
        svg_line(s, f->left, y, right, y, "#e0e0e0");
        svg_line(s, f->left - 5, y, f->left, y, "black");
        snprintf(num, sizeof num, "%g", fabs(v) < f->ay.step / 1e6 ? 0 : v);
        svg_text(s, f->left - 8, y + 4, "end", 11, 0, num);
    }
    for (size_t i = 0, n = ticks(&f->ax); i < n; i++) {
        double v = f->ax.lo + (double)i * f->ax.step, x = fx(f, v);
        svg_line(s, x, bottom, x, bottom + 5, "black");
        snprintf(num, sizeof num, "%g", v);
        svg_text(s, x, bottom + 18, "middle", 11, 0, num);
    }
    svg_line(s, f->left, f->top, f->left, bottom, "black");
    svg_line(s, f->left, bottom, right, bottom, "black");
    svg_text(s, f->left + f->width / 2, bottom + 36, "middle", 12, 0, c->x_label);
    svg_text(s, f->left - 48, f->top + f->height / 2, "middle", 12, -90, c->y_label);
    svg_text(s, f->left + f->width / 2, f->top - 10, "middle", 14, 0, c->title);
}

void svg_line_chart(svg *s, double x, double y, double w, double h, const svg_chart *c)
{
    double xlo, xhi, ylo, yhi;
    range_of(c->xs, c->n, &xlo, &xhi);
    range_of(c->ys, c->n, &ylo, &yhi);
    frame f = {x + 70, y + 30, w - 90, h - 80, nice_axis(xlo, xhi, true),
               nice_axis(ylo, yhi, false)};
    draw_axes(s, &f, c);
    double *px = malloc(c->n * sizeof *px), *py = malloc(c->n * sizeof *py);
    if (!px || !py) {
        s->failed = true;
    } else {
        for (size_t i = 0; i < c->n; i++) {
            px[i] = fx(&f, c->xs[i]);
            py[i] = fy(&f, isfinite(c->ys[i]) ? c->ys[i] : f.ay.hi);
        }
        svg_polyline(s, px, py, c->n, c->colour);
        for (size_t i = 0; i < c->n; i++)
            svg_circle(s, px[i], py[i], 3, c->colour, c->colour);
    }
    free(px);
    free(py);
}

bool svg_training_curve(const char *path, const char *title, size_t first_epoch,
                        const double *cost, const double *accuracy, size_t n)
{
    double *epochs = malloc(n * sizeof *epochs), *percent = malloc(n * sizeof *percent);
    svg s;
    bool ok = epochs && percent && svg_open(&s, path, 720, 640);
    if (ok) {
        for (size_t i = 0; i < n; i++) {
            epochs[i] = (double)(first_epoch + i);
            percent[i] = 100 * accuracy[i];
        }
        svg_text(&s, 360, 24, "middle", 16, 0, title);
        svg_line_chart(&s, 0, 40, 720, 300,
                       &(svg_chart){"mean training cost per epoch", "epoch", "cost", "#d62728",
                                    epochs, cost, n});
        svg_line_chart(&s, 0, 340, 720, 300,
                       &(svg_chart){"test accuracy per epoch", "epoch", "accuracy (%)",
                                    "#1f77b4", epochs, percent, n});
        ok = svg_close(&s);
    }
    free(epochs);
    free(percent);
    return ok;
}
