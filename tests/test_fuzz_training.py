"""Property-based fuzzing of the training operators (issue 4): convolution gradients,
transposed convolution and its gradients, locally connected layers and their gradients.

Each valid configuration is compared with the float64 reference (tests/reference.py) for every
algorithm that can compute it; transposed-convolution gradients are checked as adjoints
(<T(x), g> == <x, T*(g)>), which is their definition. Invalid arguments must raise a
ValueError/TypeError naming the argument.
"""
import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
import fastconv.grad as grad
import reference
from fastconv._plan import tiling
from fastconv import planning as dispatch
from fastconv.planning import conv_transpose_problem as _transpose_problem
from fastconv.planning import problem_from_call as _problem_from_call
from fuzzing import (DTYPES, arrays, assert_close, count, examples, float_dtype,
                     message_names, torch, winograd_bound)
from test_fuzz import conv_configs

INPUT_GRAD = {1: grad.conv1d_input, 2: grad.conv2d_input, 3: grad.conv3d_input}
WEIGHT_GRAD = {1: grad.conv1d_weight, 2: grad.conv2d_weight, 3: grad.conv3d_weight}
TRANSPOSE = {1: fastconv.conv_transpose1d, 2: fastconv.conv_transpose2d,
             3: fastconv.conv_transpose3d}
TRANSPOSE_INPUT = {1: grad.conv_transpose1d_input, 2: grad.conv_transpose2d_input,
                   3: grad.conv_transpose3d_input}
TRANSPOSE_WEIGHT = {1: grad.conv_transpose1d_weight, 2: grad.conv_transpose2d_weight,
                    3: grad.conv_transpose3d_weight}
LOCAL = {1: fastconv.locally_connected1d, 2: fastconv.locally_connected2d}
LOCAL_INPUT = {1: grad.locally_connected1d_input, 2: grad.locally_connected2d_input}
LOCAL_WEIGHT = {1: grad.locally_connected1d_weight, 2: grad.locally_connected2d_weight}


def input_grad_algorithms(problem, weight=None):
    """'auto', every family and every single kernel that can compute this input gradient
    (the phase-grid kernels only for finite weights: they refuse others; Winograd only where
    the gradient is one stride-1 convolution, as subpixel's single phase)."""
    names = dispatch.INPUT_GRAD_ALGORITHMS + tuple(
        v for v in dispatch.variants("input_grad") if v not in dispatch.INPUT_GRAD_ALGORITHMS)
    finite = weight is None or np.isfinite(np.asarray(weight, np.float64)).all()
    one_convolution = tiling.subpixel_plan(problem.explicitly_padded) is not None
    return ["auto"] + [a for a in names if dispatch.supports("input_grad", a, problem)
                       and (finite or not a.startswith("phase"))
                       and (one_convolution or a != "winograd")]


def weight_grad_algorithms(problem):
    """'auto' and every single weight-gradient kernel that can compute this call."""
    return ["auto"] + [a for a in dispatch.variants("weight_grad")
                       if dispatch.supports("weight_grad", a, problem)]


