/* cli_check: runs a program and checks how it ended, for the command-line
 * tests of the examples and of bench (examples/meson.build). It is C, not a
 * shell script, so those tests also pass under the valgrind setup, which
 * wraps every test of the examples suite.
 *
 * Usage: cli_check STATUS [--out TEXT]... [--err TEXT]... [--absent PATH]
 *                  -- PROGRAM [ARG...]
 *   STATUS         the exit status PROGRAM must end with
 *   --out TEXT     its stdout must contain TEXT
 *   --err TEXT     its stderr must contain TEXT
 *   --absent PATH  PATH is removed before the run and must not exist after
 * Exits 0 when every check holds, else 1 after saying which did not (and
 * what PROGRAM printed). */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { MAX_TEXTS = 8, OUTPUT = 1 << 16 };

typedef struct {
    int status;
    const char *out[MAX_TEXTS], *err[MAX_TEXTS], *absent;
    size_t n_out, n_err;
    char **cmd;
} checks;

static void usage(void)
{
    fputs("usage: cli_check STATUS [--out TEXT]... [--err TEXT]... [--absent PATH] "
          "-- PROGRAM [ARG...]\n", stderr);
    exit(2);
}

static checks parse(int argc, char **argv)
{
    checks c = {0};
    char *end;
    if (argc < 4 || (c.status = (int)strtol(argv[1], &end, 10), *end))
        usage();
    int i = 2;
    for (; i + 1 < argc && strcmp(argv[i], "--") != 0; i += 2) {
        if (strcmp(argv[i], "--out") == 0 && c.n_out < MAX_TEXTS)
            c.out[c.n_out++] = argv[i + 1];
        else if (strcmp(argv[i], "--err") == 0 && c.n_err < MAX_TEXTS)
            c.err[c.n_err++] = argv[i + 1];
        else if (strcmp(argv[i], "--absent") == 0)
            c.absent = argv[i + 1];
        else
            usage();
    }
    if (i + 1 >= argc || strcmp(argv[i], "--") != 0)
        usage();
    c.cmd = argv + i + 1;
    return c;
}

/* Runs cmd with stdout and stderr into out and err; its exit status, 128 +
 * the signal that ended it, or -1 if it could not be run. */
static int run(char **cmd, FILE *out, FILE *err)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (dup2(fileno(out), 1) < 0 || dup2(fileno(err), 2) < 0)
            _exit(126);
        execv(cmd[0], cmd);
        perror(cmd[0]);
        _exit(127);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void slurp(FILE *f, char *buf)
{
    rewind(f);
    size_t n = fread(buf, 1, OUTPUT - 1, f);
    buf[n] = '\0';
}

/* Counts the texts missing from output, saying which. */
static int missing(const char *const *texts, size_t n, const char *output, const char *stream)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (!strstr(output, texts[i])) {
            fprintf(stderr, "cli_check: %s lacks \"%s\"\n", stream, texts[i]);
            bad++;
        }
    return bad;
}

int main(int argc, char **argv)
{
    checks c = parse(argc, argv);
    static char out[OUTPUT], err[OUTPUT];
    FILE *fo = tmpfile(), *fe = tmpfile();
    if (!fo || !fe)
        return perror("cli_check: tmpfile"), 1;
    if (c.absent)
        remove(c.absent);
    int status = run(c.cmd, fo, fe), bad = 0;
    slurp(fo, out);
    slurp(fe, err);
    fclose(fo);
    fclose(fe);
    if (status != c.status) {
        fprintf(stderr, "cli_check: %s exited with %d, not %d\n", c.cmd[0], status, c.status);
        bad++;
    }
    bad += missing(c.out, c.n_out, out, "stdout");
    bad += missing(c.err, c.n_err, err, "stderr");
    if (c.absent && access(c.absent, F_OK) == 0) {
        fprintf(stderr, "cli_check: %s exists after the run\n", c.absent);
        bad++;
    }
    if (bad)
        fprintf(stderr, "---- stdout:\n%s---- stderr:\n%s", out, err);
    return bad ? 1 : 0;
}
