#!/usr/bin/python3
"""PyTorch (CPU) peer for the benchmark suite.

Usage: /usr/bin/python3 bench/peers/torch_peer.py [--quick] [WORKLOAD ...]

Workloads (default: all timing workloads, i.e. everything but the -rss ones):
  W1-f32 W1-f64            "nielsen" 784-30-10 sigmoid MLP, quadratic cost,
                           SGD batch 10 lr 3.0, one shuffled epoch of 60,000
  W2-f32                   "wide" 784-256-256-10 ReLU MLP, softmax
                           cross-entropy, SGD batch 128 lr 0.01, one epoch
  W3                       micrograd's demo at scale from 0-dim tensors
  W4-1024 W4-2048          f32 square matmul forward and backward
                           (each prints a -fwd and a -bwd line)
  W1-f32-rss W2-f32-rss    run only W1-f32 (W2-f32) and print the peak RSS;
                           give it alone, so the process holds nothing else

Each measurement is printed as `RESULT torch <workload> <value> <unit>`.
Like our bench, W1 and W2 train one untimed warm-up epoch, then time one
epoch (a fresh shuffle each).  Plain tensor code in the way a PyTorch user
writes it (F.linear, autograd, manual SGD under no_grad, grads reset to None
as zero_grad() does by default since 2.0); the data are synthetic, seeded
and built before timing.  TORCH_THREADS (default 2) sets the intra-op
thread count.

Its BLAS: Debian's torch is built with BLAS_INFO=generic and calls sgemm_
through libblas.so.3, which Debian's alternatives point at OpenBLAS (its
fp32 matmuls and linear layers run there, not in oneDNN), so run.sh runs it
as an OpenBLAS-based peer: as is and with OPENBLAS_CORETYPE forced.  The
process prints `OPENBLAS_CORE <name>` (the kernel set OpenBLAS chose) before
its results, and its BLAS_INFO on stderr.

Always run it with Debian's /usr/bin/python3 (the one that has torch).
"""
import os
import re
import resource
import sys
import time

import torch
import torch.nn.functional as F

from peer_common import N_IN, N_TRAIN, openblas_info, timed_epoch
from peer_common import result as peer_result

WHO = "torch"


def result(workload, value, unit):
    peer_result(WHO, workload, value, unit)


def make_data(dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N_TRAIN, N_IN, generator=g, dtype=dtype)
    labels = torch.randint(0, 10, (N_TRAIN,), generator=g)
    return x, labels, g


def init_layer(n_in, n_out, dtype, g):
    # Nielsen's network2 "default" init (Gaussian / sqrt(n_in)); values do
    # not affect speed, this only keeps activations out of saturation.
    w = (torch.randn(n_out, n_in, generator=g, dtype=dtype) / n_in ** 0.5).requires_grad_()
    b = torch.randn(n_out, generator=g, dtype=dtype).requires_grad_()
    return w, b


def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            p.sub_(p.grad, alpha=lr)
            p.grad = None


def w1(dtype):
    """784-30-10 sigmoid/sigmoid, C = sum ||a-y||^2 / (2 batch), SGD 10, lr 3."""
    x, labels, g = make_data(dtype)
    y = F.one_hot(labels, 10).to(dtype)
    w1_, b1 = init_layer(N_IN, 30, dtype, g)
    w2_, b2 = init_layer(30, 10, dtype, g)
    params = [w1_, b1, w2_, b2]
    batch, lr = 10, 3.0

    def epoch():
        perm = torch.randperm(N_TRAIN, generator=g)
        for k in range(0, N_TRAIN, batch):
            idx = perm[k:k + batch]
            xb, yb = x[idx], y[idx]
            a1 = torch.sigmoid(F.linear(xb, w1_, b1))
            a2 = torch.sigmoid(F.linear(a1, w2_, b2))
            loss = ((a2 - yb) ** 2).sum() / (2 * xb.shape[0])
            loss.backward()
            sgd_step(params, lr)
        assert torch.isfinite(loss).item()

    return timed_epoch(epoch)


def w2():
    """784-256-256-10 ReLU/ReLU/linear, mean softmax CE, SGD 128, lr 0.01, f32."""
    dtype = torch.float32
    x, labels, g = make_data(dtype)
    layers = [init_layer(N_IN, 256, dtype, g), init_layer(256, 256, dtype, g),
              init_layer(256, 10, dtype, g)]
    params = [p for layer in layers for p in layer]
    (wa, ba), (wb, bb), (wc, bc) = layers
    batch, lr = 128, 0.01

    def epoch():
        perm = torch.randperm(N_TRAIN, generator=g)
        for k in range(0, N_TRAIN, batch):  # last partial batch (96) included
            idx = perm[k:k + batch]
            xb, yb = x[idx], labels[idx]
            h = torch.relu(F.linear(xb, wa, ba))
            h = torch.relu(F.linear(h, wb, bb))
            logits = F.linear(h, wc, bc)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            sgd_step(params, lr)
        assert torch.isfinite(loss).item()

    return timed_epoch(epoch)


