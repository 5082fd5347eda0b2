"""fastconv.torch: every wrapped operator is differentiable in PyTorch's autograd (gradcheck in
float64), its layers are drop-in replacements for torch.nn's, and tensors cross without a copy.
"""
import ast
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastconv.torch as ft  # noqa: E402
from fastconv.operators import OPERATORS  # noqa: E402

F = torch.nn.functional


def rand(*shape, seed=0, grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=grad)


def gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


# (id, nd, input shape, weight shape, keyword arguments)
CONV_CASES = [
    ("1d", 1, (2, 4, 9), (6, 4, 3), dict(stride=2, padding=1)),
    ("1d-dilated-groups", 1, (1, 4, 11), (4, 2, 3), dict(dilation=2, groups=2)),
    ("2d", 2, (2, 3, 7, 6), (4, 3, 3, 3), dict(padding=1)),
    ("2d-stride-reflect", 2, (1, 2, 8, 7), (3, 2, 3, 2), dict(stride=(2, 1), padding=1,
                                                             padding_mode="reflect")),
    ("2d-same-circular", 2, (1, 2, 6, 6), (2, 2, 3, 3), dict(padding="same",
                                                            padding_mode="circular")),
    ("2d-depthwise", 2, (1, 3, 6, 6), (3, 1, 3, 3), dict(groups=3, padding=1)),
    ("3d", 3, (1, 2, 4, 5, 4), (3, 2, 2, 3, 2), dict(stride=(1, 2, 1), padding=(1, 0, 1))),
]


@pytest.mark.parametrize("nd, x_shape, w_shape, kwargs", [c[1:] for c in CONV_CASES],
                         ids=[c[0] for c in CONV_CASES])
def test_conv_gradcheck_input_weight_bias(nd, x_shape, w_shape, kwargs):
    fn = getattr(ft, f"conv{nd}d")
    x, w, b = rand(*x_shape), rand(*w_shape, seed=1), rand(w_shape[0], seed=2)
    gradcheck(lambda x, w, b: fn(x, w, b, **kwargs), x, w, b)


@pytest.mark.parametrize("nd, x_shape, w_shape, kwargs", [c[1:] for c in CONV_CASES],
                         ids=[c[0] for c in CONV_CASES])
def test_conv_matches_torch(nd, x_shape, w_shape, kwargs):
    x, w, b = rand(*x_shape, grad=False), rand(*w_shape, seed=1, grad=False), \
        rand(w_shape[0], seed=2, grad=False)
    module = getattr(torch.nn, f"Conv{nd}d")(
        x_shape[1], w_shape[0], w_shape[2:], dtype=torch.float64,
        **{k: v for k, v in kwargs.items()})
    with torch.no_grad():
        module.weight.copy_(w)
        module.bias.copy_(b)
        ours = getattr(ft, f"Conv{nd}d")(x_shape[1], w_shape[0], w_shape[2:],
                                         dtype=torch.float64, **kwargs)
        ours.load_state_dict(module.state_dict())
        torch.testing.assert_close(ours(x), module(x), rtol=1e-12, atol=1e-12)


