"""Property-based fuzzing: every public operator, on valid configurations drawn at random,
agrees with the float64 reference (and PyTorch where installed) for every algorithm; invalid
arguments drawn at random raise ValueError/TypeError naming the argument, never a crash.

Profiles (tests/conftest.py): ``ci`` (default), ``long`` (``FASTCONV_FUZZ=long``), ``tiny``.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv
import reference
from fastconv import planning as dispatch
from fastconv._plan import tiling
from fuzzing import (DTYPES, PROMOTED_DTYPES, arrays, assert_close, count, examples, fft_bound,
                     float_dtype, message_names, torch, winograd_bound)

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# spatial extents kept tiny: the reference is a loop over output channels, channels and taps
MAX_SIZE = {1: 12, 2: 8, 3: 5}


# ---------------------------------------------------------------------------------------------
# Convolution: valid configurations

@st.composite
def conv_configs(draw, nd):
    groups = draw(st.integers(1, 3))
    c_in_g = draw(st.integers(1, 3))
    # fewer and more than MIN_PACKED_OUT_CHANNELS per group, past one packed tile of 8
    c_out_g = draw(st.sampled_from([1, 2, 3, 4, 5, 9]))
    batch = draw(st.sampled_from([0, 1, 1, 2, 3]))
    kmax = 4 if nd < 3 else 3
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(nd))
    dilation = tuple(draw(st.sampled_from([1, 1, 2, 3])) for _ in range(nd))
    stride = tuple(draw(st.sampled_from([1, 1, 2, 3])) for _ in range(nd))
    padding_mode = draw(st.sampled_from(PADDING_MODES))
    form = draw(st.sampled_from(["int", "ints", "pairs", "same", "valid", "zero"]))
    if form == "same":
        stride = (1,) * nd
    if form == "int":
        padding = draw(st.integers(0, 3))
    elif form == "ints":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(nd))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(nd))
    elif form == "zero":
        padding = 0
    else:
        padding = form
    pads = reference.padding_pairs(padding, kernel, dilation)
    size = []
    for k, d, (p0, p1) in zip(kernel, dilation, pads):
        low = max(1, d * (k - 1) + 1 - p0 - p1)
        if padding_mode == "reflect":
            low = max(low, max(p0, p1) + 1)
        elif padding_mode == "circular":
            low = max(low, p0, p1)
        size.append(draw(st.integers(low, max(low, MAX_SIZE[nd]))))
    dtype_x = draw(st.sampled_from(DTYPES + DTYPES + DTYPES + PROMOTED_DTYPES))
    dtype_w = draw(st.sampled_from((dtype_x,) * 3 + DTYPES))
    x = draw(arrays((batch, groups * c_in_g, *size), dtype_x, nonfinite=True))
    w = draw(arrays((groups * c_out_g, c_in_g, *kernel), dtype_w))
    bias = draw(st.one_of(st.none(), arrays((groups * c_out_g,), dtype_w)))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode)
    # the short forms of the int-or-tuple arguments
    for name in ("stride", "dilation"):
        if len(set(kwargs[name])) == 1 and draw(st.booleans()):
            kwargs[name] = kwargs[name][0]
    return x, w, bias, kwargs


def algorithms_for(x, w, kwargs):
    """'auto', every algorithm family and every single kernel that can compute this call."""
    problem = fastconv.planning.problem_from_call(x, w, **kwargs)
    names = dispatch.ALGORITHMS + tuple(v for v in dispatch.variants("forward")
                                        if v not in dispatch.ALGORITHMS)
    return ["auto"] + [a for a in names if dispatch.SUPPORTS[a](problem)]


def conv_magnitude(x, w, bias, kwargs):
    """The reference on absolute values: the scale of every partial sum (for tolerances)."""
    ax = np.abs(np.nan_to_num(np.asarray(x, np.float64), nan=0, posinf=0, neginf=0))
    return reference.conv_nd(ax, np.abs(w), None if bias is None else np.abs(bias), **kwargs)


def torch_conv(x, w, bias, kwargs):
    """PyTorch's answer in float64, padding explicitly (PyTorch has no (before, after) pairs)."""
    F = torch.nn.functional
    nd = w.ndim - 2
    pads = reference.padding_pairs(kwargs["padding"], w.shape[2:], reference.as_tuple(
        kwargs["dilation"], nd))
    xt = torch.from_numpy(np.array(x, np.float64))
    flat = [v for pair in reversed(pads) for v in pair]   # F.pad lists the last axis first
    mode = {"zeros": "constant"}.get(kwargs["padding_mode"], kwargs["padding_mode"])
    if any(flat) and xt.shape[0] > 0:
        xt = F.pad(xt, flat, mode=mode)
    elif any(flat):
        xt = torch.zeros(xt.shape[:2] + tuple(n + a + b for n, (a, b) in zip(xt.shape[2:], pads)),
                         dtype=torch.float64)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    bt = None if bias is None else torch.from_numpy(np.array(bias, np.float64))
    return conv(xt, torch.from_numpy(np.array(w, np.float64)), bt,
                stride=kwargs["stride"], dilation=kwargs["dilation"],
                groups=kwargs["groups"]).numpy()