def w3(reps):
    """micrograd's demo at scale: 2-16-16-1 MLP of 0-dim tensors, 156 samples."""
    g = torch.Generator().manual_seed(3)
    n_samples = 156
    sizes = [2, 16, 16, 1]

    def scalar(v):
        return torch.tensor(float(v)).requires_grad_()  # default dtype, f32

    # like micrograd: Neuron(w list, b), Layer(neurons), MLP(layers)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layer = []
        for _ in range(n_out):
            w = [scalar(torch.empty(1).uniform_(-1, 1, generator=g).item()) for _ in range(n_in)]
            layer.append((w, scalar(0.0)))
        layers.append(layer)
    params = [p for layer in layers for (w, b) in layer for p in w + [b]]
    xs = (torch.rand(n_samples, 2, generator=g) * 4 - 2).tolist()
    ys = [1.0 if v else -1.0 for v in (torch.rand(n_samples, generator=g) < 0.5).tolist()]

    def neuron(w, b, x, nonlin):
        act = b
        for wi, xi in zip(w, x):
            act = act + wi * xi
        return act.tanh() if nonlin else act

    def forward(x):
        for li, layer in enumerate(layers):
            last = li == len(layers) - 1
            x = [neuron(w, b, x, not last) for (w, b) in layer]
        return x[0]

    # 156 * 644 + 1 = 100,465 op results, which is exactly the number of
    # autograd nodes in the loss's graph (checked by walking grad_fn).
    nodes = n_samples * 644 + 1
    best = float("inf")
    for _ in range(reps):
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        scores = [forward(x) for x in xs]
        losses = [(1 - yi * si).relu() for yi, si in zip(ys, scores)]
        loss = sum(losses) / n_samples
        loss.backward()
        secs = time.perf_counter() - t0
        best = min(best, secs)
        del scores, losses, loss
    return nodes / best


def w4(n, reps):
    g = torch.Generator().manual_seed(n)
    a = torch.rand(n, n, generator=g).requires_grad_()
    b = torch.rand(n, n, generator=g).requires_grad_()
    dc = torch.rand(n, n, generator=g)
    best_f = best_b = float("inf")
    for r in range(reps + 1):  # r == 0 is the warm-up
        with torch.no_grad():
            t0 = time.perf_counter()
            c = a @ b
            secs = time.perf_counter() - t0
        if r:
            best_f = min(best_f, secs)
    for r in range(reps + 1):
        a.grad = b.grad = None
        c = a @ b
        t0 = time.perf_counter()
        c.backward(dc)  # dA = dC Bᵀ, dB = Aᵀ dC
        secs = time.perf_counter() - t0
        if r:
            best_b = min(best_b, secs)
    return 2 * n ** 3 / best_f / 1e9, 4 * n ** 3 / best_b / 1e9


ALL = ["W1-f32", "W1-f64", "W2-f32", "W3", "W4-1024", "W4-2048"]
RSS = ["W1-f32-rss", "W2-f32-rss"]


def torch_blas():
    """The BLAS torch was built against, from torch.__config__.show():
    Debian's torch says BLAS_INFO=generic (it calls sgemm_ through
    libblas.so.3, which Debian's alternatives point at OpenBLAS, so
    OPENBLAS_CORETYPE reaches its matmuls); pip's wheels say mkl."""
    try:
        m = re.search(r"\bBLAS_INFO=([^,\s]+)", torch.__config__.show())
    except Exception:
        m = None
    return f"built with BLAS_INFO={m.group(1)}" if m else "BLAS_INFO not reported"


def main(argv):
    quick = "--quick" in argv
    work = [a for a in argv if a != "--quick"] or ALL
    bad = [w for w in work if w not in ALL + RSS]
    if bad:
        sys.exit(f"torch_peer: unknown workload(s) {bad}; known: {ALL + RSS}")
    # 2 intra-op threads (the machine's cores); TORCH_THREADS overrides it so
    # that run.sh can also try 1 (torch's OpenMP threads and OpenBLAS's own
    # pthreads then do not compete for the two cores).
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    reps = 2 if quick else 5
    print(f"# torch {torch.__version__}: {torch.get_num_threads()} intra-op threads, "
          f"{torch.get_num_interop_threads()} inter-op threads; {torch_blas()}; "
          f"{openblas_info()}", file=sys.stderr)
    for w in work:
        if w == "W1-f32":
            result(w, w1(torch.float32), "ex/s")
        elif w == "W1-f64":
            result(w, w1(torch.float64), "ex/s")
        elif w == "W2-f32":
            result(w, w2(), "ex/s")
        elif w == "W3":
            result(w, w3(reps), "nodes/s")
        elif w.startswith("W4-"):
            n = int(w[3:])
            fwd, bwd = w4(n, reps)
            result(f"{w}-fwd", fwd, "GFLOP/s")
            result(f"{w}-bwd", bwd, "GFLOP/s")
        elif w == "W1-f32-rss":
            w1(torch.float32)
        elif w == "W2-f32-rss":
            w2()
    for w in work:
        if w in RSS:  # ru_maxrss is in KiB on Linux
            result(w, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "KiB")


if __name__ == "__main__":
    main(sys.argv[1:])
