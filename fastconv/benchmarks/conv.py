"""Convolution benchmark cases (NCHW float32), fastconv against NumPy, PyTorch, SciPy, OpenCV."""
from math import prod

import numpy as np

import fastconv
from fastconv.planning import ALGORITHMS, plan_conv, problem_from_call
from fastconv.benchmarks import Case, PeerUnavailable, require, torch_threads

# name, input shape, weight shape, keyword arguments
CONV_CASES = [
    ("resnet_3x3_64", (1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    ("resnet_3x3_256", (1, 256, 14, 14), (256, 256, 3, 3), dict(padding=1)),
    ("resnet_stem", (1, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3)),
    ("bottleneck_1x1", (1, 256, 56, 56), (64, 256, 1, 1), dict()),
    ("depthwise_3x3", (1, 144, 56, 56), (144, 1, 3, 3), dict(padding=1, groups=144)),
    # MobileNetV2's and EfficientNet-B0's strided and 5x5 depthwise layers
    ("depthwise_3x3_s2", (1, 144, 56, 56), (144, 1, 3, 3), dict(stride=2, padding=1, groups=144)),
    ("depthwise_5x5", (1, 240, 28, 28), (240, 1, 5, 5), dict(padding=2, groups=240)),
    ("depthwise_5x5_s2", (1, 144, 56, 56), (144, 1, 5, 5), dict(stride=2, padding=2, groups=144)),
    # ResNeXt-50's 32 groups of 4 channels (conv2 of its first stage)
    ("resnext_grouped_3x3", (1, 128, 56, 56), (128, 4, 3, 3), dict(padding=1, groups=32)),
    ("cifar_b32", (32, 32, 32, 32), (64, 32, 3, 3), dict(padding=1)),
    ("lenet_b64", (64, 1, 28, 28), (6, 1, 5, 5), dict()),
    ("image_1ch_7x7", (1, 1, 1024, 1024), (1, 1, 7, 7), dict(padding=3)),
    # a large filter: where the FFT pays (OpenCV's filter2D goes to its DFT from 11x11)
    ("image_1ch_31x31", (1, 1, 1024, 1024), (1, 1, 31, 31), dict(padding=15)),
    ("conv1d_tcn", (8, 128, 4096), (128, 128, 3), dict(padding=4, dilation=4)),
    ("conv3d_video", (1, 32, 8, 56, 56), (64, 32, 3, 3, 3), dict(padding=1)),
    # activations decayed into float32's denormal range (below 1.2e-38), where CPUs that
    # compute denormals in microcode slow down 10-100x (PyTorch issues #19651, #67797)
    ("resnet_3x3_64_denormal", (1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), 1e-39),
]

CONV_FN = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}


def _inputs(x_shape, w_shape, input_scale=1.0):
    def make():
        rng = np.random.default_rng(0)
        return {"x": rng.standard_normal(x_shape, dtype=np.float32) * np.float32(input_scale),
                "w": rng.standard_normal(w_shape, dtype=np.float32) * np.float32(prod(w_shape[1:]) ** -0.5),
                "b": rng.standard_normal(w_shape[0], dtype=np.float32)}
    return make


def _fastconv(kwargs, algorithm="auto"):
    def make(inp):
        fn = CONV_FN[inp["w"].ndim - 2]
        if algorithm != "auto":
            try:
                plan_conv(problem_from_call(inp["x"].shape, inp["w"].shape, **kwargs), "float32",
                          algorithm)
            except ValueError as err:
                raise PeerUnavailable(str(err)) from None
        return lambda: fn(inp["x"], inp["w"], inp["b"], algorithm=algorithm, **kwargs)
    return make


def numpy_conv(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """The NumPy baseline people write: sliding_window_view + tensordot (einsum for groups)."""
    nd = w.ndim - 2
    stride = (stride,) * nd if isinstance(stride, int) else stride
    dilation = (dilation,) * nd if isinstance(dilation, int) else dilation
    padding = (padding,) * nd if isinstance(padding, int) else padding
    x = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    spans = [d * (k - 1) + 1 for k, d in zip(w.shape[2:], dilation)]
    win = np.lib.stride_tricks.sliding_window_view(x, spans, axis=tuple(range(2, 2 + nd)))
    win = win[(Ellipsis,) + tuple(slice(None, None, d) for d in dilation)]
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]
    taps = "ijk"[:nd]
    space = "xyz"[:nd]
    if groups == 1:
        out = np.tensordot(win, w, axes=([1] + list(range(2 + nd, 2 + 2 * nd)),
                                          [1] + list(range(2, 2 + nd))))
        out = np.moveaxis(out, -1, 1)
    else:
        n, c = win.shape[:2]
        win = win.reshape((n, groups, c // groups) + win.shape[2:])
        wg = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
        out = np.einsum(f"ngc{space}{taps},goc{taps}->ngo{space}", win, wg, optimize=True)
        out = out.reshape((n, w.shape[0]) + out.shape[3:])
    return out + b.reshape((1, -1) + (1,) * nd)


def _numpy(kwargs):
    return lambda inp: (lambda: numpy_conv(inp["x"], inp["w"], inp["b"], **kwargs))


def _torch(kwargs):
    def make(inp):
        torch = require("torch")
        torch_threads(torch, fastconv.get_num_threads())
        fn = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
              3: torch.nn.functional.conv3d}[inp["w"].ndim - 2]
        x, w, b = (torch.from_numpy(inp[k]) for k in ("x", "w", "b"))

        def run():
            with torch.no_grad():
                return fn(x, w, b, **kwargs)
        return run
    return make


def _single_channel(inp):
    if inp["x"].shape[:2] != (1, 1) or inp["w"].shape[:2] != (1, 1) or inp["w"].ndim != 4:
        raise PeerUnavailable("single-channel 2-d images only")
    return inp["x"][0, 0], inp["w"][0, 0]


def _scipy(inp):
    ndimage = require("scipy.ndimage")
    img, k = _single_channel(inp)
    b = float(inp["b"][0])
    # 'constant' mode with an odd kernel centred: the same as zero padding k // 2.
    return lambda: ndimage.correlate(img, k, mode="constant") + b


def _opencv(inp):
    cv2 = require("cv2")
    cv2.setNumThreads(fastconv.get_num_threads())
    img, k = _single_channel(inp)
    b = float(inp["b"][0])
    return lambda: cv2.filter2D(img, -1, k, borderType=cv2.BORDER_CONSTANT, delta=b)


def _conv_flops(inp, kwargs):
    out = fastconv.output_shape(inp["x"].shape, inp["w"].shape, **kwargs)
    return 2.0 * prod(out) * prod(inp["w"].shape[1:])


def _conv_bytes(inp, kwargs):
    out = fastconv.output_shape(inp["x"].shape, inp["w"].shape, **kwargs)
    return inp["x"].nbytes + inp["w"].nbytes + prod(out) * inp["x"].itemsize


def _make_case(name, x_shape, w_shape, kwargs, input_scale=1.0):
    impls = {"fastconv": _fastconv(kwargs), "numpy": _numpy(kwargs), "torch": _torch(kwargs)}
    if x_shape[:2] == (1, 1):
        impls["scipy"] = _scipy
        impls["opencv"] = _opencv
    for algorithm in ALGORITHMS:
        impls[f"fastconv[{algorithm}]"] = _fastconv(kwargs, algorithm)
    desc = f"x{x_shape} w{w_shape} " + " ".join(f"{k}={v}" for k, v in kwargs.items())
    # depthwise layers do a few multiply-adds per byte: memory-bound, so also their GB/s
    depthwise = 1 < kwargs.get("groups", 1) == x_shape[1] == w_shape[0]
    return Case(name=name, family="conv", description=desc.strip(),
                make_inputs=_inputs(x_shape, w_shape, input_scale), impls=impls,
                flops=lambda inp, kw=kwargs: _conv_flops(inp, kw),
                bytes_moved=(lambda inp, kw=kwargs: _conv_bytes(inp, kw)) if depthwise else None)


CASES = [_make_case(*spec) for spec in CONV_CASES]
