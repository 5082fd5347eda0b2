"""The training example (examples/train_digits.py): a network built on fastconv learns.

Specification:
- a short run (5 epochs) lowers the loss and exceeds 90% test accuracy on held-out digits;
- the network computes the same loss, gradients and post-step loss as the same network in
  PyTorch's functional ops from the same initial weights (float32 tolerance);
- the example's private max-pool agrees with PyTorch's, indices and ties included.
"""
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_digits.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_training_lowers_the_loss_and_learns_the_digits(example):
    log = io.StringIO()
    history = example.train(epochs=5, progress=False, out=log)
    assert len(history["loss"]) == 5
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["test_accuracy"][-1] > 0.90
    assert log.getvalue().count("test accuracy") == 5


def test_progress_bar_is_printed_per_step(example):
    log = io.StringIO()
    example.train(epochs=1, progress=True, out=log)
    assert "[" + "#" * 30 + "]" in log.getvalue()


def torch_network(torch, example, params, x, labels):
    """The example's network in PyTorch's functional ops; returns the mean cross-entropy."""
    F = torch.nn.functional
    a1 = F.relu(F.conv2d(x, params["w1"], params["b1"], **example.CONV1))
    p1 = F.max_pool2d(a1, 2)
    a2 = F.relu(F.conv2d(p1, params["w2"], params["b2"], **example.CONV2))
    p2 = F.max_pool2d(a2, 2)
    logits = F.linear(p2.reshape(len(x), -1), params["w3"], params["b3"])
    return F.cross_entropy(logits, labels)


def test_one_step_matches_the_same_network_in_pytorch(example):
    torch = pytest.importorskip("torch")
    x_train, y_train, _, _ = example.load_digits_split()
    x, y = x_train[:64], y_train[:64]
    params = example.init_params(seed=3)
    torch_params = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    lr = 0.1

    # the same loss and gradients before the step
    logits, cache = example.forward(params, x)
    loss, dlogits = example.softmax_cross_entropy(logits, y)
    grads = example.backward(params, cache, dlogits)
    torch_loss = torch_network(torch, example, torch_params, torch.tensor(x), torch.tensor(y))
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-5)
    for name, g in grads.items():
        assert g.dtype == np.float32, name
        np.testing.assert_allclose(g, torch_params[name].grad.numpy(), rtol=1e-4, atol=1e-5,
                                   err_msg=name)

    # one SGD step on both sides, then the same loss
    example.sgd_step(params, x, y, lr)
    with torch.no_grad():
        for p in torch_params.values():
            p -= lr * p.grad
    after, _ = example.softmax_cross_entropy(example.forward(params, x)[0], y)
    torch_after = torch_network(torch, example, torch_params, torch.tensor(x),
                                torch.tensor(y)).item()
    assert after < loss
    assert after == pytest.approx(torch_after, rel=1e-5)


def test_network_pools_with_fastconv_max_pool_and_its_gradient(example):
    """The example's pooling is fastconv's own, forward (with indices) and backward."""
    import inspect
    source = inspect.getsource(example.forward) + inspect.getsource(example.backward)
    assert "fastconv.max_pool2d" in source and "grad.max_pool2d" in source
