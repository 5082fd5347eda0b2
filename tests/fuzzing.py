"""Shared machinery of the fuzz tests: profiles, example counting, array layouts, tolerances.

The strategies draw *tiny* problems (the float64 references in reference.py are plain loops),
so that a CI run can afford tens of thousands of them.
"""
import collections
import os

import numpy as np
from hypothesis import strategies as st

PROFILE = os.environ.get("FASTCONV_FUZZ", "ci")
if PROFILE not in ("ci", "long", "tiny"):
    raise RuntimeError(f"FASTCONV_FUZZ must be 'ci', 'long' or 'tiny'; got {PROFILE!r}")

# max_examples of a weight-1 fuzz test in each profile; tests scale it with examples(weight)
BASE_EXAMPLES = {"ci": 300, "long": 3000, "tiny": 30}

# examples run per test in this session, printed by conftest.pytest_terminal_summary
EXAMPLES = collections.Counter()


def examples(weight):
    return max(1, int(BASE_EXAMPLES[PROFILE] * weight))


def count(name):
    EXAMPLES[name] += 1


try:
    import torch
except ImportError:  # PyTorch is an optional second oracle
    torch = None


# ---------------------------------------------------------------------------------------------
# Data and memory layouts

DTYPES = (np.float32, np.float64)
# other real dtypes are promoted (integers and bools to float64, float16 to float32)
PROMOTED_DTYPES = (np.int32, np.int64, np.uint8, np.float16, np.bool_)
LAYOUTS = ("C", "F", "reversed", "strided", "transposed-copy", "channels-last")


def layout_of(a, layout):
    """The same values as `a`, in another memory layout (a view where possible)."""
    if layout == "C" or a.ndim == 0:
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "reversed":
        # negatively strided along every axis: a reversed copy viewed backwards
        return np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])[
            (slice(None, None, -1),) * a.ndim]
    if layout == "strided":
        # every other element of a larger buffer along every axis
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        view = big[(slice(None, None, 2),) * a.ndim]
        view[...] = a
        return view
    if a.ndim < 2:
        return a.copy()
    if layout == "channels-last":
        # axis 1 last in memory (PyTorch's channels_last for (N, C, H, W)), viewed back
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    # the last two axes swapped in memory, viewed back
    return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)


