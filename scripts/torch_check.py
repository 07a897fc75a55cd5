#!/usr/bin/env python3
"""Loads MLPs exported by nn_mlp_save_safetensors into PyTorch and compares.

    scripts/torch_check.py [BUILD_DIR]     (default: build)

For each model below, BUILD_DIR/tests/interop/interop_tool makes an MLP
(NN_INIT_NORMAL_SCALED) and exports it; this script reads the file with
json + numpy (not the safetensors package, which Debian lacks), builds the
nn.Sequential its "nn.activations" metadata describes (Linear, then the
activation's module unless it is identity), loads the tensors with
load_state_dict(strict=True), runs both models on the same 256 random
inputs (ours through interop_tool mlp-forward, which imports the file
with nn_mlp_load_safetensors) and prints the largest difference of their
outputs. Then the other way: a model PyTorch initialised, its state_dict
written with json + numpy, imported by ours. Needs python3-torch and
python3-numpy; not a test."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

MODELS = [  # dtype, sizes, activations
    ("f64", "8,64,64,64,64,3", "tanh,gelu,leaky_relu,silu,identity"),
    ("f32", "8,64,64,64,64,3", "tanh,gelu,leaky_relu,silu,identity"),
    ("f32", "8,32,32,32,32,32,1", "relu,elu,sigmoid,tanh,identity,sigmoid"),
]


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    tensors = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        dtype = {"F32": "<f4", "F64": "<f8"}[e["dtype"]]
        tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(e["shape"]).copy()
    return tensors, meta


def module(act, slope):
    return {"sigmoid": torch.nn.Sigmoid(), "tanh": torch.nn.Tanh(), "relu": torch.nn.ReLU(),
            "leaky_relu": torch.nn.LeakyReLU(slope), "gelu": torch.nn.GELU(),
            "silu": torch.nn.SiLU(), "elu": torch.nn.ELU()}[act]


def sequential(tensors, meta):
    layers, index = [], 0
    slope = float(meta.get("nn.leaky_slope", "0.01"))
    for act in meta["nn.activations"].split(","):
        n_out, n_in = tensors[f"{index}.weight"].shape
        layers.append(torch.nn.Linear(n_in, n_out))
        index += 1
        if act != "identity":
            layers.append(module(act, slope))
            index += 1
    model = torch.nn.Sequential(*layers)
    dtype = torch.float64 if tensors["0.weight"].dtype == np.float64 else torch.float32
    model.to(dtype)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return model, dtype


def check(tool, tmp, dtype, sizes, acts):
    path = os.path.join(tmp, "model.safetensors")
    subprocess.run([tool, "mlp-make", path, dtype, sizes, acts, "2024", tmp], check=True)
    tensors, meta = read_safetensors(path)
    model, torch_dtype = sequential(tensors, meta)
    n_in = int(sizes.split(",")[0])
    x = np.random.default_rng(1).standard_normal((256, n_in))
    x = x.astype(np.float64 if dtype == "f64" else np.float32)
    np.save(os.path.join(tmp, "x.npy"), x)
    subprocess.run([tool, "mlp-forward", path, os.path.join(tmp, "x.npy"),
                    os.path.join(tmp, "y.npy")], check=True)
    ours = np.load(os.path.join(tmp, "y.npy"))
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    diff = float(np.max(np.abs(ours.astype(np.float64) - theirs.astype(np.float64))))
    scale = float(np.max(np.abs(theirs)))
    eps = np.finfo(ours.dtype).eps
    print(f"{dtype} {sizes}: Sequential({', '.join(type(m).__name__ for m in model)})")
    print(f"    max |ours - torch| = {diff:.3e}  (max |output| {scale:.3g}, "
          f"{diff / max(scale, 1e-300) / eps:.1f} eps relative)")
    return diff / max(scale, 1e-300) / eps


def write_safetensors(path, state, acts):
    """A state_dict as safetensors with json + numpy, and our activations."""
    header, blobs, offset = {"__metadata__": {"format": "pt", "nn.activations": acts}}, [], 0
    for name, t in state.items():
        data = t.detach().numpy().astype(t.detach().numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": "F64" if t.dtype == torch.float64 else "F32",
                        "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def check_torch_to_ours(tool, tmp):
    """The other way: a model PyTorch initialised, imported by ours."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                                torch.nn.Tanh(), torch.nn.Linear(64, 3)).double()
    path = os.path.join(tmp, "torch.safetensors")
    write_safetensors(path, model.state_dict(), "gelu,tanh,identity")
    x = np.random.default_rng(2).standard_normal((256, 8))
    np.save(os.path.join(tmp, "x.npy"), x)
    subprocess.run([tool, "mlp-forward", path, os.path.join(tmp, "x.npy"),
                    os.path.join(tmp, "y.npy")], check=True)
    ours = np.load(os.path.join(tmp, "y.npy"))
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    diff = float(np.max(np.abs(ours - theirs)))
    scale = float(np.max(np.abs(theirs)))
    print(f"f64 8,64,64,3 made by PyTorch, imported by nn_mlp_load_safetensors: "
          f"{', '.join(type(m).__name__ for m in model)}")
    print(f"    max |ours - torch| = {diff:.3e}  (max |output| {scale:.3g}, "
          f"{diff / scale / np.finfo(np.float64).eps:.1f} eps relative)")
    return diff / scale / np.finfo(np.float64).eps


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    tool = os.path.join(build, "tests", "interop", "interop_tool")
    if not os.access(tool, os.X_OK):
        sys.exit(f"{tool} not found: build first (ninja -C {build})")
    print(f"torch {torch.__version__}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        worst = max([check(tool, tmp, *m) for m in MODELS] + [check_torch_to_ours(tool, tmp)])
    # rounding level: a few hundred ulps of the output's scale at most
    print("rounding level" if worst < 1000 else "NOT at rounding level")
    sys.exit(0 if worst < 1000 else 1)


if __name__ == "__main__":
    main()
