/* binary_io.c: the numbers of nn's binary files (model files, checkpoints,
 * .npy, safetensors) are little-endian whatever the host's byte order;
 * model files and checkpoints also keep a CRC-32 of every byte written or
 * read. One writer and one reader for all of them. */
#include "nn_internal.h"

#include <errno.h>
#include <string.h>

bool nn__host_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b[2];
    memcpy(b, &one, 2);
    return b[0] == 1;
}

void nn__swap_bytes(void *p, size_t n, size_t es)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++, b += es)
        for (size_t j = 0; j < es / 2; j++) {
            unsigned char t = b[j];
            b[j] = b[es - 1 - j];
            b[es - 1 - j] = t;
        }
}

/* n little-endian bytes of v into b, and back. */
static void put_le(unsigned char *b, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | b[i];
    return v;
}

/* Through a buffer, whose elements are swapped on a big-endian host: one
 * path for both byte orders. */
int nn__write_le(FILE *f, const void *data, size_t n, size_t es)
{
    nn__writer w = {.f = f};
    nn__put_array(&w, data, n, es);
    return w.err;
}

/* ---------------------------------------------------------------- write */

void nn__put_bytes(nn__writer *w, const void *p, size_t n)
{
    w->crc = nn_crc32(w->crc, p, n);
    if (!w->err && fwrite(p, 1, n, w->f) != n)
        w->err = errno ? errno : EIO;
}

void nn__put_int(nn__writer *w, uint64_t v, size_t n)
{
    unsigned char b[8];
    put_le(b, v, n);
    nn__put_bytes(w, b, n);
}

void nn__put_real(nn__writer *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    nn__put_int(w, u, 8);
}

void nn__put_array(nn__writer *w, const void *p, size_t n, size_t es)
{
    unsigned char buf[4096]; /* a multiple of every element size */
    bool swap = !nn__host_little_endian();
    for (size_t done = 0; done < n;) {
        size_t k = n - done < sizeof buf / es ? n - done : sizeof buf / es;
        memcpy(buf, (const unsigned char *)p + done * es, k * es);
        if (swap)
            nn__swap_bytes(buf, k, es);
        nn__put_bytes(w, buf, k * es);
        done += k;
    }
}

/* ---------------------------------------------------------------- read */

bool nn__get_bytes(nn__reader *r, void *p, size_t n)
{
    size_t got = fread(p, 1, n, r->f);
    r->crc = nn_crc32(r->crc, p, got);
    r->pos += got;
    if (got != n && ferror(r->f))
        r->io_error = true;
    return got == n;
}

bool nn__get_int(nn__reader *r, uint64_t *v, size_t n)
{
    unsigned char b[8];
    if (!nn__get_bytes(r, b, n))
        return false;
    *v = get_le(b, n);
    return true;
}

bool nn__get_real(nn__reader *r, double *v)
{
    uint64_t u;
    if (!nn__get_int(r, &u, 8))
        return false;
    memcpy(v, &u, 8);
    return true;
}

bool nn__get_array(nn__reader *r, void *p, size_t n, size_t es)
{
    if (!nn__get_bytes(r, p, n * es))
        return false;
    if (!nn__host_little_endian())
        nn__swap_bytes(p, n, es);
    return true;
}