@st.composite
def arrays(draw, shape, dtype, nonfinite=False):
    """Random values of `shape` in a random layout; with `nonfinite`, maybe NaN/Inf too."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "b":
        a = rng.random(shape) < 0.5
    elif np.dtype(dtype).kind in "iu":
        a = rng.integers(0, 5, shape).astype(dtype)
    else:
        a = rng.standard_normal(shape).astype(dtype)
        if nonfinite and a.size and draw(st.integers(0, 3)) == 0:
            special = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            a.reshape(-1)[draw(st.integers(0, a.size - 1))] = special
    return layout_of(a, draw(st.sampled_from(LAYOUTS)))


def float_dtype(*arrays):
    """The dtype fastconv computes in (NumPy promotion, integers to float64)."""
    common = np.result_type(*[a for a in arrays if a is not None])
    if common.kind in "biu":
        return np.dtype(np.float64)
    return np.dtype(np.float32) if common.itemsize <= 4 else np.dtype(np.float64)


def assert_close(got, want, magnitude, terms, dtype, what="", bound=None):
    """`got` agrees with the float64 `want` within the rounding of a sum of `terms` products.

    `magnitude` is the same computation on absolute values (the size of the largest partial
    sum); NaN must be NaN and +-Inf must be the same Inf at the same positions.
    """
    eps = np.finfo(dtype).eps
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)],
                                  err_msg=f"{what}: Inf positions")
    tol = (terms + 4) * eps * (magnitude[finite] + 1e-30) + 10 * np.finfo(dtype).tiny
    if bound is not None:   # an algorithm with a bound of its own (FFT's: fft_bound)
        tol = np.maximum(tol, np.broadcast_to(bound, want.shape)[finite])
    err = np.abs(got[finite] - want[finite])
    if err.size and not (err <= tol).all():
        worst = int(np.argmax(err - tol))
        raise AssertionError(f"{what}: {int((err > tol).sum())} of {err.size} values off; worst "
                             f"{got[finite][worst]!r} vs {want[finite][worst]!r} (tol "
                             f"{tol[worst]:.3g})")


def winograd_bound(x, w, bias, kwargs, dtype, op="forward", input_shape=None):
    """Winograd's error bound per output (README, "Accuracy: Winograd"): a tile transforms
    its inputs and outputs together, so an output's rounding comes from every input of its
    tile, also those its own window does not read: 2e-5 (float32; 1e-13 float64) times sum
    over the group's channels of max |w| times the sum of |x| over the window widened by 3
    positions on each side (in the plane; in 1-d along its phase), plus |bias|. `op`:
    "forward" (x, w as conv_nd takes them), "input" (x the output gradient of a convolution
    with input `input_shape`) or "transpose" (conv_transpose_nd's x and w). Non-finite
    inputs count as 0 (such calls are recomputed exactly); a forward call with a padding
    mode other than zeros counts the padded input's values, and an input gradient with one
    is bounded as the padded input's, folded as the padding copies (a border position takes
    the bounds of the padded positions that copy it, whichever phase of a dilation they
    lie in)."""
    import reference
    relative = 2e-5 if np.dtype(dtype) == np.float32 else 1e-13
    nd = w.ndim - 2
    dilation = reference.as_tuple(kwargs.get("dilation", 1), nd)
    reach = [0] * (nd - 2) + [3, 3] if nd > 1 else [3]     # the tiled axes, in taps
    largest = np.abs(w).max(axis=tuple(range(2, w.ndim)), keepdims=True)
    ones = np.ones(w.shape[:2] + tuple(k + 2 * r for k, r in zip(w.shape[2:], reach)))
    ax = np.abs(np.nan_to_num(np.asarray(x, np.float64), nan=0, posinf=0, neginf=0))
    ab = None if bias is None else np.abs(bias)
    pads = reference.padding_pairs(kwargs.get("padding", 0), w.shape[2:], dilation)
    mode = kwargs.get("padding_mode", "zeros")
    if op == "forward" and mode != "zeros":
        # the tile reads the padded input: its copied border values count where they lie
        ax = np.pad(ax, ((0, 0), (0, 0)) + tuple(pads),
                    mode={"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode])
        pads, mode = [(0, 0)] * nd, "zeros"
    wider = tuple((lo + r * d, hi + r * d) for (lo, hi), r, d in zip(pads, reach, dilation))
    plain = dict(kwargs, padding=wider, padding_mode="zeros")
    if op == "forward":
        scale = reference.conv_nd(ax, ones * largest, ab, **plain)
    elif op == "input" and mode != "zeros":
        padded_shape = tuple(input_shape[:2]) + tuple(
            n + lo + hi for n, (lo, hi) in zip(input_shape[2:], pads))
        reach_only = tuple((r * d, r * d) for r, d in zip(reach, dilation))
        scale = reference.fold_padding(reference.conv_input_grad(
            padded_shape, ones * largest, ax, **dict(plain, padding=reach_only)), pads, mode)
    elif op == "input":
        scale = reference.conv_input_grad(input_shape, ones * largest, ax, **plain)
    else:
        del plain["padding_mode"]
        scale = reference.conv_transpose_nd(ax, ones * largest, ab, **plain)
    return relative * scale


def fft_bound(x, w, bias, kwargs, dtype, points):
    """The FFT convolution's stated error bound per output (README, "Accuracy"):
    eps log2(points) sum over the group's c of ||x[n, c]||_2 ||w[o, c]||_2 + eps |b[o]|, eps
    the machine epsilon of `dtype`, `points` the transform's size (non-finite inputs count
    as 0: such calls are recomputed exactly)."""
    eps = np.finfo(dtype).eps
    x = np.nan_to_num(np.asarray(x, np.float64), nan=0, posinf=0, neginf=0)
    w = np.asarray(w, np.float64)
    groups = kwargs.get("groups", 1)
    c_group, out_group = w.shape[1], w.shape[0] // groups
    planes = (x.shape[0], groups, c_group, int(np.prod(x.shape[2:])))
    x_norms = np.sqrt((x.reshape(planes) ** 2).sum(-1))          # (N, G, C_g)
    w_norms = np.sqrt((w.reshape(groups, out_group, c_group, -1) ** 2).sum(-1))   # (G, O_g, C_g)
    sums = np.einsum("ngc,goc->ngo", x_norms, w_norms).reshape(x.shape[0], w.shape[0])
    bound = eps * np.log2(max(points, 2)) * sums
    if bias is not None:
        bound = bound + eps * np.abs(np.asarray(bias, np.float64))
    return bound.reshape(bound.shape + (1,) * (w.ndim - 2))


def assert_direct_sums_when_not_finite(x, w, b, where, value, x_index, w_index, algorithm,
                                       **kwargs):
    """With `value` (an inf or NaN) put into the input at `x_index` or the weights at
    `w_index` (`where`), conv2d by `algorithm` equals packed's bit for bit (the direct sums':
    NaN where NaN, inf where inf), and some outputs stay finite."""
    import fastconv
    if where == "input":
        x[x_index] = value
    else:
        w[w_index] = value
    got = fastconv.conv2d(x, w, b, algorithm=algorithm, **kwargs)
    want = fastconv.conv2d(x, w, b, algorithm="packed", **kwargs)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).any()


def message_names(error, *names):
    """The error message mentions at least one of `names` (the argument at fault)."""
    text = str(error.value)
    assert any(n in text for n in names), f"message {text!r} names none of {names}"