TRANSPOSE_CASES = [
    ("1d", 1, (2, 4, 5), (4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ("2d", 2, (1, 4, 4, 3), (4, 2, 3, 3), dict(stride=2, groups=2)),
    ("2d-dilated", 2, (1, 2, 4, 4), (2, 3, 2, 3), dict(dilation=2, padding=1)),
    ("3d", 3, (1, 2, 3, 3, 2), (2, 2, 2, 2, 3), dict(stride=(2, 1, 1))),
]


@pytest.mark.parametrize("nd, x_shape, w_shape, kwargs", [c[1:] for c in TRANSPOSE_CASES],
                         ids=[c[0] for c in TRANSPOSE_CASES])
def test_conv_transpose_gradcheck_and_value(nd, x_shape, w_shape, kwargs):
    fn = getattr(ft, f"conv_transpose{nd}d")
    groups = kwargs.get("groups", 1)
    x, w, b = rand(*x_shape), rand(*w_shape, seed=1), rand(w_shape[1] * groups, seed=2)
    gradcheck(lambda x, w, b: fn(x, w, b, **kwargs), x, w, b)
    expected = getattr(F, f"conv_transpose{nd}d")(x, w, b, **kwargs)
    torch.testing.assert_close(fn(x, w, b, **kwargs), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_module_output_size(nd):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, f"ConvTranspose{nd}d")(2, 3, 3, stride=2, padding=1)
    ours = getattr(ft, f"ConvTranspose{nd}d")(2, 3, 3, stride=2, padding=1)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn((1, 2) + (4,) * nd)
    size = (8,) * nd  # needs output_padding 1, derived by nn's own _output_padding
    torch.testing.assert_close(ours(x, output_size=size), theirs(x, output_size=size))


@pytest.mark.parametrize("nd, x_shape, kwargs", [
    (1, (2, 3, 8), dict(kernel_size=3, stride=2, padding=1)),
    (2, (2, 2, 6, 5), dict(kernel_size=(3, 2), dilation=(1, 2))),
], ids=["1d", "2d"])
def test_locally_connected_gradcheck(nd, x_shape, kwargs):
    layer = getattr(ft, f"LocallyConnected{nd}d")(x_shape[1], 2, x_shape[2:], dtype=torch.float64,
                                                  **kwargs)
    x = rand(*x_shape)
    fn = getattr(ft, f"locally_connected{nd}d")
    args = {k: v for k, v in kwargs.items() if k != "kernel_size"}
    gradcheck(lambda x, w, b: fn(x, w, b, **args), x, layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), fn(x, layer.weight, layer.bias, **args))


# ---------------------------------------------------------------------------------------------
# Types and devices


def test_rejects_other_dtypes_devices_and_mixes():
    w = torch.ones(1, 1, 3, 3)
    with pytest.raises(TypeError, match="float32 or float64; got torch.float16"):
        ft.conv2d(torch.ones(1, 1, 4, 4, dtype=torch.float16), w.half())
    with pytest.raises(TypeError, match="float32 or float64; got torch.int64"):
        ft.conv2d(torch.ones(1, 1, 4, 4, dtype=torch.int64), w)
    with pytest.raises(TypeError, match="CPU tensor.*meta"):
        ft.conv2d(torch.ones(1, 1, 4, 4, device="meta"), w)
    with pytest.raises(TypeError, match="share one dtype"):
        ft.conv2d(torch.ones(1, 1, 4, 4, dtype=torch.float64), w)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        ft.conv2d(np.ones((1, 1, 4, 4), np.float32), w)


def test_float32_gradients_match_torch():
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ft.conv2d(x, w, stride=2, padding=1).square().sum().backward()
    F.conv2d(x2, w2, stride=2, padding=1).square().sum().backward()
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("needs", ["all", "input", "weight", "weight_and_bias"])
def test_depthwise_layer_gradients_in_one_pass_match_torch(needs, monkeypatch):
    """A depthwise layer's backward computes both gradients in one pass (fastconv.grad's
    conv2d_backward) when autograd asks for both, and each alone when it asks for one."""
    import fastconv
    from fastconv._ops import conv_grad
    passes = []
    one_pass = conv_grad.conv_direct.depthwise_grads
    monkeypatch.setattr(conv_grad.conv_direct, "depthwise_grads",
                        lambda *args: passes.append(1) or one_pass(*args))
    shape, kwargs = (2, 8, 32, 33), dict(padding=1, groups=8)
    x, w, b = rand(*shape), rand(8, 1, 3, 3, seed=1), rand(8, seed=2)
    x.requires_grad_(needs in ("all", "input"))
    w.requires_grad_(needs != "input")
    b.requires_grad_(needs in ("all", "weight_and_bias"))
    x2, w2, b2 = (t.detach().clone().requires_grad_(t.requires_grad) for t in (x, w, b))
    g = rand(*shape, seed=3, grad=False)
    with fastconv.num_threads(2):
        ft.conv2d(x, w, b, **kwargs).backward(g)
    F.conv2d(x2, w2, b2, **kwargs).backward(g)
    for ours, theirs in ((x, x2), (w, w2), (b, b2)):
        assert (ours.grad is None) == (theirs.grad is None)
        if ours.grad is not None:
            torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-12)
    assert len(passes) == (needs == "all")


