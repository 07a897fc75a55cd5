#!/usr/bin/python3
"""NumPy peers for the benchmark suite.

Usage: /usr/bin/python3 bench/peers/numpy_peer.py [--quick] [WORKLOAD ...]

Two implementations, printed as `RESULT <who> <workload> <value> <unit>`:

  numpy-perexample   Michael Nielsen's network.py (neuralnetworksanddeeplearning
                     .com, chapter 1), structure copied as is: a list of
                     (x, y) column-vector pairs, random.shuffle per epoch,
                     update_mini_batch looping over the examples of the mini
                     batch and calling backprop(x, y) on each.  The only
                     changes: a dtype parameter (Nielsen's is f64; the f32
                     variant makes every array float32), Python 3, the
                     weight init divided by sqrt(n_in) (network2's default;
                     values do not change the speed), no evaluate().
                     Workloads: PE-W1-f64, PE-W1-f32, PE-W1-f32-rss
                     (printed without the PE- under who = numpy-perexample).
  numpy-batch        the same network and algorithm with each mini batch as
                     one matrix (examples in rows): W1-f32, W1-f64, W2-f32,
                     W1-f32-rss, W2-f32-rss.

With no workload argument, all timing workloads of both run.  An -rss
workload runs only that workload and prints the process's peak RSS (KiB);
give it alone so the process holds nothing else.

The epoch is one pass over 60,000 examples with a fresh shuffle.  Like our
bench, the batch version trains one untimed warm-up epoch and then times
one epoch.  The per-example version is slow (about 5 s an epoch), so its
warm-up is a tenth of an epoch (6,000 examples), and with --quick it times
only the first 10,000 examples of its epoch (a sixth of the mini-batches)
and reports 10,000 / seconds: the work per example is the same in every
mini batch, so the rate equals the full epoch's.
"""
import random
import resource
import sys
import time

import numpy as np

from peer_common import N_IN, N_TRAIN, openblas_info, result, timed_epoch

