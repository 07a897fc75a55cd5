/* flags.h: the command-line parser every example and bench/bench share,
 * so they all read flags the same strict way.
 *
 * A program lists its flags in a table and calls parse_flags once:
 *
 *     uint64_t steps = 2000;
 *     const flag_spec flags[] = {
 *         {"--steps", FLAG_UINT, &steps, 1, 1e9, false, "training steps"},
 *     };
 *     const cli_spec cli = {"xor", NULL, "Learns XOR.", flags, 1, NULL, 0};
 *     parse_flags(argc, argv, &cli);
 *
 * Values keep their initial contents unless a flag sets them, so the
 * initial contents are the defaults (--help prints them). A flag's value
 * is the next argument ("--steps 500"); the last occurrence wins.
 *
 * parse_flags never returns on a mistake: it prints one line naming the
 * argument to stderr ("xor: unknown flag --foo (see --help)") and exits
 * with status 2. --help or -h prints the usage to stdout and exits 0. */
#ifndef EXAMPLES_FLAGS_H
#define EXAMPLES_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    FLAG_UINT,   /* uint64_t: decimal digits only, no sign, within [min, max] */
    FLAG_REAL,   /* double: a finite number within [min, max] (or (min, max]) */
    FLAG_PATH,   /* const char *: any argument not starting with '-' */
    FLAG_BOOL,   /* bool: takes no value; present sets it to true */
} flag_kind;

typedef struct {
    const char *name;  /* with its dashes: "--steps" */
    flag_kind kind;
    void *value;       /* uint64_t *, double *, const char ** or bool * by kind */
    double min, max;   /* a number's range; max INFINITY: no bound but finite (reals)
                          or fitting uint64_t (integers) */
    bool above_min;    /* reals: must exceed min (a rate > 0), not merely reach it */
    const char *help;  /* one line for --help */
} flag_spec;

typedef struct {
    const char *program;   /* the name errors begin with: "xor" */
    const char *operands;  /* the operands in the usage line, "[OUT.svg]"; NULL: none */
    const char *about;     /* printed under the usage line by --help; may be NULL */
    const flag_spec *flags;
    size_t n_flags;
    const char **operand;  /* where operands go, in order; NULL: none taken */
    size_t max_operands;   /* more than this many is an error */
} cli_spec;

/* Parses argv[1..argc-1] by cli (exiting on --help or a mistake, see
 * above). Arguments not starting with '-', and all after "--", are
 * operands. Returns how many operands it stored. */
size_t parse_flags(int argc, char **argv, const cli_spec *cli);

#endif