def test_non_contiguous_tensors_are_accepted():
    # channels_last and strided views: NumPy views with strides; fastconv copies only if needed
    x = rand(2, 3, 8, 9).detach().to(memory_format=torch.channels_last).requires_grad_()
    w = rand(4, 3, 3, 3, seed=1)
    gradcheck(lambda x, w: ft.conv2d(x, w, padding=1), x, w)
    y = rand(2, 3, 9, 8, seed=2).detach().transpose(2, 3).requires_grad_()
    gradcheck(lambda y: ft.conv2d(y, w, stride=2), y)
    torch.testing.assert_close(ft.conv2d(y[:, :, ::2], w), F.conv2d(y[:, :, ::2], w))


# ---------------------------------------------------------------------------------------------
# Zero copy: fastconv receives views of the tensors' memory and its output becomes the tensor


def test_contiguous_tensors_cross_without_copy(monkeypatch):
    seen = {}
    conv = OPERATORS["conv"]

    def spy(nd, x, w, b, kwargs):
        seen["x"], seen["w"], seen["b"] = (a.__array_interface__["data"][0] for a in (x, w, b))
        problem, out = conv.weighted.call(nd, x, w, b, kwargs)
        seen["out"] = out.__array_interface__["data"][0]
        return problem, out

    monkeypatch.setitem(OPERATORS, "conv", dataclasses.replace(
        conv, weighted=dataclasses.replace(conv.weighted, call=spy)))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    y = ft.conv2d(x, w, b, padding=1)
    assert seen["x"] == x.data_ptr() and seen["w"] == w.data_ptr() and seen["b"] == b.data_ptr()
    assert seen["out"] == y.data_ptr()
    torch.testing.assert_close(y, F.conv2d(x, w, b, padding=1), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# A model swaps its layers by changing one import


def small_cnn(nn):
    return torch.nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, padding_mode="reflect"), torch.nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 2, stride=2), torch.nn.ReLU(),
        nn.Conv2d(4, 4, 3, groups=2), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 10))


def test_same_cnn_same_loss_and_gradients_after_sgd_steps():
    torch.manual_seed(0)
    reference, ours = small_cnn(torch.nn), small_cnn(ft)
    ours.load_state_dict(reference.state_dict())
    assert isinstance(ours[0], ft.Conv2d) and isinstance(reference[0], torch.nn.Conv2d) \
        and not isinstance(reference[0], ft.Conv2d)
    x, labels = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (reference, ours)]
    for step in range(4):
        losses = []
        for model, opt in zip((reference, ours), optimizers):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), labels)
            loss.backward()
            losses.append(loss)
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
        for (name, p_ref), p_ours in zip(reference.named_parameters(), ours.parameters()):
            torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"step {step}, {name}: {m}")
        for opt in optimizers:
            opt.step()
    assert losses[0].item() != pytest.approx(F.cross_entropy(reference(x) * 0, labels).item())


# ---------------------------------------------------------------------------------------------
# Pooling, unpooling and resampling

def distinct(*shape, seed=0):
    """float64 values far apart (no ties, so max pooling is differentiable everywhere)."""
    g = torch.Generator().manual_seed(seed)
    n = math_prod(shape)
    return (torch.randperm(n, generator=g).to(torch.float64) / n).reshape(shape) \
        .requires_grad_()


def math_prod(shape):
    out = 1
    for n in shape:
        out *= n
    return out


