"""Pooling, unpooling and resampling benchmark cases (NCHW float32): fastconv against PyTorch
and, where people would write one, a NumPy baseline.

These operators are memory-bound, so each case reports the bytes it must read plus write
(inputs, outputs, int64 indices) and the runner prints effective GB/s.
"""
import numpy as np

import fastconv
import fastconv.grad
from fastconv.benchmarks import Case, require, torch_threads


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _torch_call(fn_of_torch):
    """A peer factory: fn_of_torch(torch, F, tensors) -> the callable, run under no_grad."""
    def make(inp):
        torch = require("torch")
        torch_threads(torch, fastconv.get_num_threads())
        tensors = {k: torch.from_numpy(v) for k, v in inp.items()}
        call = fn_of_torch(torch, torch.nn.functional, tensors)

        def run():
            with torch.no_grad():
                return call()
        return run
    return make


def numpy_max_pool_k2s2(x):
    """The NumPy baseline for 2x2/2 max pooling with indices: reshape, argmax over the four."""
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    blocks = blocks.reshape(n, c, h // 2, w // 2, 4)
    which = blocks.argmax(axis=-1)
    values = np.take_along_axis(blocks, which[..., None], axis=-1)[..., 0]
    rows = np.arange(h // 2)[:, None] * 2 + which // 2
    cols = np.arange(w // 2)[None, :] * 2 + which % 2
    return values, rows * w + cols


def numpy_avg_pool_k2s2(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5), dtype=np.float32)


def numpy_max_unpool(values, indices, out_size):
    n, c = values.shape[:2]
    out = np.zeros((n, c, int(np.prod(out_size))), values.dtype)
    np.put_along_axis(out, indices.reshape(n, c, -1), values.reshape(n, c, -1), axis=2)
    return out.reshape((n, c) + tuple(out_size))


def _maxpool_case(name, shape, k, s, p, numpy_impl=None):
    def make_inputs():
        return {"x": _random(shape)}

    impls = {
        "fastconv": lambda inp: (lambda: fastconv.max_pool2d(inp["x"], k, s, p,
                                                             return_indices=True)),
        "torch": _torch_call(lambda torch, F, t: (lambda: F.max_pool2d(
            t["x"], k, s, p, return_indices=True))),
    }
    if numpy_impl is not None:
        impls["numpy"] = lambda inp: (lambda: numpy_impl(inp["x"]))

    def bytes_moved(inp):
        out = fastconv.planning.pool_output_size
        oh, ow = (out(n, k, s, p) for n in shape[2:])
        return inp["x"].nbytes + shape[0] * shape[1] * oh * ow * (4 + 8)   # values + int64
    return Case(name=name, family="pool",
                description=f"max_pool2d x{shape} k{k} s{s} p{p} return_indices=True",
                make_inputs=make_inputs, impls=impls, bytes_moved=bytes_moved)


def _pool_2x2_case(name, op, numpy_impl=None):
    """A 2x2 stride-2 pool without indices, `op` "max_pool2d" (a call that does not ask for
    indices must not pay for them) or "avg_pool2d"."""
    shape = (32, 64, 56, 56)
    impls = {"fastconv": lambda inp: (lambda: getattr(fastconv, op)(inp["x"], 2, 2)),
             "torch": _torch_call(lambda torch, F, t: (lambda: getattr(F, op)(t["x"], 2, 2)))}
    if numpy_impl is not None:
        impls["numpy"] = lambda inp: (lambda: numpy_impl(inp["x"]))
    return Case(name=name, family="pool", description=f"{op} x{shape} k2 s2",
                make_inputs=lambda: {"x": _random(shape)}, impls=impls,
                bytes_moved=lambda inp: inp["x"].nbytes * 5 / 4)


def _adaptive_avgpool_case():
    """Adaptive average pooling to 7x7 (the head of VGG and AlexNet), windows of 8x8."""
    shape = (32, 64, 56, 56)
    return Case(
        name="adaptive_avgpool_7x7", family="pool",
        description=f"adaptive_avg_pool2d x{shape} -> (7, 7)",
        make_inputs=lambda: {"x": _random(shape)},
        impls={"fastconv": lambda inp: (lambda: fastconv.adaptive_avg_pool2d(inp["x"], 7)),
               "torch": _torch_call(lambda torch, F, t: (
                   lambda: F.adaptive_avg_pool2d(t["x"], 7)))},
        bytes_moved=lambda inp: inp["x"].nbytes * (1 + 49 / 56 ** 2))


def _unpool_backward_case():
    """The gradient of unpool_2x2: a gather of the output gradient at the indices."""
    shape = (32, 64, 56, 56)

    def make_inputs():
        values, indices = fastconv.max_pool2d(_random(shape), 2, 2, return_indices=True)
        return {"g": _random(shape, 1), "indices": indices, "values": values}

    def torch_backward(torch, F, t):
        # autograd's max_unpool2d backward: the gradient gathered at the indices
        flat = t["g"].flatten(2)
        return lambda: torch.gather(flat, 2, t["indices"].flatten(2)).view(t["values"].shape)
    return Case(
        name="unpool_backward_2x2", family="pool",
        description=f"max_unpool2d backward, gradient {shape} gathered at the maxpool_2x2 "
                    "indices",
        make_inputs=make_inputs,
        impls={"fastconv": lambda inp: (lambda: fastconv.grad.max_unpool2d(
                   inp["g"], inp["indices"], inp["values"].shape)),
               "torch": _torch_call(torch_backward)},
        # the indices read, the gradient written, and the output gradient: one value in four
        # is gathered, but a maximum lies in either row of its window, so nearly every cache
        # line of it is read
        bytes_moved=lambda inp: inp["indices"].nbytes + inp["values"].nbytes + inp["g"].nbytes)


def _upsample_case(name, mode):
    """x2 upsampling of (8, 64, 56, 56): "bilinear" (align_corners=False) or "nearest"."""
    shape = (8, 64, 56, 56)
    kwargs = dict(scale_factor=2, mode=mode)
    if mode != "nearest":
        kwargs["align_corners"] = False
    return Case(
        name=name, family="resample",
        description=f"interpolate x{shape} " + " ".join(f"{k}={v}" for k, v in kwargs.items()),
        make_inputs=lambda: {"x": _random(shape)},
        impls={"fastconv": lambda inp: (lambda: fastconv.interpolate(inp["x"], **kwargs)),
               "torch": _torch_call(lambda torch, F, t: (lambda: F.interpolate(t["x"],
                                                                             **kwargs)))},
        bytes_moved=lambda inp: inp["x"].nbytes * 5)


def _unpool_case():
    shape = (32, 64, 56, 56)

    def make_inputs():
        values, indices = fastconv.max_pool2d(_random(shape), 2, 2, return_indices=True)
        return {"values": values, "indices": indices}

    return Case(
        name="unpool_2x2", family="pool",
        description=f"max_unpool2d k2 s2 of the maxpool_2x2 output -> {shape}",
        make_inputs=make_inputs,
        impls={"fastconv": lambda inp: (lambda: fastconv.max_unpool2d(
                   inp["values"], inp["indices"], 2, 2)),
               "torch": _torch_call(lambda torch, F, t: (lambda: F.max_unpool2d(
                   t["values"], t["indices"], 2, 2))),
               "numpy": lambda inp: (lambda: numpy_max_unpool(inp["values"], inp["indices"],
                                                              shape[2:]))},
        bytes_moved=lambda inp: inp["values"].nbytes * 5 + inp["indices"].nbytes)


def _maxpool_nd_case(name, shape, k, s, p):
    """1-d and 3-d max pooling with indices (the generic window loops)."""
    nd = len(shape) - 2
    fc = {1: fastconv.max_pool1d, 3: fastconv.max_pool3d}[nd]

    def bytes_moved(inp):
        out = fastconv.planning.pool_output_size
        size = [out(n, k, s, p) for n in shape[2:]]
        return inp["x"].nbytes + shape[0] * shape[1] * int(np.prod(size)) * (4 + 8)
    return Case(
        name=name, family="pool",
        description=f"max_pool{nd}d x{shape} k{k} s{s} p{p} return_indices=True",
        make_inputs=lambda: {"x": _random(shape)},
        impls={"fastconv": lambda inp: (lambda: fc(inp["x"], k, s, p, return_indices=True)),
               "torch": _torch_call(lambda torch, F, t: (lambda: getattr(F, f"max_pool{nd}d")(
                   t["x"], k, s, p, return_indices=True)))},
        bytes_moved=bytes_moved)


def _maxpool_backward_case():
    """The gradient of maxpool_3x3s2: each output's gradient added at its argmax."""
    shape = (8, 64, 112, 112)

    def make_inputs():
        values, indices = fastconv.max_pool2d(_random(shape), 3, 2, 1, return_indices=True)
        return {"x": _random(shape), "g": _random(values.shape, 1), "indices": indices}

    def torch_backward(torch, F, t):
        # what autograd runs for F.max_pool2d(..., return_indices=True)'s backward
        return lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            t["g"], t["x"], [3, 3], [2, 2], [1, 1], [1, 1], False, t["indices"])
    return Case(
        name="maxpool_backward_3x3s2", family="pool",
        description=f"max_pool2d backward, x{shape} k3 s2 p1",
        make_inputs=make_inputs,
        impls={"fastconv": lambda inp: (lambda: fastconv.grad.max_pool2d(
                   inp["g"], inp["indices"], shape)),
               "torch": _torch_call(torch_backward)},
        bytes_moved=lambda inp: inp["g"].nbytes + inp["indices"].nbytes + inp["x"].nbytes)


def _resample_backward_case(name, mode, op_torch):
    """The gradients of avg_pool2d 2x2 and of bilinear and nearest x2 upsampling (8 x 64 x
    56^2 inputs; x only gives PyTorch's avg_pool2d_backward its shape)."""
    shape = (8, 64, 56, 56)
    if mode == "avg":
        g_shape = shape[:2] + (28, 28)
        fc = lambda g: fastconv.grad.avg_pool2d(g, shape, 2, 2)
    elif mode == "nearest":
        g_shape = shape[:2] + (112, 112)
        fc = lambda g: fastconv.grad.interpolate(g, shape, scale_factor=2, mode="nearest")
    else:
        g_shape = shape[:2] + (112, 112)
        fc = lambda g: fastconv.grad.interpolate(g, shape, scale_factor=2, mode="bilinear",
                                                 align_corners=False)
    return Case(
        name=name, family="pool", description=f"{name}: grad of x{shape}",
        make_inputs=lambda: {"g": _random(g_shape, 1), "x": _random(shape)},
        impls={"fastconv": lambda inp: (lambda: fc(inp["g"])),
               "torch": _torch_call(lambda torch, F, t: (lambda: op_torch(torch, t)))},
        bytes_moved=lambda inp: inp["g"].nbytes + 4 * int(np.prod(shape)))


CASES = [
    _maxpool_case("maxpool_3x3s2", (8, 64, 112, 112), 3, 2, 1),
    _maxpool_case("maxpool_2x2", (32, 64, 56, 56), 2, 2, 0, numpy_max_pool_k2s2),
    _maxpool_nd_case("maxpool1d_3s2", (16, 64, 8000), 3, 2, 1),
    _maxpool_nd_case("maxpool3d_2x2x2", (4, 32, 16, 56, 56), 2, 2, 0),
    _pool_2x2_case("avgpool_2x2", "avg_pool2d", numpy_avg_pool_k2s2),
    _upsample_case("bilinear_x2", "bilinear"),
    _unpool_case(),
    _maxpool_backward_case(),
    _resample_backward_case(
        "avgpool_backward_2x2", "avg",
        lambda torch, t: torch.ops.aten.avg_pool2d_backward(
            t["g"], t["x"], [2, 2], [2, 2], [0, 0], False, True, None)),
    _resample_backward_case(
        "bilinear_backward_x2", "bilinear",
        lambda torch, t: torch.ops.aten.upsample_bilinear2d_backward(
            t["g"], [112, 112], list(t["x"].shape), False, 2.0, 2.0)),
    _resample_backward_case(
        "nearest_backward_x2", "nearest",
        lambda torch, t: torch.ops.aten.upsample_nearest2d_backward(
            t["g"], [112, 112], list(t["x"].shape), 2.0, 2.0)),
    _pool_2x2_case("maxpool_2x2_no_indices", "max_pool2d"),
    _adaptive_avgpool_case(),
    _upsample_case("nearest_x2", "nearest"),
    _unpool_backward_case(),
]