# ---------------------------------------------------------------------------------------------
# Gradients of convolution

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_gradients_agree_with_the_reference(nd):
    @settings(max_examples=examples({1: 1.5, 2: 1.5, 3: 0.75}[nd]))
    @given(conv_configs(nd), st.data())
    def run(config, data):
        count(f"conv{nd}d_input/_weight/conv_bias")
        x, w, bias, kwargs = config
        problem = _problem_from_call(x, w, **kwargs)
        g = data.draw(arrays(problem.out_shape, data.draw(st.sampled_from(DTYPES))))
        # input gradient: every algorithm the input-gradient dispatcher may pick
        want = reference.conv_input_grad(x.shape, w, g, **kwargs)
        magnitude = reference.conv_input_grad(x.shape, np.abs(w), np.abs(g), **kwargs)
        dtype = float_dtype(w, g)
        terms = w.shape[0] * math.prod(w.shape[2:]) * 2 ** nd + 1
        for algorithm in input_grad_algorithms(problem.explicitly_padded, w):
            got = INPUT_GRAD[nd](x.shape, w, g, **kwargs, algorithm=algorithm)
            assert got.dtype == dtype
            bound = winograd_bound(g, w, None, kwargs, dtype, "input", x.shape) \
                if algorithm == "winograd" else None
            assert_close(got, want, magnitude, terms, dtype, f"conv{nd}d_input {algorithm}",
                         bound)
        # weight gradient
        want = reference.conv_weight_grad(x, w.shape, g, **kwargs)
        finite_x = np.nan_to_num(np.abs(np.asarray(x, np.float64)), nan=0, posinf=0, neginf=0)
        magnitude = reference.conv_weight_grad(finite_x, w.shape, np.abs(g), **kwargs)
        for algorithm in weight_grad_algorithms(problem.explicitly_padded):
            got = WEIGHT_GRAD[nd](x, w.shape, g, **kwargs, algorithm=algorithm)
            assert_close(got, want, magnitude, x.shape[0] * math.prod(problem.out_size) + 1,
                         float_dtype(x, g), f"conv{nd}d_weight {algorithm}")
        # bias gradient
        assert_close(grad.conv_bias(g), np.asarray(g, np.float64).sum(
            axis=(0,) + tuple(range(2, g.ndim))), np.abs(np.asarray(g, np.float64)).sum(
            axis=(0,) + tuple(range(2, g.ndim))), g.size + 1, float_dtype(g), "conv_bias")
    run()


# ---------------------------------------------------------------------------------------------
# Transposed convolution

