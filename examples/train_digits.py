"""Train a small convolutional network on scikit-learn's 8x8 digits, with fastconv only.

The network is LeNet in miniature, written in NumPy:

    conv 3x3 (1 -> 16, pad 1) -> ReLU -> max-pool 2x2 -> conv 3x3 (16 -> 32, pad 1) -> ReLU
    -> max-pool 2x2 -> dense (128 -> 10) -> softmax cross-entropy

Every convolution runs on fastconv forward (``fastconv.conv2d``) and backward
(``fastconv.grad.conv2d_input``, ``conv2d_weight``, ``conv_bias``); training is plain SGD on
minibatches. The digits data set ships inside scikit-learn: nothing is downloaded.

Run ``python examples/train_digits.py`` (20 epochs in a few seconds; about 98% test accuracy).
"""
import argparse
import sys
import time

import numpy as np

import fastconv
from fastconv import grad

CONV1 = dict(padding=1)
CONV2 = dict(padding=1)


def load_digits_split(test_fraction=0.2, seed=0, dtype=np.float32):
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) scaled to [0, 1], labels 0-9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(dtype)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def init_params(seed=0, dtype=np.float32):
    """He-initialised weights (conv: C_out, C_in, kH, kW) and zero biases."""
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)

    return {
        "w1": he((16, 1, 3, 3), 9), "b1": np.zeros(16, dtype),
        "w2": he((32, 16, 3, 3), 144), "b2": np.zeros(32, dtype),
        "w3": he((10, 128), 128), "b3": np.zeros(10, dtype),
    }


# ------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------
# The network

def forward(params, x):
    """Logits (N, 10) and what the backward pass needs."""
    z1 = fastconv.conv2d(x, params["w1"], params["b1"], **CONV1)
    a1 = np.maximum(z1, 0)
    p1, i1 = fastconv.max_pool2d(a1, 2, return_indices=True)
    z2 = fastconv.conv2d(p1, params["w2"], params["b2"], **CONV2)
    a2 = np.maximum(z2, 0)
    p2, i2 = fastconv.max_pool2d(a2, 2, return_indices=True)
    flat = p2.reshape(len(x), -1)
    logits = flat @ params["w3"].T + params["b3"]
    return logits, (x, z1, a1, i1, p1, z2, a2, i2, p2, flat)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy loss and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_probs[np.arange(n), labels].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), labels] -= 1
    return float(loss), (dlogits / n).astype(logits.dtype)


def backward(params, cache, dlogits):
    """Gradients of the loss with respect to every parameter."""
    x, z1, a1, i1, p1, z2, a2, i2, p2, flat = cache
    grads = {"w3": dlogits.T @ flat, "b3": dlogits.sum(axis=0)}
    dp2 = (dlogits @ params["w3"]).reshape(p2.shape)
    dz2 = grad.max_pool2d(dp2, i2, a2.shape) * (z2 > 0)
    grads["w2"] = grad.conv2d_weight(p1, params["w2"].shape, dz2, **CONV2)
    grads["b2"] = grad.conv_bias(dz2)
    dp1 = grad.conv2d_input(p1.shape, params["w2"], dz2, **CONV2)
    dz1 = grad.max_pool2d(dp1, i1, a1.shape) * (z1 > 0)
    grads["w1"] = grad.conv2d_weight(x, params["w1"].shape, dz1, **CONV1)
    grads["b1"] = grad.conv_bias(dz1)
    return grads


def sgd_step(params, x, labels, learning_rate):
    """One plain SGD step on a minibatch (in place); returns the minibatch loss before it."""
    logits, cache = forward(params, x)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    grads = backward(params, cache, dlogits)
    for name, g in grads.items():
        params[name] -= learning_rate * g.astype(params[name].dtype)
    return loss


def accuracy(params, x, labels, batch_size=512):
    correct = 0
    for start in range(0, len(x), batch_size):
        logits, _ = forward(params, x[start:start + batch_size])
        correct += int((logits.argmax(axis=1) == labels[start:start + batch_size]).sum())
    return correct / len(x)


def _progress_bar(done, total, width=30):
    filled = int(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def train(epochs=20, batch_size=32, learning_rate=0.1, seed=0, progress=True, out=sys.stdout):
    """Train from scratch; returns a dict with the loss per epoch, accuracies and the time."""
    x_train, y_train, x_test, y_test = load_digits_split(seed=seed)
    params = init_params(seed)
    rng = np.random.default_rng(seed + 1)
    steps = -(-len(x_train) // batch_size)
    history = {"loss": [], "test_accuracy": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        total, seen = 0.0, 0
        for step in range(steps):
            batch = order[step * batch_size:(step + 1) * batch_size]
            total += sgd_step(params, x_train[batch], y_train[batch], learning_rate) * len(batch)
            seen += len(batch)
            if progress:
                print(f"\repoch {epoch:2d}/{epochs} {_progress_bar(step + 1, steps)} "
                      f"loss {total / seen:.4f}", end="", file=out,
                      flush=True)
        history["loss"].append(total / len(x_train))
        history["test_accuracy"].append(accuracy(params, x_test, y_test))
        line = (f"epoch {epoch:2d}/{epochs} loss {history['loss'][-1]:.4f} "
                f"test accuracy {history['test_accuracy'][-1]:.2%}")
        print(("\r" + line + " " * 40) if progress else line, file=out, flush=True)
    history["seconds"] = time.perf_counter() - start
    history["train_accuracy"] = accuracy(params, x_train, y_train)
    history["params"] = params
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    opts = parser.parse_args(argv)
    history = train(opts.epochs, opts.batch_size, opts.learning_rate, opts.seed,
                    progress=not opts.no_progress)
    print(f"trained in {history['seconds']:.1f} s with {fastconv.get_num_threads()} threads: "
          f"train accuracy {history['train_accuracy']:.2%}, "
          f"test accuracy {history['test_accuracy'][-1]:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
