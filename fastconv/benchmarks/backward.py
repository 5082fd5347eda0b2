"""Training benchmark cases (float32): convolution backward and transposed convolution,
fastconv against PyTorch's CPU kernels on the same shapes and thread count."""
from math import prod

import numpy as np

import fastconv
from fastconv import grad
from fastconv.benchmarks import Case, require, torch_threads


def _inputs(x_shape, w_shape, g_shape):
    def make():
        rng = np.random.default_rng(0)
        return {"x": rng.standard_normal(x_shape, dtype=np.float32),
                "w": rng.standard_normal(w_shape, dtype=np.float32)
                * np.float32(prod(w_shape[1:]) ** -0.5),
                "g": rng.standard_normal(g_shape, dtype=np.float32)}
    return make


def _torch_setup(inp):
    torch = require("torch")
    torch_threads(torch, fastconv.get_num_threads())
    return torch, {k: torch.from_numpy(v) for k, v in inp.items()}


# --- conv2d / conv3d backward: grad input + grad weight -----------------------------------------

def _conv_backward_fastconv(nd, kwargs):
    backward = getattr(grad, f"conv{nd}d_backward")

    def make(inp):
        x, w, g = inp["x"], inp["w"], inp["g"]

        def run():
            # both gradients in one call, as PyTorch's convolution_backward below
            return backward(x, w, g, **kwargs)
        return run
    return make


def _conv_backward_torch(nd, kwargs):
    def make(inp):
        torch, t = _torch_setup(inp)
        per_axis = lambda v: [v] * nd if isinstance(v, int) else list(v)
        stride, padding = per_axis(kwargs.get("stride", 1)), per_axis(kwargs.get("padding", 0))
        dilation, groups = per_axis(kwargs.get("dilation", 1)), kwargs.get("groups", 1)

        def run():
            # what autograd runs for a convolution's backward: both gradients in one call
            with torch.no_grad():
                return torch.ops.aten.convolution_backward(
                    t["g"], t["x"], t["w"], None, stride, padding, dilation, False,
                    [0] * nd, groups, [True, True, False])
        return run
    return make


def _conv_backward_flops(inp):
    # two GEMM-shaped products (grad input, grad weight), each the forward's size
    return 2 * 2.0 * inp["g"].size * prod(inp["w"].shape[1:])


def _conv_backward_case(name, x_shape, w_shape, kwargs):
    nd = len(w_shape) - 2
    g_shape = fastconv.output_shape(x_shape, w_shape, **kwargs)
    desc = f"grad input + grad weight, x{x_shape} w{w_shape} " + \
        " ".join(f"{k}={v}" for k, v in kwargs.items())
    # depthwise: memory-bound, so also GB/s (read x and g, write both gradients)
    depthwise = 1 < kwargs.get("groups", 1) == x_shape[1] == w_shape[0]
    return Case(name=name, family="backward", description=desc,
                make_inputs=_inputs(x_shape, w_shape, g_shape),
                impls={"fastconv": _conv_backward_fastconv(nd, kwargs),
                       "torch": _conv_backward_torch(nd, kwargs)},
                flops=_conv_backward_flops,
                bytes_moved=(lambda inp: 2 * inp["x"].nbytes + inp["g"].nbytes
                             + inp["w"].nbytes) if depthwise else None)


# --- conv_transpose forward (2-d and 3-d) -------------------------------------------------------

def _transpose_fastconv(nd, kwargs):
    fc = getattr(fastconv, f"conv_transpose{nd}d")
    return lambda inp: (lambda: fc(inp["x"], inp["w"], **kwargs))


def _transpose_torch(nd, kwargs):
    def make(inp):
        torch, t = _torch_setup(inp)
        op = getattr(torch.nn.functional, f"conv_transpose{nd}d")

        def run():
            with torch.no_grad():
                return op(t["x"], t["w"], **kwargs)
        return run
    return make


def _transpose_flops(inp):
    return 2.0 * inp["x"].size * prod(inp["w"].shape[1:])


def _transpose_case(name, x_shape, w_shape, kwargs):
    nd = len(w_shape) - 2
    out = getattr(fastconv, f"conv_transpose{nd}d")(np.zeros((1,) + x_shape[1:], np.float32),
                                                     np.zeros(w_shape, np.float32),
                                                     **kwargs).shape
    desc = f"x{x_shape} w{w_shape} " + " ".join(f"{k}={v}" for k, v in kwargs.items())
    return Case(name=name, family="backward", description=desc,
                make_inputs=_inputs(x_shape, w_shape, (x_shape[0],) + out[1:]),
                impls={"fastconv": _transpose_fastconv(nd, kwargs),
                       "torch": _transpose_torch(nd, kwargs)},
                flops=_transpose_flops)


CASES = [
    _conv_backward_case("conv2d_backward_64", (8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    # ResNet-50's second stage (and VGG's wider layers): the weight gradient by Winograd
    _conv_backward_case("conv2d_backward_128", (8, 128, 28, 28), (128, 128, 3, 3),
                        dict(padding=1)),
    # the 3-d conv net's third layer: both gradients by Winograd (the weight's over each
    # depth tap's slices)
    _conv_backward_case("conv3d_backward", (2, 64, 8, 16, 16), (128, 64, 3, 3, 3),
                        dict(padding=1)),
    _conv_backward_case("depthwise_backward_3x3", (8, 144, 56, 56), (144, 1, 3, 3),
                        dict(padding=1, groups=144)),
    _conv_backward_case("depthwise_backward_3x3_s2", (8, 144, 56, 56), (144, 1, 3, 3),
                        dict(stride=2, padding=1, groups=144)),
    _transpose_case("conv_transpose_4x4_s2", (16, 256, 8, 8), (256, 128, 4, 4),
                    dict(stride=2, padding=1)),
    _transpose_case("conv_transpose_2x2_s2", (1, 128, 28, 28), (128, 64, 2, 2), dict(stride=2)),
    # V-Net's up-sampling: kernel == stride, each output voxel one tap's product
    _transpose_case("conv_transpose3d_2x2x2_s2", (1, 64, 16, 28, 28), (64, 32, 2, 2, 2),
                    dict(stride=2)),
]
