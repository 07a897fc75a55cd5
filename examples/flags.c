/* flags.c: see flags.h. */
#include "flags.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const meta[] = {[FLAG_UINT] = " N", [FLAG_REAL] = " X", [FLAG_PATH] = " PATH",
                                   [FLAG_BOOL] = ""};

/* "program: <message>" on stderr, exit 2: every mistake ends here. */
static void fail(const cli_spec *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli->program);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void print_default(const flag_spec *f)
{
    if (f->kind == FLAG_UINT)
        printf(" (default %" PRIu64 ")", *(const uint64_t *)f->value);
    else if (f->kind == FLAG_REAL)
        printf(" (default %g)", *(const double *)f->value);
    else if (f->kind == FLAG_PATH && *(const char **)f->value)
        printf(" (default %s)", *(const char **)f->value);
}

static void print_usage(const cli_spec *cli)
{
    printf("usage: %s%s%s\n", cli->program, cli->n_flags ? " [flags]" : "",
           cli->operands ? cli->operands : "");
    if (cli->about)
        printf("%s\n", cli->about);
    printf("flags:\n");
    for (size_t i = 0; i < cli->n_flags; i++) {
        const flag_spec *f = &cli->flags[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s", f->name, meta[f->kind]);
        printf("  %-16s %s", left, f->help);
        print_default(f);
        putchar('\n');
    }
    printf("  %-16s %s\n", "-h, --help", "print this and exit");
}

/* What a number for f must be: "an integer in [1, 100]", "a finite number > 0". */
static void describe(const flag_spec *f, char *buf, size_t size)
{
    const char *what = f->kind == FLAG_UINT ? "an integer" : "a finite number";
    const char *fmt = f->kind == FLAG_UINT ? "%.0f" : "%g";
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, fmt, f->min);
    snprintf(hi, sizeof hi, fmt, f->max);
    if (isinf(f->max))
        snprintf(buf, size, "%s %s %s", what, f->above_min ? ">" : ">=", lo);
    else
        snprintf(buf, size, "%s in %c%s, %s]", what, f->above_min ? '(' : '[', lo, hi);
}

static bool in_range(const flag_spec *f, double x)
{
    return (f->above_min ? x > f->min : x >= f->min) && (isinf(f->max) || x <= f->max);
}

/* Decimal digits only: strtoull alone would take "-5" as 2^64 - 5. */
static bool read_uint(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)s[0]))
        return false;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = (uint64_t)x;
    return true;
}

static bool read_real(const char *s, double *out)
{
    if (!s[0] || isspace((unsigned char)s[0])) /* strtod would skip blanks */
        return false;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || *end || !isfinite(x))
        return false;
    *out = x;
    return true;
}

static void set_value(const cli_spec *cli, const flag_spec *f, const char *text)
{
    char want[96];
    uint64_t u;
    double x;
    if (f->kind == FLAG_PATH) {
        if (text[0] == '-')
            fail(cli, "%s needs a path, not %s (see --help)", f->name, text);
        *(const char **)f->value = text;
        return;
    }
    describe(f, want, sizeof want);
    if (f->kind == FLAG_UINT && read_uint(text, &u) && in_range(f, (double)u))
        *(uint64_t *)f->value = u;
    else if (f->kind == FLAG_REAL && read_real(text, &x) && in_range(f, x))
        *(double *)f->value = x;
    else
        fail(cli, "%s wants %s, not '%s'", f->name, want, text);
}

static const flag_spec *find_flag(const cli_spec *cli, const char *name)
{
    for (size_t i = 0; i < cli->n_flags; i++)
        if (strcmp(cli->flags[i].name, name) == 0)
            return &cli->flags[i];
    return NULL;
}

size_t parse_flags(int argc, char **argv, const cli_spec *cli)
{
    size_t n = 0;
    bool only_operands = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_operands || a[0] != '-') {
            if (n >= cli->max_operands)
                fail(cli, "unexpected argument '%s' (see --help)", a);
            cli->operand[n++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_operands = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_usage(cli);
            exit(0);
        }
        const flag_spec *f = find_flag(cli, a);
        if (!f)
            fail(cli, "unknown flag %s (see --help)", a);
        if (f->kind == FLAG_BOOL)
            *(bool *)f->value = true;
        else if (i + 1 < argc)
            set_value(cli, f, argv[++i]);
        else
            fail(cli, "%s needs a value (see --help)", a);
    }
    return n;
}