def make_data(dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((N_TRAIN, N_IN), dtype=dtype)  # drawn in dtype: no f64 copy
    labels = rng.integers(0, 10, N_TRAIN)
    y = np.zeros((N_TRAIN, 10), dtype=dtype)
    y[np.arange(N_TRAIN), labels] = 1
    return x, y, labels


# ---------------------------------------------------------------------------
# Nielsen's network.py, per example (column vectors)
# ---------------------------------------------------------------------------

class Network(object):

    def __init__(self, sizes, dtype=np.float64):
        self.num_layers = len(sizes)
        self.sizes = sizes
        self.dtype = dtype
        self.biases = [np.random.randn(y, 1).astype(dtype) for y in sizes[1:]]
        self.weights = [(np.random.randn(y, x) / np.sqrt(x)).astype(dtype)
                        for x, y in zip(sizes[:-1], sizes[1:])]

    def feedforward(self, a):
        """Return the output of the network if ``a`` is input."""
        for b, w in zip(self.biases, self.weights):
            a = sigmoid(np.dot(w, a) + b)
        return a

    def SGD(self, training_data, epochs, mini_batch_size, eta, limit=None):
        """Train with mini-batch stochastic gradient descent.  ``limit``
        (ours) stops an epoch after that many examples."""
        n = len(training_data)
        for j in range(epochs):
            random.shuffle(training_data)
            mini_batches = [
                training_data[k:k + mini_batch_size]
                for k in range(0, n if limit is None else limit, mini_batch_size)]
            for mini_batch in mini_batches:
                self.update_mini_batch(mini_batch, eta)

    def update_mini_batch(self, mini_batch, eta):
        """Update the network's weights and biases by applying gradient
        descent using backpropagation to a single mini batch."""
        nabla_b = [np.zeros(b.shape, dtype=self.dtype) for b in self.biases]
        nabla_w = [np.zeros(w.shape, dtype=self.dtype) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw
                        for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb
                       for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        """Return a tuple ``(nabla_b, nabla_w)`` representing the
        gradient for the cost function C_x."""
        nabla_b = [np.zeros(b.shape, dtype=self.dtype) for b in self.biases]
        nabla_w = [np.zeros(w.shape, dtype=self.dtype) for w in self.weights]
        # feedforward
        activation = x
        activations = [x]  # list to store all the activations, layer by layer
        zs = []  # list to store all the z vectors, layer by layer
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        # backward pass
        delta = self.cost_derivative(activations[-1], y) * sigmoid_prime(zs[-1])
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return (nabla_b, nabla_w)

    def cost_derivative(self, output_activations, y):
        return (output_activations - y)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


def perexample_w1(dtype, limit=None):
    np.random.seed(2)
    random.seed(2)
    x, y, _ = make_data(dtype)
    # as Nielsen's mnist_loader: a list of (784x1, 10x1) column vectors
    training_data = list(zip([np.reshape(v, (N_IN, 1)) for v in x],
                             [np.reshape(v, (10, 1)) for v in y]))
    net = Network([N_IN, 30, 10], dtype)
    n = N_TRAIN if limit is None else limit
    net.SGD(training_data, 1, 10, 3.0, limit=PE_WARMUP)  # warm-up: a tenth of an epoch
    t0 = time.perf_counter()
    net.SGD(training_data, 1, 10, 3.0, limit=limit)
    secs = time.perf_counter() - t0
    assert all(w.dtype == dtype for w in net.weights + net.biases)
    assert np.isfinite(net.weights[0]).all()
    return n / secs


# ---------------------------------------------------------------------------
# the same, vectorised per mini batch (rows = examples)
# ---------------------------------------------------------------------------

def batch_w1(dtype):
    """784-30-10 sigmoid, C = sum ||a-y||^2 / (2 batch), SGD 10, lr 3."""
    rng = np.random.default_rng(2)
    x, y, _ = make_data(dtype)
    sizes = [N_IN, 30, 10]
    ws = [(rng.standard_normal((m, n)) / np.sqrt(m)).astype(dtype)
          for m, n in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal(n).astype(dtype) for n in sizes[1:]]
    batch, eta = 10, 3.0

    def epoch():
        perm = rng.permutation(N_TRAIN)
        for k in range(0, N_TRAIN, batch):
            idx = perm[k:k + batch]
            xb, yb = x[idx], y[idx]
            m = xb.shape[0]
            a1 = sigmoid(xb @ ws[0] + bs[0])
            a2 = sigmoid(a1 @ ws[1] + bs[1])
            # dC/dz2 for C = sum ||a2 - y||^2 / (2 m)
            d2 = (a2 - yb) * a2 * (1 - a2)
            d1 = (d2 @ ws[1].T) * a1 * (1 - a1)
            s = eta / m
            ws[1] -= s * (a1.T @ d2)
            bs[1] -= s * d2.sum(axis=0)
            ws[0] -= s * (xb.T @ d1)
            bs[0] -= s * d1.sum(axis=0)

    rate = timed_epoch(epoch)
    assert ws[0].dtype == dtype and np.isfinite(ws[0]).all()
    return rate


def batch_w2():
    """784-256-256-10 ReLU/ReLU/linear, mean softmax CE, SGD 128 lr 0.01, f32."""
    dtype = np.float32
    rng = np.random.default_rng(2)
    x, y, _ = make_data(dtype)
    sizes = [N_IN, 256, 256, 10]
    ws = [(rng.standard_normal((m, n)) * np.sqrt(2.0 / m)).astype(dtype)
          for m, n in zip(sizes[:-1], sizes[1:])]
    bs = [np.zeros(n, dtype=dtype) for n in sizes[1:]]
    batch, lr = 128, 0.01

    def epoch():
        perm = rng.permutation(N_TRAIN)
        for k in range(0, N_TRAIN, batch):  # last partial batch (96) included
            idx = perm[k:k + batch]
            xb, yb = x[idx], y[idx]
            m = xb.shape[0]
            z1 = xb @ ws[0] + bs[0]
            h1 = np.maximum(z1, 0)
            z2 = h1 @ ws[1] + bs[1]
            h2 = np.maximum(z2, 0)
            logits = h2 @ ws[2] + bs[2]
            # softmax cross-entropy, mean over the batch
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            g3 = (p - yb) / dtype(m)
            g2 = (g3 @ ws[2].T) * (z2 > 0)
            g1 = (g2 @ ws[1].T) * (z1 > 0)
            ws[2] -= lr * (h2.T @ g3)
            bs[2] -= lr * g3.sum(axis=0)
            ws[1] -= lr * (h1.T @ g2)
            bs[1] -= lr * g2.sum(axis=0)
            ws[0] -= lr * (xb.T @ g1)
            bs[0] -= lr * g1.sum(axis=0)

    rate = timed_epoch(epoch)
    assert ws[0].dtype == dtype and np.isfinite(ws[0]).all()
    return rate


PE_LIMIT_QUICK = 10000
PE_WARMUP = 6000

ALL = ["PE-W1-f64", "PE-W1-f32", "W1-f32", "W1-f64", "W2-f32"]
RSS = ["PE-W1-f32-rss", "W1-f32-rss", "W2-f32-rss"]


def main(argv):
    quick = "--quick" in argv
    work = [a for a in argv if a != "--quick"] or ALL
    bad = [w for w in work if w not in ALL + RSS]
    if bad:
        sys.exit(f"numpy_peer: unknown workload(s) {bad}; known: {ALL + RSS}")
    limit = PE_LIMIT_QUICK if quick else None
    print(f"# numpy {np.__version__}: {openblas_info()}", file=sys.stderr)
    for w in work:
        if w == "PE-W1-f64":
            result("numpy-perexample", "W1-f64", perexample_w1(np.float64, limit), "ex/s")
        elif w == "PE-W1-f32":
            result("numpy-perexample", "W1-f32", perexample_w1(np.float32, limit), "ex/s")
        elif w == "W1-f32":
            result("numpy-batch", w, batch_w1(np.float32), "ex/s")
        elif w == "W1-f64":
            result("numpy-batch", w, batch_w1(np.float64), "ex/s")
        elif w == "W2-f32":
            result("numpy-batch", w, batch_w2(), "ex/s")
        elif w == "PE-W1-f32-rss":
            perexample_w1(np.float32, limit)
        elif w == "W1-f32-rss":
            batch_w1(np.float32)
        elif w == "W2-f32-rss":
            batch_w2()
    for w in work:
        if w in RSS:  # ru_maxrss is in KiB on Linux
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if w.startswith("PE-"):
                result("numpy-perexample", w[3:], rss, "KiB")
            else:
                result("numpy-batch", w, rss, "KiB")


if __name__ == "__main__":
    main(sys.argv[1:])
