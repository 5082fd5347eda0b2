"""Bad input raises ValueError/TypeError naming the argument; it never crashes or computes."""
import numpy as np
import pytest

import fastconv

X = np.ones((2, 4, 8, 8), np.float32)
W = np.ones((6, 2, 3, 3), np.float32)   # fits groups=2


# (description, call, exception type, regex the message must match)
BAD_CALLS = [
    ("input ndim", lambda: fastconv.conv2d(X[0], W), ValueError, "input must be 4-d"),
    ("weight ndim", lambda: fastconv.conv2d(X, W[0]), ValueError, "weight must be 4-d"),
    ("conv1d given 2d", lambda: fastconv.conv1d(X, W), ValueError, "input must be 3-d"),
    ("groups do not divide C_in", lambda: fastconv.conv2d(X, W, groups=3), ValueError, "groups"),
    ("weight channels vs groups", lambda: fastconv.conv2d(X, W), ValueError, r"weight.shape\[1\]"),
    ("groups not int", lambda: fastconv.conv2d(X, W, groups=2.0), TypeError, "groups"),
    ("groups zero", lambda: fastconv.conv2d(X, W, groups=0), ValueError, "groups"),
    ("bias shape", lambda: fastconv.conv2d(X, W, np.ones(5), groups=2), ValueError, "bias"),
    ("kernel larger than input",
     lambda: fastconv.conv2d(X, np.ones((6, 2, 9, 3)), groups=2), ValueError, "larger than"),
    ("dilated kernel larger than padded input",
     lambda: fastconv.conv2d(X, W, groups=2, dilation=5, padding=1), ValueError, "larger than"),
    ("stride zero", lambda: fastconv.conv2d(X, W, groups=2, stride=0), ValueError, "stride"),
    ("stride negative", lambda: fastconv.conv2d(X, W, groups=2, stride=(1, -1)), ValueError,
     "stride"),
    ("stride wrong length", lambda: fastconv.conv2d(X, W, groups=2, stride=(1, 1, 1)), TypeError,
     "stride"),
    ("stride float", lambda: fastconv.conv2d(X, W, groups=2, stride=1.5), TypeError, "stride"),
    ("dilation zero", lambda: fastconv.conv2d(X, W, groups=2, dilation=0), ValueError,
     "dilation"),
    ("padding negative", lambda: fastconv.conv2d(X, W, groups=2, padding=-1), ValueError,
     "padding"),
    ("padding pair negative", lambda: fastconv.conv2d(X, W, groups=2, padding=((0, -1), 1)),
     ValueError, "padding"),
    ("padding bad string", lambda: fastconv.conv2d(X, W, groups=2, padding="full"), ValueError,
     "padding"),
    ("padding bad type", lambda: fastconv.conv2d(X, W, groups=2, padding=1.0), TypeError,
     "padding"),
    ("same with stride", lambda: fastconv.conv2d(X, W, groups=2, padding="same", stride=2),
     ValueError, "same"),
    ("unknown padding mode", lambda: fastconv.conv2d(X, W, groups=2, padding_mode="mirror"),
     ValueError, "padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular'; "
                 "got 'mirror'"),
    ("reflect padding too large",
     lambda: fastconv.conv2d(X, W, groups=2, padding=8, padding_mode="reflect"), ValueError,
     "reflect"),
    ("circular padding too large",
     lambda: fastconv.conv2d(X, W, groups=2, padding=9, padding_mode="circular"), ValueError,
     "circular"),
    ("unknown algorithm", lambda: fastconv.conv2d(X, W, groups=2, algorithm="winograd_f6"), ValueError,
     "algorithm"),
    ("algorithm that does not apply",
     lambda: fastconv.conv2d(X, W, groups=2, algorithm="gemm1x1"), ValueError, "gemm1x1"),
    ("complex input", lambda: fastconv.conv2d(X.astype(complex), W, groups=2), TypeError,
     "input must be real"),
    ("object weight", lambda: fastconv.conv2d(X, W.astype(object), groups=2), TypeError,
     "weight"),
    ("string input", lambda: fastconv.conv2d(np.full((1, 4, 8, 8), "a"), W, groups=2),
     TypeError, "input"),
    ("empty spatial", lambda: fastconv.conv2d(np.ones((1, 4, 0, 8)), W, groups=2), ValueError,
     "non-empty"),
    ("empty channels", lambda: fastconv.conv2d(np.ones((1, 0, 8, 8)), np.ones((0, 0, 3, 3))),
     ValueError, "non-empty"),
    ("empty kernel", lambda: fastconv.conv2d(X, np.ones((6, 2, 0, 3)), groups=2), ValueError,
     "weight"),
    ("out wrong shape", lambda: fastconv.conv2d(X, W, groups=2, out=np.empty((2, 6, 5, 5),
                                                                             np.float32)),
     ValueError, "out must have shape"),
    ("out wrong dtype", lambda: fastconv.conv2d(X, W, groups=2, out=np.empty((2, 6, 6, 6))),
     ValueError, "out must have dtype float32"),
    ("out not contiguous",
     lambda: fastconv.conv2d(X, W, groups=2, out=np.empty((2, 6, 6, 12), np.float32)[..., ::2]),
     ValueError, "C-contiguous"),
    ("out not an array", lambda: fastconv.conv2d(X, W, groups=2, out=[0]), TypeError, "out"),
    ("out read-only", lambda: fastconv.conv2d(X, W, groups=2, out=np.broadcast_to(
        np.float32(0), (2, 6, 6, 6))), ValueError, "out"),
    ("ragged input", lambda: fastconv.conv1d([[[1, 2], [3]]], np.ones((1, 1, 1))), TypeError,
     "input"),
    ("None input", lambda: fastconv.conv2d(None, W), TypeError, "input"),
    ("convolve mode", lambda: fastconv.convolve([1.0], [1.0], mode="causal"), ValueError, "mode"),
    ("convolve ndim mismatch", lambda: fastconv.convolve(np.ones(3), np.ones((2, 2))),
     ValueError, "same number of dimensions"),
    ("convolve method", lambda: fastconv.convolve([1.0], [1.0], method="winograd"), ValueError,
     "method"),
    ("convolve empty", lambda: fastconv.convolve(np.ones(0), np.ones(2)), ValueError,
     "non-empty"),
    ("convolve complex", lambda: fastconv.convolve(np.ones(3, complex), np.ones(2)), TypeError,
     "in1"),
    ("output_shape ndim", lambda: fastconv.output_shape((1, 3, 8), (4, 3, 3, 3)), ValueError,
     "input"),
    ("receptive_field not a list", lambda: fastconv.receptive_field(3), TypeError, "layers"),
    ("receptive_field empty", lambda: fastconv.receptive_field([]), ValueError, "layers"),
    ("receptive_field bad key", lambda: fastconv.receptive_field([dict(kernel_size=3, pad=1)]),
     ValueError, "unknown keys"),
    ("set_num_threads zero", lambda: fastconv.set_num_threads(0), ValueError, "positive"),
    ("set_num_threads float", lambda: fastconv.set_num_threads(1.5), TypeError, "positive int"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_out_must_not_alias_the_input():
    x = np.ones((1, 1, 8, 8), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="share memory"):
        fastconv.conv2d(x, w, out=x)


def test_error_messages_say_what_was_given():
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(X, W, groups=2, stride=0)
    assert "0" in str(info.value)
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(X[0], W)
    assert "(4, 8, 8)" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Every operator of the operator table (fastconv.operators), every dimensionality: the same
# rules for the operands every operator takes.

def _table_calls():
    from fastconv.operators import OPERATORS
    for op in OPERATORS.values():
        for nd in op.dims:
            yield pytest.param(op, nd, id=f"{op.name}{nd}d")


def _call(op, nd, x):
    """`op` in `nd` dimensions on input `x`, with valid other arguments."""
    spatial = x.shape[2:] if x.ndim == nd + 2 else (4,) * nd
    c = x.shape[1] if x.ndim > 1 else 2
    if op.name == "conv":
        return op.forward(nd)(x, np.ones((3, c) + (2,) * nd))
    if op.name == "conv_transpose":
        return op.forward(nd)(x, np.ones((c, 3) + (2,) * nd))
    if op.name == "locally_connected":
        grid = tuple(n - 1 for n in spatial)
        return op.forward(nd)(x, np.ones(grid + (3, c) + (2,) * nd))
    if op.name == "max_unpool":
        return op.forward(nd)(x, np.zeros(x.shape, np.int64), 2)
    if op.name in ("adaptive_max_pool", "adaptive_avg_pool"):
        return op.forward(nd)(x, 2)
    if op.name == "interpolate":
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[nd]
        return op.forward(nd)(x, scale_factor=2, mode=mode)
    return op.forward(nd)(x, 2)


@pytest.mark.parametrize("op, nd", list(_table_calls()))
def test_every_operator_names_its_input_when_it_is_wrong(op, nd):
    good = np.ones((1, 2) + (4,) * nd)
    assert _call(op, nd, good).shape[:1] == (1,)      # the valid call runs
    with pytest.raises(TypeError, match="input"):
        _call(op, nd, good.astype(complex))
    with pytest.raises(TypeError, match="input"):
        _call(op, nd, good.astype(object))
    with pytest.raises(ValueError, match="input"):
        _call(op, nd, np.ones((1, 2) + (4,) * (nd + 1)))   # one spatial axis too many


# ---------------------------------------------------------------------------------------------
# Planning a call without running it (fastconv.planning): the same rules

PROBLEM = fastconv.planning.conv_problem(2, (2, 4, 8, 8), (6, 2, 3, 3), groups=2)
PLANNING_CALLS = [
    ("plan of no problem", lambda: fastconv.planning.plan_conv((2, 4, 8, 8)), TypeError,
     "problem must be a ConvProblem"),
    ("plan dtype unknown", lambda: fastconv.planning.plan_conv(PROBLEM, "float99"), TypeError,
     "dtype"),
    ("plan dtype complex", lambda: fastconv.planning.plan_weight_grad(PROBLEM, complex),
     TypeError, "dtype"),
    ("plan algorithm unknown", lambda: fastconv.planning.plan_input_grad(PROBLEM, "float32",
                                                                       "fft"),
     ValueError, "algorithm must be one of"),
    ("plan with a string weight", lambda: fastconv.planning.plan_input_grad(
        PROBLEM, "float32", "auto", "weights"), TypeError, "weight"),
    ("choose_algorithm dtype", lambda: fastconv.choose_algorithm(X, W, groups=2, dtype="x"),
     TypeError, "dtype"),
    ("pool shape of an int", lambda: fastconv.planning.pool_output_shape(2, 8, 2), TypeError,
     "input_shape"),
    ("pool shape nd", lambda: fastconv.planning.pool_output_shape(4, (1, 1, 4, 4), 2),
     ValueError, "nd"),
    ("unpool shape length", lambda: fastconv.planning.unpool_output_shape(2, (1, 1, 4), 2),
     ValueError, "input_shape"),
]


@pytest.mark.parametrize("description, call, error, message", PLANNING_CALLS,
                         ids=[c[0] for c in PLANNING_CALLS])
def test_planning_names_what_is_wrong(description, call, error, message):
    with pytest.raises(error, match=message):
        call()
