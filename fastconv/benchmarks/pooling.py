"""Pooling, unpooling and resampling benchmark cases (NCHW float32): fastconv against PyTorch
and, where people would write one, a NumPy baseline.

These operators are memory-bound, so each case reports the bytes it must read plus write
(inputs, outputs, int64 indices) and the runner prints effective GB/s.
"""
import numpy as np

import fastconv
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


def _avgpool_case():
    shape = (32, 64, 56, 56)
    return Case(
        name="avgpool_2x2", family="pool", description=f"avg_pool2d x{shape} k2 s2",
        make_inputs=lambda: {"x": _random(shape)},
        impls={"fastconv": lambda inp: (lambda: fastconv.avg_pool2d(inp["x"], 2, 2)),
               "torch": _torch_call(lambda torch, F, t: (lambda: F.avg_pool2d(t["x"], 2, 2))),
               "numpy": lambda inp: (lambda: numpy_avg_pool_k2s2(inp["x"]))},
        bytes_moved=lambda inp: inp["x"].nbytes * 5 / 4)


def _bilinear_case():
    shape = (8, 64, 56, 56)
    return Case(
        name="bilinear_x2", family="resample",
        description=f"interpolate x{shape} scale_factor=2 bilinear align_corners=False",
        make_inputs=lambda: {"x": _random(shape)},
        impls={"fastconv": lambda inp: (lambda: fastconv.interpolate(
                   inp["x"], scale_factor=2, mode="bilinear", align_corners=False)),
               "torch": _torch_call(lambda torch, F, t: (lambda: F.interpolate(
                   t["x"], scale_factor=2, mode="bilinear", align_corners=False)))},
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


CASES = [
    _maxpool_case("maxpool_3x3s2", (8, 64, 112, 112), 3, 2, 1),
    _maxpool_case("maxpool_2x2", (32, 64, 56, 56), 2, 2, 0, numpy_max_pool_k2s2),
    _avgpool_case(),
    _bilinear_case(),
    _unpool_case(),
]