@st.composite
def transpose_configs(draw, nd):
    groups = draw(st.integers(1, 3))
    c_in_g = draw(st.sampled_from([1, 2, 4, 5]))
    c_out_g = draw(st.sampled_from([1, 2, 3, 5]))
    batch = draw(st.sampled_from([0, 1, 1, 2]))
    kmax = 4 if nd < 3 else 3
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(nd))
    stride = tuple(draw(st.sampled_from([1, 1, 2, 3])) for _ in range(nd))
    dilation = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(nd))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = tuple(draw(st.integers(1, {1: 7, 2: 5, 3: 3}[nd])) for _ in range(nd))
    full = [(n - 1) * s + d * (k - 1) + op + 1
            for n, s, d, k, op in zip(size, stride, dilation, kernel, output_padding)]
    form = draw(st.sampled_from(["int", "ints", "pairs"]))
    if form == "int":
        padding = draw(st.integers(0, max(0, (min(full) - 1) // 2)))
    elif form == "ints":
        padding = tuple(draw(st.integers(0, max(0, (f - 1) // 2))) for f in full)
    else:
        padding = []
        for f in full:
            before = draw(st.integers(0, f - 1))
            padding.append((before, draw(st.integers(0, f - 1 - before))))
        padding = tuple(padding)
    dtype = draw(st.sampled_from(DTYPES))
    x = draw(arrays((batch, groups * c_in_g) + size, dtype, nonfinite=False))
    w = draw(arrays((groups * c_in_g, c_out_g) + kernel, draw(st.sampled_from((dtype,) + DTYPES))))
    bias = draw(st.one_of(st.none(), arrays((groups * c_out_g,), dtype)))
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                  dilation=dilation)
    return x, w, bias, kwargs


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_agrees_with_the_reference_and_its_gradients_are_adjoints(nd):
    @settings(max_examples=examples({1: 1.5, 2: 1.5, 3: 0.75}[nd]))
    @given(transpose_configs(nd), st.data())
    def run(config, data):
        count(f"conv_transpose{nd}d (+ _input/_weight)")
        x, w, bias, kwargs = config
        want = reference.conv_transpose_nd(x, w, bias, **kwargs)
        magnitude = reference.conv_transpose_nd(np.abs(x), np.abs(w), None if bias is None
                                                else np.abs(bias), **kwargs)
        dtype = float_dtype(x, w, bias)
        terms = x.shape[1] * math.prod(w.shape[2:]) + 1
        problem = _transpose_problem(nd, x.shape, w.shape, None, kwargs["stride"],
                                     kwargs["padding"], kwargs["output_padding"],
                                     kwargs["groups"], kwargs["dilation"])
        padding = kwargs["padding"]
        if torch is not None and (isinstance(padding, int)   # PyTorch has no (before, after)
                                  or all(isinstance(p, int) for p in padding)):
            fn = (torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d,
                  torch.nn.functional.conv_transpose3d)[nd - 1]
            as_tensor = lambda a: None if a is None else torch.from_numpy(  # noqa: E731
                np.array(a, np.float64))
            assert_close(fn(as_tensor(x), as_tensor(w), as_tensor(bias), **kwargs).numpy(),
                         want, magnitude, terms, np.float64, "PyTorch vs reference")
        for algorithm in input_grad_algorithms(problem, w):
            got = TRANSPOSE[nd](x, w, bias, **kwargs, algorithm=algorithm)
            assert got.dtype == dtype
            bound = winograd_bound(x, w, bias, kwargs, dtype, "transpose") \
                if algorithm == "winograd" else None
            assert_close(got, want, magnitude, terms, dtype, f"conv_transpose{nd}d {algorithm}",
                         bound)
        # gradients, in float64: <T(x, w), g> = <x, dT/dx*(g)> = <w, dT/dw*(g)>
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        g = data.draw(arrays(want.shape, np.float64))
        dx = TRANSPOSE_INPUT[nd](x.shape, w64, g, **kwargs)
        dw = TRANSPOSE_WEIGHT[nd](x64, w.shape, g, **kwargs)
        y = TRANSPOSE[nd](x64, w64, **kwargs)
        scale = (np.abs(reference.conv_transpose_nd(np.abs(x64), np.abs(w64), **kwargs))
                 * np.abs(g)).sum() + 1e-300
        inner = float((y * g).sum())
        assert dx.shape == x.shape and dw.shape == w.shape
        assert abs(inner - float((x64 * dx).sum())) <= 1e-10 * scale
        assert abs(inner - float((w64 * dw).sum())) <= 1e-10 * scale
    run()


# ---------------------------------------------------------------------------------------------
# Locally connected layers

@st.composite
def local_configs(draw, nd):
    batch = draw(st.sampled_from([0, 1, 2, 3]))
    c_in = draw(st.integers(1, 3))
    c_out = draw(st.integers(1, 4))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(nd))
    dilation = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(nd))
    form = draw(st.sampled_from(["int", "pairs", "valid", "same"]))
    if form == "same":
        stride = (1,) * nd
    padding = {"int": draw(st.integers(0, 2)), "valid": "valid", "same": "same",
               "pairs": tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2)))
                              for _ in range(nd))}[form]
    pads = reference.padding_pairs(padding, kernel, dilation)
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - a - b), {1: 9, 2: 6}[nd]))
                 for k, d, (a, b) in zip(kernel, dilation, pads))
    grid = tuple((n + a + b - d * (k - 1) - 1) // s + 1
                 for n, (a, b), d, k, s in zip(size, pads, dilation, kernel, stride))
    dtype = draw(st.sampled_from(DTYPES))
    x = draw(arrays((batch, c_in) + size, dtype, nonfinite=True))
    w = draw(arrays(grid + (c_out, c_in) + kernel, draw(st.sampled_from((dtype,) + DTYPES))))
    bias = draw(st.one_of(st.none(), arrays((c_out,) + grid, dtype)))
    return x, w, bias, dict(stride=stride, padding=padding, dilation=dilation)


