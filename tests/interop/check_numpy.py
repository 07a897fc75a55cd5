#!/usr/bin/env python3
"""NumPy against nn's .npy and safetensors code, through interop_tool.

    check_numpy.py INTEROP_TOOL

.npy: NumPy writes arrays (f4/f8, rank 0 to 8, empty, special values,
versions 1.0/2.0/3.0, big-endian), the tool reads them and prints every
value (%a), compared bit for bit; the tool copies them (load, save) and the
copy must be byte for byte what np.save writes, and load bit for bit.
Files NumPy writes that must be refused (Fortran order, '<i4', truncated,
lying header length) must make the tool fail with a clear message.

safetensors: a file written here with json + numpy (no safetensors
package) is copied by the tool and parsed back the same way; an MLP the
tool exports is checked against its W*.npy (weights transposed, PyTorch's
module indices) and its outputs against a NumPy forward pass.

Exits 77 (skipped) without NumPy; prints 'N passed, M failed'."""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("numpy is not installed: skipped")
    sys.exit(77)

TOOL = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="nn-interop-")
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def tool(*args):
    return subprocess.run([TOOL, *args], capture_output=True, text=True)


def path(name):
    return os.path.join(TMP, name)


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint64).astype(np.uint64)


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(bits(a.astype(a.dtype.newbyteorder("="))),
                                                 bits(b.astype(b.dtype.newbyteorder("="))))


def special(dtype, shape):
    rng = np.random.default_rng(7)
    a = rng.standard_normal(shape).astype(dtype)
    flat = a.reshape(-1)
    extras = [0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(dtype).tiny / 4,
              np.finfo(dtype).max, -np.finfo(dtype).eps]
    flat[:len(extras)] = np.array(extras, dtype=dtype)[:flat.size]
    return a


def printed(out):
    lines = out.splitlines()
    dtype, shape = lines[0].split(" ") if " " in lines[0] else (lines[0], "")
    shape = tuple(int(s) for s in shape.split(",") if s)
    np_dtype = np.float32 if dtype == "f32" else np.float64
    values = np.array([float.fromhex(v) for v in lines[1:]], dtype=np.float64)
    return np.asarray(values.astype(np_dtype)).reshape(shape)


def npy_round_trip(a, name, version=None):
    src, out = path(name + ".npy"), path(name + "-copy.npy")
    if version is None:
        np.save(src, a)
    else:
        with open(src, "wb") as f:
            np.lib.format.write_array(f, a, version=version)
    r = tool("npy-print", src)
    check(r.returncode == 0, f"{name}: npy-print failed: {r.stderr}")
    if r.returncode == 0:
        # %a of a NaN loses its payload: compare NaN positions, other bits exactly
        got, want = printed(r.stdout), np.asarray(a, dtype=a.dtype.newbyteorder("="))
        nan = np.isnan(want)
        check(got.shape == want.shape and np.array_equal(np.isnan(got), nan) and
              same_bits(got[~nan], want[~nan]), f"{name}: printed values differ")
    r = tool("npy-copy", src, out)
    check(r.returncode == 0, f"{name}: npy-copy failed: {r.stderr}")
    if r.returncode == 0:
        native = np.asarray(a, dtype=a.dtype.newbyteorder("<"))
        np.save(path(name + "-ref.npy"), native)
        with open(out, "rb") as f, open(path(name + "-ref.npy"), "rb") as g:
            check(f.read() == g.read(), f"{name}: our file is not np.save's, byte for byte")
        back = np.load(out)
        check(back.dtype == native.dtype and same_bits(back, native),
              f"{name}: NumPy reads other values from our file")


def npy_refused(name, data, phrase):
    src = path(name + ".npy")
    with open(src, "wb") as f:
        f.write(data)
    r = tool("npy-print", src)
    check(r.returncode == 1 and phrase in r.stderr and r.stdout == "",
          f"{name}: expected a refusal naming '{phrase}', got rc {r.returncode}: {r.stderr}")


def npy_bytes(a):
    p = path("tmp.npy")
    np.save(p, a)
    with open(p, "rb") as f:
        return f.read()


def check_npy():
    shapes = [(), (1,), (5,), (3, 4), (2, 3, 4), (2, 1, 2, 1, 2, 1, 2, 3), (0,), (0, 3),
              (1000, 17)]
    for dtype in (np.float32, np.float64):
        for shape in shapes:
            npy_round_trip(special(dtype, shape), f"{np.dtype(dtype).str[1:]}-{shape}")
        for version in ((2, 0), (3, 0)):
            npy_round_trip(special(dtype, (4, 5)), f"{np.dtype(dtype).str[1:]}-v{version[0]}",
                           version)
        big = special(dtype, (3, 5)).astype(np.dtype(dtype).newbyteorder(">"))
        npy_round_trip(big, f"{np.dtype(dtype).str[1:]}-big-endian")
    npy_refused("fortran", npy_bytes(np.asfortranarray(np.ones((3, 4)))), "Fortran order")
    npy_refused("int32", npy_bytes(np.arange(6, dtype="<i4")), "'<i4' is not supported")
    npy_refused("float16", npy_bytes(np.ones(3, dtype="<f2")), "'<f2' is not supported")
    npy_refused("truncated", npy_bytes(np.ones((3, 4)))[:-1], "truncated")
    npy_refused("trailing", npy_bytes(np.ones((3, 4))) + b"\0", "trailing bytes")
    lying = bytearray(npy_bytes(np.ones(3)))
    lying[8:10] = struct.pack("<H", 60000)
    npy_refused("lying-length", bytes(lying), "header length 60000")
    npy_refused("not-npy", b"PK\x03\x04 a zip file", "not a .npy file")