def check_conv(nd, x, w, bias, kwargs, use_out, pieces=False):
    want = reference.conv_nd(x, w, bias, **kwargs)
    magnitude = conv_magnitude(x, w, bias, kwargs)
    dtype = float_dtype(x, w, bias)
    terms = w.shape[1] * math.prod(w.shape[2:]) + 1
    if torch is not None and np.isfinite(want).all():
        assert_close(torch_conv(x, w, bias, kwargs), want, magnitude, terms, np.float64,
                     "PyTorch vs reference")
    for algorithm in algorithms_for(x, w, kwargs):
        out = np.full(want.shape, np.nan, dtype) if use_out else None
        saved = tiling.INTERRUPT_WORK
        if pieces:   # as a long call runs: one kernel call per image and block of channels
            tiling.INTERRUPT_WORK = 1
        try:
            got = CONV[nd](x, w, bias, **kwargs, algorithm=algorithm, out=out)
        finally:
            tiling.INTERRUPT_WORK = saved
        assert got.dtype == dtype, (algorithm, got.dtype)
        if use_out:
            assert got is out
        bound = None
        if algorithm == "fft":
            problem = fastconv.planning.problem_from_call(x, w, **kwargs)
            bound = fft_bound(x, w, bias, kwargs, dtype, math.prod(tiling.fft_shape(problem)))
        elif algorithm == "winograd":
            bound = winograd_bound(x, w, bias, kwargs, dtype)
        assert_close(got, want, magnitude, terms, dtype, f"conv{nd}d {algorithm}", bound)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_agrees_with_the_reference_for_every_algorithm(nd):
    @settings(max_examples=examples({1: 3, 2: 4, 3: 2}[nd]))
    @given(conv_configs(nd), st.booleans(), st.booleans())
    def run(config, use_out, pieces):
        count(f"conv{nd}d")
        check_conv(nd, *config, use_out, pieces)
    run()


@st.composite
def signal_operands(draw):
    nd = draw(st.integers(1, 3))
    limit = {1: 9, 2: 5, 3: 3}[nd]
    a_shape = tuple(draw(st.integers(1, limit)) for _ in range(nd))
    b_shape = tuple(draw(st.integers(1, limit)) for _ in range(nd))
    mode = draw(st.sampled_from(["full", "same", "valid"]))
    if mode == "valid":
        # one operand at least as large as the other along every axis
        big = tuple(max(m, n) for m, n in zip(a_shape, b_shape))
        small = tuple(min(m, n) for m, n in zip(a_shape, b_shape))
        a_shape, b_shape = (big, small) if draw(st.booleans()) else (small, big)
    dtype = draw(st.sampled_from(DTYPES + (np.int64,)))
    a = draw(arrays(a_shape, dtype, nonfinite=True))
    b = draw(arrays(b_shape, draw(st.sampled_from(DTYPES))))
    return a, b, mode


