/* refcheck: runs every case of a reference file (tests/data/FORMAT.md).
 *   refcheck FILE [--dtype f32|f64] [--graph]
 * --graph takes the first-order gradients with ag_gradients and
 * AG_CREATE_GRAPH (the recorded backward) instead of ag_backward's fused
 * kernels; hvp lines are checked in either mode.
 * Prints one line per failing case with its worst element, then
 * "N passed, M failed"; exits 0 only when every case passes. */
#include "refcase.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *bigger = realloc(buf, cap *= 2);
        if (!bigger)
            free(buf);
        buf = bigger;
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *dtype = "f64";
    ref_mode mode = REF_FUSED;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc)
            dtype = argv[++i];
        else if (strcmp(argv[i], "--graph") == 0)
            mode = REF_GRAPH;
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            path = NULL, i = argc;
    }
    bool f32 = strcmp(dtype, "f32") == 0;
    if (!path || (!f32 && strcmp(dtype, "f64") != 0)) {
        fprintf(stderr, "usage: refcheck FILE [--dtype f32|f64] [--graph]\n");
        return 2;
    }
    size_t len;
    char *text = read_all(path, &len), err[256];
    if (!text) {
        perror(path);
        return 2;
    }
    ref_file file;
    bool ok = ref_parse(text, len, &file, err, sizeof err);
    free(text);
    if (!ok) {
        fprintf(stderr, "%s: %s\n", path, err);
        return 2;
    }
    size_t passed = 0, failed = 0;
    for (size_t i = 0; i < file.n; i++) {
        ref_result r = ref_run_mode(&file.cases[i], f32 ? AG_F32 : AG_F64, f32 ? 1e-4 : 1e-9, mode);
        if (r.passed) {
            passed++;
            continue;
        }
        failed++;
        printf("FAIL %s: %s: got %.17g want %.17g\n", file.cases[i].name, r.what, r.got, r.want);
    }
    printf("%zu passed, %zu failed\n", passed, failed);
    ref_free(&file);
    return failed || passed == 0 ? 1 : 0;
}
