/* util.c: errors, memory and small helpers shared by the nn sources. */
#define _POSIX_C_SOURCE 200809L /* open, fstat, fdopen: refusing FIFOs needs them */
#include "nn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdalign.h>
#include <string.h>

ag_status nn__fail(nn_error *err, ag_status s, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = s;
    }
    return s;
}

ag_status nn__ok(nn_error *err)
{
    if (err) {
        err->status = AG_OK;
        err->msg[0] = '\0';
    }
    return AG_OK;
}

void *nn__mem(size_t bytes, ag_tensor **owner)
{
    size_t n = bytes / sizeof(double) + (bytes % sizeof(double) != 0);
    *owner = ag_zeros(AG_F64, &n, 1);
    return *owner ? ag_data(*owner) : NULL;
}

size_t nn__layout_add(nn__layout *l, size_t count, size_t elem)
{
    const size_t align = alignof(max_align_t);
    size_t bytes, start = (l->size + align - 1) / align * align;
    if (start < l->size || !nn__mul(count, elem, &bytes) || bytes > SIZE_MAX - start) {
        l->overflow = true;
        return 0;
    }
    l->size = start + bytes;
    return start;
}

bool nn__mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

size_t nn__rows(const ag_tensor *x)
{
    return ag_tensor_rank(x) ? ag_tensor_shape(x)[0] : 0;
}

size_t nn__row_len(const ag_tensor *x)
{
    size_t rows = nn__rows(x);
    return rows ? ag_tensor_numel(x) / rows : 0;
}

static const char *file_kind(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

/* O_NONBLOCK so that a FIFO without a writer cannot block the open; fstat
 * then looks at what was opened, and reads block again as fopen's do. */
ag_status nn__open_sized(const char *fn, const char *path, FILE **f, size_t *size, nn_error *err)
{
    *f = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return nn__fail(err, AG_ERR_IO, "%s: cannot open '%s': %s", fn, path, strerror(errno));
    struct stat st;
    int e = fstat(fd, &st) == 0 ? 0 : errno;
    if (e || !S_ISREG(st.st_mode)) {
        close(fd);
        return e ? nn__fail(err, AG_ERR_IO, "%s: cannot read '%s': %s", fn, path, strerror(e))
                 : nn__fail(err, AG_ERR_IO, "%s: '%s' is %s, not a regular file", fn, path,
                            file_kind(st.st_mode));
    }
    if ((uintmax_t)st.st_size > SIZE_MAX || st.st_size > LONG_MAX) {
        close(fd);
        return nn__fail(err, AG_ERR_FORMAT, "%s: '%s' is too large", fn, path);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags != -1)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    if (!(*f = fdopen(fd, "rb"))) {
        e = errno;
        close(fd);
        return nn__fail(err, AG_ERR_IO, "%s: cannot read '%s': %s", fn, path, strerror(e));
    }
    *size = (size_t)st.st_size;
    return AG_OK;
}