@settings(max_examples=examples(2))
@given(signal_operands(), st.sampled_from(["convolve", "correlate"]), st.booleans())
def test_convolve_and_correlate_agree_with_the_reference(operands, name, as_lists):
    count(name)
    a, b, mode = operands
    args = (a.tolist(), b.tolist()) if as_lists else (a, b)
    got = getattr(fastconv, name)(*args, mode=mode)
    want = getattr(reference, name)(a, b, mode)
    finite_a = np.nan_to_num(np.abs(a.astype(np.float64)), nan=0, posinf=0, neginf=0)
    magnitude = getattr(reference, name)(finite_a, np.abs(b), mode)
    assert_close(got, want, magnitude, b.size + 1, float_dtype(a, b), f"{name} {mode}")


@settings(max_examples=examples(2))
@given(st.integers(1, 3).flatmap(conv_configs))
def test_output_shape_and_choose_algorithm_describe_the_call(config):
    count("output_shape/choose_algorithm")
    x, w, bias, kwargs = config
    nd = w.ndim - 2
    shape_kwargs = {k: v for k, v in kwargs.items() if k != "padding_mode"}
    shape = fastconv.output_shape(x.shape, w.shape, **shape_kwargs)
    assert shape == reference.conv_nd(x[:0], w, **kwargs).shape[:1] * 0 + \
        (x.shape[0],) + reference.conv_nd(x[:1] if x.shape[0] else np.zeros((1,) + x.shape[1:]),
                                          w, **kwargs).shape[1:]
    dtype = fastconv.planning.compute_dtype(x, w, bias)
    choice = fastconv.choose_algorithm(x.shape, w.shape, bias=None if bias is None else
                                       bias.shape, **kwargs, dtype=dtype)
    assert choice.algorithm in dispatch.ALGORITHMS and choice.reason
    of_array = fastconv.choose_algorithm(x, w, bias, **kwargs)
    if fastconv.planning.is_channels_last(x) and of_array != choice:
        # a channels-last input in memory: the kernels that read it where it lies
        assert of_array.algorithm in dispatch.CHANNELS_LAST_ALGORITHMS and of_array.reason
    else:
        assert of_array == choice
    assert CONV[nd](x, w, bias, **kwargs).shape == shape


@settings(max_examples=examples(1))
@given(st.lists(st.fixed_dictionaries({
    "kernel_size": st.integers(1, 5), "stride": st.integers(1, 3),
    "dilation": st.integers(1, 3), "padding": st.integers(0, 3)}), min_size=1, max_size=4))
def test_receptive_field_is_the_support_of_an_impulse_response(layers):
    """Every layer as a 1-d convolution with positive weights: the inputs that reach output
    `o` are exactly those in [start + o * jump, start + o * jump + size), clipped to the input."""
    count("receptive_field")
    rf = fastconv.receptive_field(layers)
    length = 48
    y = np.eye(length).reshape(length, 1, length)       # one impulse per batch entry
    for layer in layers:
        if layer["dilation"] * (layer["kernel_size"] - 1) + 1 > y.shape[-1] + 2 * layer["padding"]:
            return
        y = fastconv.conv1d(y, np.ones((1, 1, layer["kernel_size"])), stride=layer["stride"],
                            padding=layer["padding"], dilation=layer["dilation"])
    for o in range(y.shape[-1]):
        first = rf.start[0] + o * rf.jump[0]
        reach = np.flatnonzero(y[:, 0, o])
        if reach.size:
            assert reach[0] >= first and reach[-1] <= first + rf.size[0] - 1


# ---------------------------------------------------------------------------------------------
# Convolution: invalid arguments

HUGE = 2**62
NAN_FLOAT, INF_FLOAT = float("nan"), float("inf")

# (argument, bad values, names the message may use for it)
BAD_SIZES = [
    ("stride", [0, -1, -(2**40), 1.0, 2.5, NAN_FLOAT, INF_FLOAT, "2", None, True, (1, 1, 1, 1),
                2**64, np.float64(2)], ("stride",)),
    ("dilation", [0, -2, 1.5, NAN_FLOAT, -INF_FLOAT, "1", True, 2**64, [1, 2, 3, 4]],
     ("dilation",)),
    ("padding", [-1, -(2**63), 1.0, NAN_FLOAT, INF_FLOAT, "full", "SAME", None, 2**64, HUGE,
                 ((1, 2, 3),), [[-1, 0]], (0, 0, 0, 0)], ("padding",)),
    ("groups", [0, -1, 1.0, NAN_FLOAT, "1", None, True, 2**64, 7], ("groups",)),
    ("padding_mode", ["mirror", "", None, 0, "ZEROS"], ("padding_mode",)),
    ("algorithm", ["fft2", "", None, 3, "winograd_f6", "FFT"], ("algorithm",)),
]