POOL_CASES = [
    ("max1d", "max_pool1d", (2, 3, 11), dict(kernel_size=3, stride=2, padding=1)),
    ("max2d-ceil-dilated", "max_pool2d", (1, 2, 9, 8), dict(kernel_size=(3, 2), stride=2,
                                                            dilation=(1, 2), ceil_mode=True)),
    ("max3d", "max_pool3d", (1, 2, 5, 6, 5), dict(kernel_size=2)),
    ("avg1d", "avg_pool1d", (2, 3, 10), dict(kernel_size=3, stride=2, padding=1,
                                            count_include_pad=False)),
    ("avg2d-ceil", "avg_pool2d", (1, 2, 9, 8), dict(kernel_size=3, stride=2, padding=1,
                                                    ceil_mode=True)),
    ("avg2d-divisor", "avg_pool2d", (1, 2, 6, 6), dict(kernel_size=2, divisor_override=3)),
    ("avg3d", "avg_pool3d", (1, 1, 4, 5, 6), dict(kernel_size=(2, 3, 2), stride=1)),
    ("adaptive-avg2d", "adaptive_avg_pool2d", (1, 2, 7, 9), dict(output_size=(3, 4))),
    ("adaptive-max1d", "adaptive_max_pool1d", (2, 2, 10), dict(output_size=4)),
    ("adaptive-max3d", "adaptive_max_pool3d", (1, 1, 5, 6, 4), dict(output_size=(2, 3, 2))),
    ("nearest2d", "interpolate", (1, 2, 4, 5), dict(scale_factor=2, mode="nearest")),
    ("linear1d", "interpolate", (1, 2, 6), dict(size=11, mode="linear", align_corners=True)),
    ("bilinear", "interpolate", (1, 2, 4, 5), dict(size=(7, 9), mode="bilinear")),
    ("trilinear", "interpolate", (1, 1, 3, 4, 3), dict(scale_factor=2, mode="trilinear")),
]


@pytest.mark.parametrize("name, shape, kwargs", [c[1:] for c in POOL_CASES],
                         ids=[c[0] for c in POOL_CASES])
def test_pool_and_resample_gradcheck_and_value(name, shape, kwargs):
    x = distinct(*shape)
    ours = getattr(ft, name)
    gradcheck(lambda x: ours(x, **kwargs), x)
    torch.testing.assert_close(ours(x, **kwargs), getattr(F, name)(x, **kwargs),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_pool_indices_and_unpool_gradcheck(nd):
    x = distinct(*((1, 2) + (6,) * nd))
    out, idx = getattr(ft, f"max_pool{nd}d")(x, 2, return_indices=True)
    ref_out, ref_idx = getattr(F, f"max_pool{nd}d")(x, 2, return_indices=True)
    assert torch.equal(idx, ref_idx) and not idx.requires_grad
    unpool = getattr(ft, f"max_unpool{nd}d")
    y = out.detach().requires_grad_()
    gradcheck(lambda y: unpool(y, idx, 2, output_size=(7,) * nd), y)
    torch.testing.assert_close(unpool(y, idx, 2), getattr(F, f"max_unpool{nd}d")(y, idx, 2))


NO_GRAD_CALLS = [
    ("conv2d", lambda x: ft.conv2d(x, rand(4, 3, 3, 3, seed=1, grad=False), padding=1)),
    ("conv_transpose1d", lambda x: ft.conv_transpose1d(
        x[:, :, 0], rand(3, 2, 4, seed=2, grad=False), stride=2)),
    ("max_pool2d-indices", lambda x: ft.max_pool2d(x, 3, 2, 1, return_indices=True)),
    ("adaptive_max_pool2d-indices", lambda x: ft.adaptive_max_pool2d(x, (2, 3),
                                                                     return_indices=True)),
    ("avg_pool2d", lambda x: ft.avg_pool2d(x, 2, ceil_mode=True)),
    ("adaptive_avg_pool2d", lambda x: ft.adaptive_avg_pool2d(x, 3)),
    ("interpolate", lambda x: ft.interpolate(x, scale_factor=2, mode="bilinear")),
]


@pytest.mark.parametrize("call", [c[1] for c in NO_GRAD_CALLS],
                         ids=[c[0] for c in NO_GRAD_CALLS])
def test_calls_without_gradients_skip_autograd_and_give_the_same_values(call):
    """Under torch.no_grad, or with no operand requiring a gradient, the operators run without
    an autograd Function: no graph, the same values (and max-pool indices) as with one."""
    x = rand(2, 3, 7, 8)
    tracked = call(x)
    with torch.no_grad():
        untracked = call(x)
    plain = call(x.detach())
    for got in (untracked, plain):
        for a, b in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, tracked))):
            assert a.grad_fn is None and not a.requires_grad
            assert torch.equal(a, b.detach())
    assert (tracked[0] if isinstance(tracked, tuple) else tracked).grad_fn is not None