def write_safetensors(p, tensors, meta):
    """The format written by hand: json + numpy, as the reference does."""
    header, offset, blobs = {}, 0, []
    if meta is not None:
        header["__metadata__"] = meta
    for name, a in tensors.items():
        data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": {4: "F32", 8: "F64"}[a.dtype.itemsize],
                        "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(p):
    """Parses a file with json + numpy; checks the layout on the way."""
    with open(p, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    check(n % 8 == 0, f"{p}: header length {n} is not a multiple of 8")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", None)
    tensors, ends = {}, [0]
    for name, e in header.items():
        b, end = e["data_offsets"]
        dtype = {"F32": "<f4", "F64": "<f8"}[e["dtype"]]
        check(b == ends[-1], f"{p}: '{name}' does not follow the previous tensor's data")
        ends.append(end)
        tensors[name] = np.frombuffer(data[b:end], dtype=dtype).reshape(e["shape"])
    check(ends[-1] == len(data), f"{p}: data and offsets differ in length")
    return tensors, meta


def check_safetensors_copy():
    tensors = {"w": special(np.float32, (3, 4)), "naïve \"quoted\"\tname": special(np.float64, (5,)),
               "scalar": np.array(2.5, dtype=np.float64), "empty": np.zeros((0, 2), np.float32),
               "rank8": special(np.float64, (1, 2, 1, 2, 1, 2, 1, 2))}
    meta = {"format": "pt", "note": "ünïcode \\ \"escapes\" \u263a \U0001F600"}
    src, out = path("in.safetensors"), path("out.safetensors")
    write_safetensors(src, tensors, meta)
    r = tool("st-copy", src, out)
    check(r.returncode == 0, f"st-copy failed: {r.stderr}")
    if r.returncode != 0:
        return
    back, back_meta = read_safetensors(out)
    check(back_meta == meta, f"metadata differ: {back_meta}")
    check(list(back) == list(tensors), f"names or order differ: {list(back)}")
    for name, a in tensors.items():
        check(name in back and back[name].dtype == a.dtype and same_bits(back[name], a),
              f"tensor '{name}' differs")
    bad = {"I32": path("i32.safetensors")}
    write_safetensors(bad["I32"], {"x": np.ones(2, np.float32)}, None)
    with open(bad["I32"], "r+b") as f:
        raw = f.read().replace(b'"F32"', b'"I32"')
        f.seek(0)
        f.write(raw)
    r = tool("st-copy", bad["I32"], out)
    check(r.returncode == 1 and "F32 and F64" in r.stderr, f"I32 not refused: {r.stderr}")


def np_act(name, z, slope):
    return {"tanh": np.tanh, "identity": lambda v: v, "relu": lambda v: np.maximum(v, 0),
            "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
            "leaky_relu": lambda v: np.where(v > 0, v, slope * v)}[name](z)


def check_mlp(dtype, acts):
    sizes = "3,16,16,2"
    model, d = path(f"mlp-{dtype}.safetensors"), tempfile.mkdtemp(dir=TMP)
    r = tool("mlp-make", model, dtype, sizes, acts, "42", d)
    check(r.returncode == 0, f"mlp-make failed: {r.stderr}")
    if r.returncode != 0:
        return
    tensors, meta = read_safetensors(model)
    act_list = acts.split(",")
    check(meta.get("nn.activations") == acts and meta.get("format") == "pt", f"metadata {meta}")
    index, names = 0, []
    for layer, act in enumerate(act_list):
        W = np.load(os.path.join(d, f"W{layer + 1}.npy"))
        b = np.load(os.path.join(d, f"b{layer + 1}.npy"))
        check(same_bits(tensors[f"{index}.weight"], W.T), f"{index}.weight is not W{layer + 1}ᵀ")
        check(same_bits(tensors[f"{index}.bias"], b), f"{index}.bias is not b{layer + 1}")
        names += [f"{index}.weight", f"{index}.bias"]
        index += 1 if act == "identity" else 2
    check(sorted(tensors) == sorted(names), f"tensor names {sorted(tensors)}")
    x = np.random.default_rng(3).standard_normal((7, 3)).astype(tensors["0.weight"].dtype)
    np.save(path("x.npy"), x)
    r = tool("mlp-forward", model, path("x.npy"), path("y.npy"))
    check(r.returncode == 0, f"mlp-forward failed: {r.stderr}")
    if r.returncode != 0:
        return
    a, index = x.astype(np.float64), 0
    slope = float(meta["nn.leaky_slope"])
    for act in act_list:
        W = tensors[f"{index}.weight"].astype(np.float64)
        a = np_act(act, a @ W.T + tensors[f"{index}.bias"], slope)
        index += 1 if act == "identity" else 2
    y = np.load(path("y.npy"))
    tol = 1e-5 if dtype == "f32" else 1e-12
    err = float(np.max(np.abs(y - a)))
    check(y.shape == a.shape and err < tol, f"{dtype} forward differs from NumPy's by {err}")


check_npy()
check_safetensors_copy()
check_mlp("f64", "tanh,relu,identity")
check_mlp("f32", "sigmoid,identity,leaky_relu")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