@st.composite
def bad_conv_calls(draw):
    """A valid call with one argument made invalid: (function, args, kwargs, names)."""
    nd = draw(st.integers(1, 3))
    x = np.ones((2, 4) + (6,) * nd, np.float32)
    w = np.ones((6, 2) + (3,) * nd, np.float32)
    kwargs = dict(groups=2)
    kind = draw(st.sampled_from(["size", "input", "weight", "bias", "out", "huge", "fit"]))
    if kind == "size":
        name, values, names = draw(st.sampled_from(BAD_SIZES))
        kwargs[name] = draw(st.sampled_from(values))
        return CONV[nd], (x, w), kwargs, names
    if kind == "input":
        bad = draw(st.sampled_from([
            np.ones((2, 4)), np.ones((2, 4) + (6,) * (nd + 1)), "abc", {"a": 1}, None,
            np.ones((2, 4) + (6,) * nd, np.complex64), np.ones((2, 4) + (6,) * nd, object),
            np.ones((2, 3) + (6,) * nd), np.ones((2, 4) + (0,) * nd), np.ones((2, 0) + (6,) * nd),
            np.ones((2, 4) + (6,) * nd, np.longdouble), np.full((2, 4) + (6,) * nd, "s"),
            np.ones((2, 4) + (2,) * nd)]))
        return CONV[nd], (bad, w), kwargs, ("input", "C_in", "groups", "kernel")
    if kind == "weight":
        bad = draw(st.sampled_from([
            np.ones((6, 2)), np.ones((6, 2) + (3,) * (nd + 1)), [[1, 2], [3]], 3.0,
            np.ones((6, 2) + (3,) * nd, np.complex128), np.ones((5, 2) + (3,) * nd),
            np.ones((6, 3) + (3,) * nd), np.ones((0, 2) + (3,) * nd),
            np.ones((6, 2) + (0,) * nd), np.ones((6, 2) + (9,) * nd)]))
        return CONV[nd], (x, bad), kwargs, ("weight", "groups", "kernel", "C_out")
    if kind == "bias":
        bad = draw(st.sampled_from([np.ones(5), np.ones((6, 1)), np.ones(6, complex), "b",
                                    np.ones(0), np.ones((1,))]))
        return CONV[nd], (x, w, bad), kwargs, ("bias",)
    if kind == "out":
        out_shape = (2, 6) + (4,) * nd
        choice = draw(st.sampled_from(["shape", "dtype", "readonly", "strided", "list",
                                       "alias-input", "alias-weight", "fortran"]))
        if choice == "shape":
            out = np.empty((2, 6) + (5,) * nd, np.float32)
        elif choice == "dtype":
            out = np.empty(out_shape, np.float64)
        elif choice == "readonly":
            out = np.empty(out_shape, np.float32)
            out.flags.writeable = False
        elif choice == "strided":
            out = np.empty(out_shape[:-1] + (8,), np.float32)[..., ::2]
        elif choice == "list":
            out = np.empty(out_shape, np.float32).tolist()
        elif choice == "fortran":
            out = np.asfortranarray(np.empty(out_shape, np.float32))
            if out.flags.c_contiguous:   # 1-element axes make it both
                return CONV[nd], (x, w), dict(kwargs, out=np.empty(3)), ("out",)
        else:
            # out overlaps the memory of an operand (writing it would corrupt the operand)
            buffer = np.ones(x.size + w.size + math.prod(out_shape), np.float32)
            x = buffer[:x.size].reshape(x.shape)
            w = buffer[x.size:x.size + w.size].reshape(w.shape)
            start = draw(st.integers(0, x.size + w.size - 1))
            out = buffer[start:start + math.prod(out_shape)].reshape(out_shape)
        return CONV[nd], (x, w), dict(kwargs, out=out), ("out",)
    if kind == "huge":
        # outputs with more elements/bytes than int64 can count, or sizes C cannot hold
        choice = draw(st.sampled_from(["padding", "dilation+padding", "stride", "padding-all"]))
        if choice == "padding":
            kwargs["padding"] = draw(st.sampled_from([2**62, 2**63 - 1, 2**63, 2**100]))
        elif choice == "padding-all":
            kwargs["padding"] = tuple((2**31 if i % 2 else 2**32) for i in range(nd))
            if nd == 1:
                kwargs["padding"] = 2**61
        elif choice == "dilation+padding":
            kwargs["padding"], kwargs["dilation"] = 2**62, 2**61
        else:
            kwargs["stride"] = draw(st.sampled_from([2**63, 2**64, 2**100]))
        return CONV[nd], (x, w), kwargs, tuple(kwargs) + ("output",)
    # arguments that each look fine but do not fit together
    kwargs.update(draw(st.sampled_from([
        dict(padding="same", stride=2), dict(padding=6, padding_mode="reflect"),
        dict(padding=7, padding_mode="circular"), dict(dilation=4),
        dict(algorithm="gemm1x1")])))
    return CONV[nd], (x, w), kwargs, ("padding", "stride", "dilation", "kernel", "gemm1x1")


