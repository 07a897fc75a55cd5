/* threads.h: C11 <threads.h> mapped onto POSIX threads, for the
 * ThreadSanitizer build only (meson option tsan_shim, on by default when
 * b_sanitize has thread). That build puts this directory first on the
 * engine's include path, so the pool (autograd/kernels/pool.c) includes
 * this header instead of the C library's.
 *
 * Why: glibc (2.34 and later) implements thrd_create, mtx_lock, cnd_wait
 * and the rest by calling its internal pthread functions directly, not
 * through the symbols TSan intercepts. TSan then sees neither the new
 * thread's start nor any lock, and reports every access the pool makes
 * under its mutex as a race. Through this header every call is a plain
 * pthread call that TSan knows.
 *
 * The includer must ask for POSIX (_POSIX_C_SOURCE 200809L or more) before
 * its first #include: the mutex types and timed calls need it. */
#ifndef AG_TSAN_THREADS_SHIM_H
#define AG_TSAN_THREADS_SHIM_H

#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200809L
#error "the <threads.h> shim needs _POSIX_C_SOURCE 200809L, defined before the first #include"
#endif

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if !defined(__cplusplus) && (!defined(__STDC_VERSION__) || __STDC_VERSION__ < 202311L)
#define thread_local _Thread_local
#endif

#define ONCE_FLAG_INIT PTHREAD_ONCE_INIT
#define TSS_DTOR_ITERATIONS PTHREAD_DESTRUCTOR_ITERATIONS

typedef pthread_t thrd_t;
typedef pthread_mutex_t mtx_t;
typedef pthread_cond_t cnd_t;
typedef pthread_key_t tss_t;
typedef pthread_once_t once_flag;
typedef int (*thrd_start_t)(void *);
typedef void (*tss_dtor_t)(void *);

enum { thrd_success, thrd_busy, thrd_error, thrd_nomem, thrd_timedout };
enum { mtx_plain = 0, mtx_recursive = 1, mtx_timed = 2 };

/* ------------------------------------------------------------ threads */

typedef struct {
    thrd_start_t fn;
    void *arg;
} ag_tsan_start;

static inline void *ag_tsan_trampoline(void *p)
{
    ag_tsan_start s = *(ag_tsan_start *)p;
    free(p);
    return (void *)(intptr_t)s.fn(s.arg);
}

static inline int thrd_create(thrd_t *thr, thrd_start_t fn, void *arg)
{
    ag_tsan_start *s = malloc(sizeof *s);
    if (!s)
        return thrd_nomem;
    s->fn = fn;
    s->arg = arg;
    int e = pthread_create(thr, NULL, ag_tsan_trampoline, s);
    if (e) {
        free(s);
        return e == ENOMEM ? thrd_nomem : thrd_error;
    }
    return thrd_success;
}

static inline int thrd_join(thrd_t thr, int *res)
{
    void *r;
    if (pthread_join(thr, &r))
        return thrd_error;
    if (res)
        *res = (int)(intptr_t)r;
    return thrd_success;
}

static inline int thrd_detach(thrd_t thr) { return pthread_detach(thr) ? thrd_error : thrd_success; }
static inline thrd_t thrd_current(void) { return pthread_self(); }
static inline int thrd_equal(thrd_t a, thrd_t b) { return pthread_equal(a, b); }
static inline void thrd_yield(void) { sched_yield(); }

static inline _Noreturn void thrd_exit(int res)
{
    pthread_exit((void *)(intptr_t)res);
}

/* 0 when slept the whole time, -1 when a signal woke it, another negative
 * value on other errors, as C11 says. */
static inline int thrd_sleep(const struct timespec *duration, struct timespec *remaining)
{
    if (nanosleep(duration, remaining) == 0)
        return 0;
    return errno == EINTR ? -1 : -2;
}

/* ------------------------------------------------------------ mutexes */

static inline int mtx_init(mtx_t *m, int type)
{
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a))
        return thrd_error;
    int e = pthread_mutexattr_settype(&a, type & mtx_recursive ? PTHREAD_MUTEX_RECURSIVE
                                                                : PTHREAD_MUTEX_NORMAL);
    if (!e)
        e = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return e ? thrd_error : thrd_success;
}

static inline int mtx_lock(mtx_t *m) { return pthread_mutex_lock(m) ? thrd_error : thrd_success; }
static inline int mtx_unlock(mtx_t *m) { return pthread_mutex_unlock(m) ? thrd_error : thrd_success; }
static inline void mtx_destroy(mtx_t *m) { pthread_mutex_destroy(m); }

static inline int mtx_trylock(mtx_t *m)
{
    int e = pthread_mutex_trylock(m);
    return e == 0 ? thrd_success : e == EBUSY ? thrd_busy : thrd_error;
}

static inline int mtx_timedlock(mtx_t *restrict m, const struct timespec *restrict ts)
{
    int e = pthread_mutex_timedlock(m, ts);
    return e == 0 ? thrd_success : e == ETIMEDOUT ? thrd_timedout : thrd_error;
}

/* ------------------------------------------------------------ condition variables */

static inline int cnd_init(cnd_t *c)
{
    int e = pthread_cond_init(c, NULL);
    return e == 0 ? thrd_success : e == ENOMEM ? thrd_nomem : thrd_error;
}

static inline int cnd_signal(cnd_t *c) { return pthread_cond_signal(c) ? thrd_error : thrd_success; }
static inline int cnd_broadcast(cnd_t *c) { return pthread_cond_broadcast(c) ? thrd_error : thrd_success; }
static inline int cnd_wait(cnd_t *c, mtx_t *m) { return pthread_cond_wait(c, m) ? thrd_error : thrd_success; }
static inline void cnd_destroy(cnd_t *c) { pthread_cond_destroy(c); }

static inline int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts)
{
    int e = pthread_cond_timedwait(c, m, ts);
    return e == 0 ? thrd_success : e == ETIMEDOUT ? thrd_timedout : thrd_error;
}

/* ------------------------------------------------------------ once, thread-specific storage */

static inline void call_once(once_flag *flag, void (*fn)(void)) { pthread_once(flag, fn); }

static inline int tss_create(tss_t *key, tss_dtor_t dtor)
{
    return pthread_key_create(key, dtor) ? thrd_error : thrd_success;
}

static inline void *tss_get(tss_t key) { return pthread_getspecific(key); }
static inline int tss_set(tss_t key, void *v) { return pthread_setspecific(key, v) ? thrd_error : thrd_success; }
static inline void tss_delete(tss_t key) { pthread_key_delete(key); }

#endif