@pytest.mark.parametrize("nd", [1, 2])
def test_locally_connected_and_its_gradients_agree_with_the_reference(nd):
    @settings(max_examples=examples(1.5))
    @given(local_configs(nd), st.data())
    def run(config, data):
        count(f"locally_connected{nd}d (+ _input/_weight/_bias)")
        x, w, bias, kwargs = config
        finite_x = np.nan_to_num(np.abs(np.asarray(x, np.float64)), nan=0, posinf=0, neginf=0)
        want = reference.locally_connected_nd(x, w, bias, **kwargs)
        magnitude = reference.locally_connected_nd(finite_x, np.abs(w), None if bias is None
                                                   else np.abs(bias), **kwargs)
        c_in_taps = w.shape[nd + 1] * math.prod(w.shape[nd + 2:])
        got = LOCAL[nd](x, w, bias, **kwargs)
        assert_close(got, want, magnitude, c_in_taps + 1, float_dtype(x, w, bias),
                     f"locally_connected{nd}d")
        g = data.draw(arrays(want.shape, data.draw(st.sampled_from(DTYPES))))
        want = reference.locally_connected_input_grad(x.shape, w, g, **kwargs)
        magnitude = reference.locally_connected_input_grad(x.shape, np.abs(w), np.abs(g),
                                                           **kwargs)
        assert_close(LOCAL_INPUT[nd](x.shape, w, g, **kwargs), want, magnitude,
                     w.shape[nd] * math.prod(w.shape[nd + 2:]) + 1, float_dtype(w, g),
                     f"locally_connected{nd}d_input")
        want = reference.locally_connected_weight_grad(x, w.shape, g, **kwargs)
        magnitude = reference.locally_connected_weight_grad(finite_x, w.shape, np.abs(g),
                                                            **kwargs)
        assert_close(LOCAL_WEIGHT[nd](x, w.shape, g, **kwargs), want, magnitude,
                     x.shape[0] + 1, float_dtype(x, g), f"locally_connected{nd}d_weight")
        assert_close(grad.locally_connected_bias(g), np.asarray(g, np.float64).sum(axis=0),
                     np.abs(np.asarray(g, np.float64)).sum(axis=0), x.shape[0] + 1,
                     float_dtype(g), "locally_connected_bias")
    run()


# ---------------------------------------------------------------------------------------------
# Invalid arguments

NAN_FLOAT, INF_FLOAT = float("nan"), float("inf")