@settings(max_examples=examples(6))
@given(bad_conv_calls())
def test_invalid_conv_arguments_raise_a_clear_error(call):
    count("conv invalid")
    fn, args, kwargs, names = call
    with pytest.raises((ValueError, TypeError)) as error:
        fn(*args, **kwargs)
    message_names(error, *names)


@st.composite
def bad_signal_calls(draw):
    fn = draw(st.sampled_from([fastconv.convolve, fastconv.correlate]))
    bad = draw(st.sampled_from([
        ((np.ones(3), np.ones((2, 2))), {}, ("dimensions",)),
        ((np.ones(0), np.ones(2)), {}, ("non-empty",)),
        ((np.ones((2, 0)), np.ones((2, 2))), {}, ("non-empty",)),
        ((np.ones(3, complex), np.ones(2)), {}, ("in1",)),
        ((np.ones(3), np.ones(2, object)), {}, ("in2",)),
        ((np.ones(3), "ab"), {}, ("in2",)),
        ((None, np.ones(2)), {}, ("in1",)),
        ((np.ones(3), np.ones(2)), dict(mode="causal"), ("mode",)),
        ((np.ones(3), np.ones(2)), dict(mode=None), ("mode",)),
        ((np.ones(3), np.ones(2)), dict(method="overlap-add"), ("method",)),
        ((np.ones(3), np.ones(0)), dict(mode="same"), ("non-empty",)),
        ((np.ones((3, 1)), np.ones((1, 3))), dict(mode="valid"), ("valid",)),
    ]))
    return (fn,) + bad


@settings(max_examples=examples(0.5))
@given(bad_signal_calls())
def test_invalid_convolve_arguments_raise_a_clear_error(call):
    count("convolve invalid")
    fn, args, kwargs, names = call
    with pytest.raises((ValueError, TypeError)) as error:
        fn(*args, **kwargs)
    message_names(error, *names)


@settings(max_examples=examples(0.5))
@given(st.sampled_from(["output_shape", "receptive_field", "set_num_threads", "num_threads"]),
       st.sampled_from([0, -1, 1.5, NAN_FLOAT, INF_FLOAT, "3", None, 2**64, True, (2**70,)]))
def test_invalid_planning_and_thread_arguments_raise_a_clear_error(name, bad):
    count("planning/threads invalid")
    if name == "output_shape":
        call, names = (lambda: fastconv.output_shape((1, 3, 8, 8), (4, 3, 3, 3), stride=bad)), \
            ("stride",)
        if bad == (2**70,):
            call = lambda: fastconv.output_shape((1, 3, 2**70, 8), (4, 3, 3, 3))  # noqa: E731
            names = ("input",)
    elif name == "receptive_field":
        call, names = (lambda: fastconv.receptive_field([dict(kernel_size=bad)])), \
            ("kernel_size",)
    elif name == "set_num_threads":
        call, names = (lambda: fastconv.set_num_threads(bad)), ("positive int",)
    else:
        def call():
            with fastconv.num_threads(bad):
                pass
        names = ("positive int",)
    before = fastconv.get_num_threads()
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    message_names(error, *names)
    assert fastconv.get_num_threads() == before
