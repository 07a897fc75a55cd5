"""What every Python peer shares: the data sizes, the RESULT line, the
timed epoch and the report of which OpenBLAS the process got."""
import ctypes
import time

N_TRAIN = 60000
N_IN = 784


def openblas_info():
    """Which OpenBLAS kernel and thread count this process got (stderr)."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")  # the copy numpy/torch already loaded
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return (f"OpenBLAS core {lib.openblas_get_corename().decode()}, "
                f"{lib.openblas_get_num_threads()} threads")
    except (OSError, AttributeError):
        return "OpenBLAS not found"


def result(who, workload, value, unit):
    print(f"RESULT {who} {workload} {value:.6g} {unit}", flush=True)


def timed_epoch(epoch):
    """A warm-up epoch, then the timed one (as our bench does): returns ex/s."""
    epoch()
    t0 = time.perf_counter()
    epoch()
    return N_TRAIN / (time.perf_counter() - t0)