@st.composite
def bad_training_calls(draw):
    """A valid training call with one argument made invalid: (call, names)."""
    nd = draw(st.integers(1, 3))
    x = np.ones((2, 4) + (6,) * nd)
    w = np.ones((6, 2) + (3,) * nd)            # conv weight, groups=2
    g = np.ones((2, 6) + (4,) * nd)            # its output gradient
    wt = np.ones((4, 3) + (3,) * nd)           # transposed-conv weight, groups=2: C_out = 6
    op = draw(st.sampled_from(["input", "weight", "transpose", "transpose_input",
                               "transpose_weight", "local", "local_input", "local_weight",
                               "bias"]))
    bad = draw(st.sampled_from(["stride", "padding", "dilation", "groups", "grad_output",
                                "shape", "array", "huge", "output_padding", "algorithm"]))
    kwargs = dict(groups=2)
    size_values = [0, -1, 1.5, NAN_FLOAT, INF_FLOAT, "1", None, 2**64, True]
    if op in ("input", "weight"):
        fn = {"input": INPUT_GRAD, "weight": WEIGHT_GRAD}[op][nd]
        args = [x.shape, w, g] if op == "input" else [x, w.shape, g]
        shape_index, array_index = (0, 1) if op == "input" else (1, 0)
        array_name = "weight" if op == "input" else "input"
    elif op.startswith("transpose"):
        gt = np.ones((2, 6) + (8,) * nd)          # (6 - 1) + 3 = 8
        fn = {"transpose": TRANSPOSE, "transpose_input": TRANSPOSE_INPUT,
              "transpose_weight": TRANSPOSE_WEIGHT}[op][nd]
        args = {"transpose": [x, wt], "transpose_input": [x.shape, wt, gt],
                "transpose_weight": [x, wt.shape, gt]}[op]
        shape_index, array_index = {"transpose": (None, 0), "transpose_input": (0, 1),
                                    "transpose_weight": (1, 0)}[op]
        array_name = "weight" if op == "transpose_input" else "input"
    elif op.startswith("local"):
        nd = min(nd, 2)
        x = np.ones((2, 4) + (6,) * nd)
        wl = np.ones((4,) * nd + (5, 4) + (3,) * nd)
        gl = np.ones((2, 5) + (4,) * nd)
        fn = {"local": LOCAL, "local_input": LOCAL_INPUT, "local_weight": LOCAL_WEIGHT}[op][nd]
        args = {"local": [x, wl], "local_input": [x.shape, wl, gl],
                "local_weight": [x, wl.shape, gl]}[op]
        shape_index, array_index = {"local": (None, 0), "local_input": (0, 1),
                                    "local_weight": (1, 0)}[op]
        array_name = "weight" if op == "local_input" else "input"
        kwargs = {}
    else:
        fn = draw(st.sampled_from([grad.conv_bias, grad.locally_connected_bias]))
        value = draw(st.sampled_from([np.ones((2, 3)), np.ones(4), "g", None,
                                      np.ones((2, 3, 4), complex)]))
        return functools.partial(fn, value), ("grad_output",)
    if bad in ("stride", "dilation", "padding"):
        values = [v for v in size_values if not (bad == "padding" and v == 0)]
        kwargs[bad] = draw(st.sampled_from(values + [(1,) * (nd + 1)]))
        if bad == "padding" and op.startswith("transpose"):
            kwargs[bad] = draw(st.sampled_from([-1, 1.5, NAN_FLOAT, "same", (1,) * (nd + 1)]))
        names = (bad,)
    elif bad == "groups" and "groups" in kwargs:
        kwargs["groups"] = draw(st.sampled_from([0, -1, 1.5, NAN_FLOAT, "2", None, 3, 2**64]))
        names = ("groups", "weight", "C_in")
    elif bad == "output_padding" and op.startswith("transpose"):
        kwargs["output_padding"] = draw(st.sampled_from([-1, 1, 1.5, NAN_FLOAT, (0,) * (nd + 1),
                                                         2**64]))
        names = ("output_padding",)
    elif bad == "algorithm" and op in ("input", "transpose"):
        kwargs["algorithm"] = draw(st.sampled_from(["fft", None, "packed", 1]))
        names = ("algorithm",)
    elif bad == "huge":
        kwargs[draw(st.sampled_from(["stride", "padding", "dilation"]))] = \
            draw(st.sampled_from([2**33, 2**62, 2**63, 2**100]))
        if nd == 3 and draw(st.booleans()):
            # legal sizes whose output would have more than 2**63 elements
            kwargs = dict(kwargs, stride=1, padding=0, dilation=1)
            kwargs["stride" if op.startswith("transpose") else "padding"] = 2**32
        names = ("stride", "padding", "dilation", "output")
    elif bad == "grad_output" and len(args) == 3:
        args[2] = draw(st.sampled_from([args[2][..., :-1], args[2][0], "g", None,
                                        args[2].astype(complex), args[2][:, :-1]]))
        names = ("grad_output",)
    elif bad == "shape" and shape_index is not None:
        args[shape_index] = draw(st.sampled_from([
            args[shape_index][:-1], tuple(args[shape_index]) + (1,), (-1,) * len(args[
                shape_index]), [1.5] * len(args[shape_index]), "shape", None,
            tuple(np.array(args[shape_index]) * 2)]))
        names = ("shape", "input", "weight", "grad_output", "C_in", "groups", "kernel",
                 "larger")
    else:
        args[array_index] = draw(st.sampled_from([
            np.ones(3), args[array_index].astype(complex), "a", None,
            args[array_index].astype(object), args[array_index][:, :1]]))
        names = (array_name, "groups", "C_in", "shape")
    return functools.partial(fn, *args, **kwargs), names


@settings(max_examples=examples(4))
@given(bad_training_calls())
def test_invalid_training_arguments_raise_a_clear_error(call):
    count("training invalid")
    fn, names = call
    with pytest.raises((ValueError, TypeError)) as error:
        fn()
    message_names(error, *names)
