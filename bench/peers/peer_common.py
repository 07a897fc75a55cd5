"""What every Python peer shares: the data sizes, the RESULT line, the
timed epoch and the report of which OpenBLAS the process got."""
import ctypes
import time

N_TRAIN = 60000
N_IN = 784


def _loaded_openblas():
    """(ctypes library, symbol prefix, symbol suffix, path) of the OpenBLAS
    this process has loaded, or None.  Looks in /proc/self/maps, so it finds
    the copy numpy or torch actually linked (Debian's libopenblas.so.0, or a
    wheel's bundled libopenblas64_ / libscipy_openblas with prefixed and
    suffixed symbols), not just whatever libopenblas.so.0 would load now."""
    try:
        paths = []
        with open("/proc/self/maps") as maps:
            for line in maps:
                f = line.split()
                if len(f) >= 6 and "openblas" in f[5].rsplit("/", 1)[-1] and f[5] not in paths:
                    paths.append(f[5])
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already mapped: the same handle
        except OSError:
            continue
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_"):
                if hasattr(lib, f"{prefix}openblas_get_corename{suffix}"):
                    return lib, prefix, suffix, path
    return None


def openblas_core():
    """(core name, thread count, version/config string) of the loaded
    OpenBLAS, or None when none is loaded.  threadpoolctl, where installed,
    is asked first (its "architecture" is openblas_get_corename())."""
    try:
        from threadpoolctl import threadpool_info
        for info in threadpool_info():
            if info.get("internal_api") == "openblas" and info.get("architecture"):
                return (info["architecture"], info.get("num_threads"),
                        f"OpenBLAS {info.get('version')} (threadpoolctl: {info.get('filepath')})")
    except Exception:  # not installed, or an old one without these keys
        pass
    found = _loaded_openblas()
    if found is None:
        return None
    lib, prefix, suffix, path = found
    corename = getattr(lib, f"{prefix}openblas_get_corename{suffix}")
    corename.restype = ctypes.c_char_p
    threads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
    config = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
    if config is not None:
        config.restype = ctypes.c_char_p
    return (corename().decode(), threads() if threads else None,
            (config().decode() if config else "OpenBLAS") + f" ({path})")


def openblas_info():
    """Which OpenBLAS kernel and thread count this process got: a string for
    the stderr note.  Also prints `OPENBLAS_CORE <name>` (or `none`) on
    stdout, the line run.sh files each result under; call it once BLAS is
    loaded (after importing numpy or torch)."""
    core = openblas_core()
    print(f"OPENBLAS_CORE {core[0] if core else 'none'}", flush=True)
    if core is None:
        return "no OpenBLAS loaded"
    return f"OpenBLAS core {core[0]}, {core[1]} threads; {core[2]}"


def result(who, workload, value, unit):
    print(f"RESULT {who} {workload} {value:.6g} {unit}", flush=True)


def timed_epoch(epoch):
    """A warm-up epoch, then the timed one (as our bench does): returns ex/s."""
    epoch()
    t0 = time.perf_counter()
    epoch()
    return N_TRAIN / (time.perf_counter() - t0)