def test_pool_modules_match_torch():
    x = torch.randn(2, 3, 12, 12)
    pairs = [
        (ft.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
        (ft.AvgPool2d(2, count_include_pad=False), torch.nn.AvgPool2d(2, count_include_pad=False)),
        (ft.AvgPool1d(3), torch.nn.AvgPool1d(3)),
        (ft.AdaptiveAvgPool2d((5, 3)), torch.nn.AdaptiveAvgPool2d((5, 3))),
        (ft.AdaptiveMaxPool2d(4), torch.nn.AdaptiveMaxPool2d(4)),
        (ft.Upsample(scale_factor=2, mode="bilinear"),
         torch.nn.Upsample(scale_factor=2, mode="bilinear")),
        (ft.Upsample(size=(5, 17)), torch.nn.Upsample(size=(5, 17))),
    ]
    for ours, theirs in pairs:
        xin = x[:, :, 0] if isinstance(ours, torch.nn.AvgPool1d) else x
        torch.testing.assert_close(ours(xin), theirs(xin), msg=lambda m: f"{ours}: {m}")
    pool, unpool = ft.MaxPool2d(2, return_indices=True), ft.MaxUnpool2d(2)
    y, idx = pool(x)
    torch.testing.assert_close(unpool(y, idx, output_size=x.shape),
                               torch.nn.MaxUnpool2d(2)(y, idx, output_size=x.shape))


def test_cnn_with_pooling_same_loss_and_gradients():
    def net(nn):
        return torch.nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), nn.AvgPool2d(2),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(8, 4, 3),
            torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    torch.manual_seed(1)
    reference, ours = net(torch.nn), net(ft)
    ours.load_state_dict(reference.state_dict())
    x, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 5, (8,))
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (reference, ours)]
    for step in range(3):
        losses = []
        for model, opt in zip((reference, ours), optimizers):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), labels)
            loss.backward()
            losses.append(loss)
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
        for p_ref, p_ours in zip(reference.parameters(), ours.parameters()):
            torch.testing.assert_close(p_ours.grad, p_ref.grad, rtol=1e-4, atol=1e-5)
        for opt in optimizers:
            opt.step()


# One OpenMP runtime per process: fastconv's extensions and PyTorch's both ask for
# libgomp.so.1, and the dynamic loader serves the second with the first one loaded, so the two
# thread pools never spin against each other (a wheel carries its libgomp under that same name
# for this reason: setup.py, BdistWheel). Checked in a fresh process for each import order.
OPENMP_RUNTIMES = """
import sys
first, second = sys.argv[1:]
__import__(first); __import__(second)
import numpy as np, torch, fastconv.torch as ft
x, w = torch.randn(2, 4, 16, 16), torch.randn(8, 4, 3, 3)
for _ in range(3):    # both pools busy in turn
    torch.nn.functional.conv2d(x, w, padding=1); ft.conv2d(x, w, padding=1)
with open("/proc/self/maps") as maps:
    print(sorted({line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("order", [("torch", "fastconv"), ("fastconv", "torch")],
                         ids=["torch-first", "fastconv-first"])
def test_pytorch_and_fastconv_share_one_openmp_runtime_in_either_import_order(order):
    run = subprocess.run([sys.executable, "-c", OPENMP_RUNTIMES, *order], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    runtimes = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert len(runtimes) == 1, f"two OpenMP runtimes in one process: {runtimes}"
