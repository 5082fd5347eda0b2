"""scipy.ndimage's linear filters with its signatures and results: ``correlate``,
``convolve``, ``correlate1d``, ``convolve1d``, ``uniform_filter(1d)``, ``gaussian_filter(1d)``.

Every border mode is an index table per axis (``extension_table``): the input index at each
position of the extended axis, -1 where the constant ``cval`` stands. The kernel
(fastconv/_kernels/filters.pyx) reads the input through these tables, so no padded copy is
made, and it runs on every dimension of the image in parallel, not only over channels.

SciPy computes in float64 and casts the result to the output's dtype (truncating toward zero
for an integer output, as C does); so does fastconv, except that a result within 1e-9 of an
integer is taken as that integer first (float rounding can put an exact integer, a constant
region under a normalised filter, a hair below it, where truncation would give one less). fastconv computes in float64 too, except where both the
input and the output are float32 (or float16): those compute in float32, and agree with SciPy
to float32's rounding. The separable filters cast after every 1-d pass, as SciPy does, so an
integer image gives SciPy's integers.
"""
import math
import numbers
from typing import NamedTuple

import numpy as np

from fastconv._kernels import filters as _filters
from fastconv._plan import args as _args
from fastconv._runtime import threads as _parallel
from fastconv._runtime.memo import memoized_tables
from fastconv._runtime.memory import pooled
from fastconv._runtime.precision import flushing_denormals

__all__ = ["correlate", "convolve", "correlate1d", "convolve1d", "uniform_filter",
           "uniform_filter1d", "gaussian_filter", "gaussian_filter1d"]

# scipy.ndimage's names; for filters the grid- modes are the same extensions as their plain
# counterparts (SciPy says so: they differ only in interpolation)
MODES = {"reflect": "reflect", "grid-mirror": "reflect", "mirror": "mirror",
         "nearest": "nearest", "wrap": "wrap", "grid-wrap": "wrap",
         "constant": "constant", "grid-constant": "constant"}

# outputs fewer rows than this are computed in pieces of _PIECE outputs of a row
_FEW_ROWS = 64
_PIECE = 4096


@memoized_tables
def extension_table(n, start, count, mode):
    """Input index (int64) at positions start .. start + count - 1 of an axis of length `n`
    extended by `mode` (a value of MODES); -1 where the constant stands.

    reflect:  d c b a | a b c d | d c b a   (the edge repeated: period 2n)
    mirror:   d c b | a b c d | c b a       (the edge not repeated: period 2n - 2)
    nearest:  a a a | a b c d | d d d
    wrap:     b c d | a b c d | a b c
    constant: k k k | a b c d | k k k
    """
    q = np.arange(start, start + count, dtype=np.int64)
    if mode == "constant":
        return np.where((q >= 0) & (q < n), q, -1)
    if mode == "nearest":
        return np.clip(q, 0, n - 1)
    if mode == "wrap":
        return np.mod(q, n)
    if mode == "reflect":
        r = np.mod(q, 2 * n)
        return np.where(r >= n, 2 * n - 1 - r, r)
    if n == 1:                          # mirror of a single sample
        return np.zeros_like(q)
    r = np.mod(q, 2 * n - 2)
    return np.where(r >= n, 2 * n - 2 - r, r)


def vector_stretch(table, taps):
    """[j0, j1): the longest run of outputs j whose taps table[j .. j + taps - 1] are
    consecutive input indices (so the kernel may load them as one vector). (0, 0) if none."""
    count = len(table) - taps + 1
    if count <= 0:
        return 0, 0
    step = np.ones(len(table), dtype=bool)
    step[:-1] = table[1:] == table[:-1] + 1
    # broken[j]: a tap of output j lands on -1 or past a jump in the table
    bad = (table < 0) | ~step
    bad_before = np.concatenate(([0], np.cumsum(bad)))
    # output j is inside if no bad position among j .. j + taps - 2, and table[j + taps - 1] >= 0
    inside = (bad_before[taps - 1:taps - 1 + count] == bad_before[:count]) \
        & (table[taps - 1:taps - 1 + count] >= 0)
    starts = np.flatnonzero(inside)
    if starts.size == 0:
        return 0, 0
    j0 = int(starts[0])
    gaps = np.flatnonzero(~inside[j0:])
    j1 = j0 + int(gaps[0]) if gaps.size else count
    return j0, j1


@flushing_denormals
def filter_through_tables(x, weight, tables, out_shape, cval):
    """The correlation of the C-contiguous `x` with `weight` (same ndim, same dtype, float32 or
    float64) read through the per-axis `tables`; a new C-contiguous array of `out_shape`."""
    dtype = x.dtype
    out = np.empty(out_shape, dtype=dtype)
    if out.size == 0:
        return out
    taps = tuple(int(k) for k in weight.shape)
    rows_of_taps = np.ascontiguousarray(weight.reshape(-1, taps[-1]), dtype=dtype)
    row_sums = rows_of_taps.sum(axis=1)
    j0, j1 = vector_stretch(tables[-1], taps[-1])
    length = out_shape[-1]
    rows = out.size // length
    threads = _parallel.threads_for(out.size * weight.size)
    # few, long rows are cut into pieces (work for every thread), whole multiples of 64
    # outputs; from the shape alone, so that results never depend on the thread count
    width = length
    if rows < _FEW_ROWS and length >= 2 * _PIECE:
        width = _PIECE
    _filters.correlate_tables(x.reshape(-1), tuple(x.shape), out.reshape(-1), tuple(out_shape),
                              rows_of_taps, row_sums, taps,
                              tuple(np.ascontiguousarray(t, dtype=np.int64) for t in tables),
                              float(cval), j0, j1, width, threads)
    return out


# ---- arguments, as scipy.ndimage takes them ----------------------------------------------

def _weights(value, name="weights"):
    w = _args.real_array(value, name)
    return w.astype(np.float64, copy=False)


def _axes(axes, ndim):
    """scipy.ndimage's `axes`: None (all), an int or a sequence of distinct ints."""
    if axes is None:
        return tuple(range(ndim))
    items = (axes,) if _args.is_int(axes) else axes
    if not isinstance(items, (tuple, list)) or not all(_args.is_int(a) for a in items):
        raise TypeError(f"axes must be None, an int or a sequence of ints; got {axes!r}")
    result = []
    for a in items:
        if not -ndim <= a < ndim:
            raise ValueError(f"axes: axis {a} is out of range for an input of {ndim} "
                             f"dimensions")
        result.append(int(a) % ndim)
    if len(set(result)) != len(result):
        raise ValueError(f"axes must be distinct; got {axes!r}")
    return tuple(result)


def _per_axis(value, n, name, check):
    """A scalar or a sequence of `n` values, as a tuple of `n` values, each checked."""
    if isinstance(value, (tuple, list, np.ndarray)) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"{name} must be one value or a sequence of {n}; got {value!r}")
        return tuple(check(v) for v in value)
    return (check(value),) * n


def _mode(value):
    if not isinstance(value, str) or value not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}; "
                         f"got {value!r}")
    return MODES[value]


def _origin(value):
    if not _args.is_int(value):
        raise TypeError(f"origin must be an int or a sequence of ints; got {value!r}")
    return int(value)


def _cval(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"cval must be a real number; got {value!r}")
    return float(value)


def _output(output, x):
    """(array to fill or None, dtype of the result) for scipy.ndimage's `output` argument."""
    if output is None:
        return None, x.dtype
    if isinstance(output, np.ndarray):
        if output.shape != x.shape:
            raise ValueError(f"output must have the input's shape {x.shape}; got "
                             f"{output.shape}")
        if not output.flags.writeable:
            raise ValueError("output must be writeable; got a read-only array")
        if output.dtype.kind not in "biuf" or output.dtype.itemsize > 8 \
                and output.dtype.kind == "f":
            raise TypeError(f"output must have a real numeric dtype; got {output.dtype}")
        return output, output.dtype
    try:
        dtype = np.dtype(output)
    except TypeError:
        raise TypeError(f"output must be None, a dtype or an array; got {output!r}") from None
    if dtype.kind not in "biuf" or (dtype.kind == "f" and dtype.itemsize > 8):
        raise TypeError(f"output must be a real numeric dtype; got {dtype}")
    return None, dtype


def _compute_dtype(in_dtype, out_dtype):
    """float32 where the input and the output are both at most float32, else float64."""
    small = lambda dt: dt.kind == "f" and dt.itemsize <= 4  # noqa: E731
    return np.dtype(np.float32 if small(in_dtype) and small(out_dtype) else np.float64)


def _deliver(result, target, dtype):
    """`result` cast to `dtype` (C's truncation for integers, as SciPy), into `target` if one
    was given. Returns the output array."""
    if dtype.kind in "biu":
        # a sum whose exact value is an integer can land a hair below it (the order of the
        # float additions); truncating that would give one less: take the integer
        nearest = np.rint(result)
        result = np.where(np.abs(result - nearest) <= 1e-9 * np.maximum(1.0, np.abs(nearest)),
                          nearest, result)
    if dtype == np.bool_:   # SciPy stores a bool through an unsigned char: truncated, then != 0
        result = np.trunc(result) != 0
    if target is None:
        return result.astype(dtype, copy=False)
    np.copyto(target, result, casting="unsafe")
    return target


def _check_origin(origin, taps, axis):
    if not 0 <= taps // 2 + origin < taps:
        raise ValueError(f"origin {origin} is invalid for a filter of {taps} taps along axis "
                         f"{axis}: it must lie in [{-(taps // 2)}, {(taps - 1) // 2}]")


def _filter_same_shape(x, weight, modes, origins, cval, dtype):
    """x (any real array) correlated with `weight` (x.ndim dims, float64), output of x's
    shape: SciPy's filter geometry (the tap taps // 2 + origin sits on the output)."""
    shape = x.shape
    if x.ndim == 0:         # a 0-d filter multiplies
        return np.asarray(x, dtype=dtype) * weight.astype(dtype)
    xc = np.ascontiguousarray(x, dtype=dtype)
    if xc.size == 0:
        return np.empty(shape, dtype=dtype)
    tables = [extension_table(n, -(k // 2 + o), n + k - 1, m)
              for n, k, o, m in zip(shape, weight.shape, origins, modes)]
    return filter_through_tables(xc, weight.astype(dtype), tables, shape, cval)


def _correlate_or_convolve(input, weights, output, mode, cval, origin, axes, flip):
    x = _args.real_array(input, "input")
    w = _weights(weights)
    axes = _axes(axes, x.ndim)
    if w.ndim != len(axes):
        raise ValueError(f"weights must have {len(axes)} dimensions (one per filtered axis of "
                         f"the input); got shape {w.shape}")
    if w.size == 0:
        raise ValueError(f"weights must not be empty; got shape {w.shape}")
    origins = list(_per_axis(origin, len(axes), "origin", _origin))
    modes = _per_axis(mode, len(axes), "mode", _mode)
    cval = _cval(cval)
    full_origins = [0] * x.ndim
    full_modes = ["constant"] * x.ndim
    for i, a in enumerate(axes):
        full_origins[a], full_modes[a] = origins[i], modes[i]
    # as SciPy: the weights' dimensions lie along the filtered axes in increasing order, while
    # origin and mode follow the order `axes` lists them in
    w = w.reshape([w.shape[sorted(axes).index(a)] if a in axes else 1 for a in range(x.ndim)])
    if flip:    # convolution: the weights reversed, the origin mirrored (even sizes shift)
        w = w[(slice(None, None, -1),) * w.ndim]
        full_origins = [-o - (1 - k % 2) if a in axes else 0
                        for a, (o, k) in enumerate(zip(full_origins, w.shape))]
    for a in axes:
        _check_origin(full_origins[a], w.shape[a], a)
    target, out_dtype = _output(output, x)
    dtype = _compute_dtype(x.dtype, out_dtype)
    result = _filter_same_shape(x, w, full_modes, full_origins, cval, dtype)
    return _deliver(result, target, out_dtype)


@pooled
def correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """Multidimensional correlation, as ``scipy.ndimage.correlate``.

    ``out[i] = sum_k weights[k] * input[i + k - (weights.shape // 2 + origin)]``, the input
    extended past its borders by `mode`: 'reflect' (default; also 'grid-mirror'), 'mirror',
    'nearest', 'wrap' ('grid-wrap'), 'constant' ('grid-constant') with `cval`. `mode` and
    `origin` may be one value or one per filtered axis; `axes` names the axes `weights`
    spans (default: all). `output`: a dtype, or an array of the input's shape to fill.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import ndimage
    >>> ndimage.correlate(np.arange(5.0), [1.0, 1.0, 1.0])
    array([ 1.,  3.,  6.,  9., 11.])
    """
    return _correlate_or_convolve(input, weights, output, mode, cval, origin, axes, False)


@pooled
def convolve(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """Multidimensional convolution (the weights flipped), as ``scipy.ndimage.convolve``.

    The same as ``correlate`` with the weights reversed along every axis and the origin
    mirrored (one more for an even size), as SciPy defines it."""
    return _correlate_or_convolve(input, weights, output, mode, cval, origin, axes, True)


def _axis(axis, ndim):
    if not _args.is_int(axis):
        raise TypeError(f"axis must be an int; got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an input of {ndim} dimensions")
    return int(axis) % ndim


def _weights1d(weights):
    w = _weights(weights)
    if w.ndim != 1 or w.shape[0] < 1:
        raise ValueError(f"weights must be a non-empty 1-d sequence; got shape {w.shape}")
    return w


@flushing_denormals
def _pass1d(x, w, axis, dtype, mode, cval, origin):
    """One 1-d pass (correlation with the float64 taps `w` along `axis`), in `dtype`."""
    shape = [1] * x.ndim
    shape[axis] = w.shape[0]
    origins = [0] * x.ndim
    origins[axis] = origin
    modes = ["constant"] * x.ndim
    modes[axis] = mode
    return _filter_same_shape(x, w.reshape(shape), modes, origins, cval, dtype)


def _correlate1d(input, w, axis, output, mode, cval, origin, divide=0):
    """SciPy's 1-d filter: w (float64, 1-d) along `axis`; the sum divided by `divide` if given
    (the uniform filter: summed, then divided, so that an integer image gives SciPy's
    integers)."""
    x = _args.real_array(input, "input")
    if x.ndim == 0:
        raise ValueError("input must have at least one dimension; got a 0-d array")
    axis = _axis(axis, x.ndim)
    mode, origin, cval = _mode(mode), _origin(origin), _cval(cval)
    _check_origin(origin, w.shape[0], axis)
    target, out_dtype = _output(output, x)
    dtype = _compute_dtype(x.dtype, out_dtype)
    result = _pass1d(x, w, axis, dtype, mode, cval, origin)
    if divide:
        result /= divide
    return _deliver(result, target, out_dtype)


@pooled
def correlate1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """One-dimensional correlation along `axis`, as ``scipy.ndimage.correlate1d``."""
    return _correlate1d(input, _weights1d(weights), axis, output, mode, cval, origin)


@pooled
def convolve1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """One-dimensional convolution along `axis`, as ``scipy.ndimage.convolve1d``."""
    w = _weights1d(weights)[::-1]
    origin = _origin(origin)
    return _correlate1d(input, w, axis, output, mode, cval, -origin - (1 - w.shape[0] % 2))


def _size(value):
    if not _args.is_int(value):
        raise TypeError(f"size must be a positive int or a sequence of them; got {value!r}")
    if value < 1:
        raise ValueError(f"size must be positive; got {value!r}")
    return int(value)


@pooled
def uniform_filter1d(input, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """The mean over `size` neighbours along `axis`, as ``scipy.ndimage.uniform_filter1d``
    (summed, then divided by `size`, so that an integer image gives SciPy's integers)."""
    size = _size(size)
    return _correlate1d(input, np.ones(size), axis, output, mode, cval, origin, divide=size)


class _Pass(NamedTuple):
    """One 1-d pass of a separable filter: correlation with `taps` (float64) along `axis`;
    `divide`: the uniform filter's size, by which SciPy divides the sum of plain taps."""
    axis: int
    taps: np.ndarray
    mode: str
    origin: int
    divide: int = 0


def _separable(x, output, passes, cval):
    """SciPy's separable filters: one 1-d pass per entry of `passes`, each cast to the
    output's dtype before the next (as SciPy writes each pass into the output array).

    For a float output, the last two passes along the last two axes run as one kernel
    (separable_2d: the column pass of each row into a buffer, then its row pass), so no
    intermediate image is written and read back."""
    target, out_dtype = _output(output, x)
    fused = (out_dtype.kind == "f" and x.ndim >= 2 and x.size > 0 and len(passes) >= 2
             and passes[-2].axis == x.ndim - 2 and passes[-1].axis == x.ndim - 1)
    result = x
    for p in passes[:-2] if fused else passes:
        dtype = _compute_dtype(result.dtype, out_dtype)
        one = _pass1d(result, p.taps, p.axis, dtype, p.mode, cval, p.origin)
        if p.divide:
            one /= p.divide
        result = _deliver(one, None, out_dtype)
    if fused:
        result = _separable_last_two(result, passes[-2], passes[-1], out_dtype, cval)
    elif not passes:
        result = np.array(x, copy=True)
    return _deliver(np.asarray(result), target, out_dtype)


def _separable_last_two(x, column, row, out_dtype, cval):
    dtype = _compute_dtype(x.dtype, out_dtype)
    shape = x.shape
    H, W = shape[-2], shape[-1]
    planes = np.ascontiguousarray(x, dtype=dtype).reshape(-1, H, W)
    out = np.empty(planes.shape, dtype=dtype)
    taps = [np.ascontiguousarray(p.taps / p.divide if p.divide else p.taps, dtype=dtype)
            for p in (column, row)]
    k_col, k_row = len(taps[0]), len(taps[1])
    src_col = extension_table(H, -(k_col // 2 + column.origin), H + k_col - 1, column.mode)
    src_row = extension_table(W, -(k_row // 2 + row.origin), W + k_row - 1, row.mode)
    j0, j1 = vector_stretch(src_row, k_row)
    if j1 <= j0:
        j0 = j1 = W
    _filters.separable_2d(planes, out, taps[0], src_col, taps[1], src_row, cval, j0, j1,
                          _parallel.threads_for(out.size * (k_col + k_row)))
    return out.reshape(shape)


@pooled
def uniform_filter(input, size=3, output=None, mode="reflect", cval=0.0, origin=0, *,
                   axes=None):
    """The mean over a box of `size` (one per axis, or one for all), as
    ``scipy.ndimage.uniform_filter``: one 1-d pass per axis, sizes of 1 skipped."""
    x = _args.real_array(input, "input")
    axes_t = _axes(axes, x.ndim)
    sizes = _per_axis(size, len(axes_t), "size", _size)
    origins = _per_axis(origin, len(axes_t), "origin", _origin)
    modes = _per_axis(mode, len(axes_t), "mode", _mode)
    cval = _cval(cval)
    for s, o, a in zip(sizes, origins, axes_t):
        _check_origin(o, s, a)
    passes = [_Pass(a, np.ones(s), m, o, divide=s)
              for a, s, m, o in zip(axes_t, sizes, modes, origins) if s > 1]
    return _separable(x, output, passes, cval)


def gaussian_kernel1d(sigma, order, radius):
    """The taps of SciPy's Gaussian filter (before its reversal for correlation): the
    Gaussian sampled at -radius..radius, normalised to sum 1, times the probabilists'
    Hermite polynomial that gives its `order`-th derivative:
    d^m/dx^m exp(-x^2 / 2s^2) = (-1/s)^m He_m(x/s) exp(-x^2 / 2s^2)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 * (x / sigma) ** 2)
    phi /= phi.sum()
    u = x / sigma
    he_prev, he = np.zeros_like(u), np.ones_like(u)   # He_{-1} := 0, He_0 = 1
    for m in range(order):
        he_prev, he = he, u * he - m * he_prev
    return phi * he * (-1.0 / sigma) ** order


def _sigma(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.number)):
        raise TypeError(f"sigma must be a non-negative number or a sequence of them; got "
                        f"{value!r}")
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"sigma must be non-negative and finite; got {value!r}")
    return float(value)


def _order(value):
    if not _args.is_int(value) or value < 0:
        raise ValueError(f"order must be a non-negative int; got {value!r}")
    return int(value)


def _radius(value, sigma, truncate):
    if value is None:
        return int(truncate * sigma + 0.5)
    if not _args.is_int(value) or value < 0:
        raise ValueError(f"radius must be a non-negative int; got {value!r}")
    return int(value)


def _gaussian_taps(sigma, order, truncate, radius):
    if not isinstance(truncate, (numbers.Real, np.number)) or not truncate >= 0:
        raise ValueError(f"truncate must be a non-negative number; got {truncate!r}")
    radius = _radius(radius, sigma, truncate)
    return gaussian_kernel1d(sigma, order, radius)[::-1]


@pooled
def gaussian_filter1d(input, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0,
                      truncate=4.0, *, radius=None):
    """A 1-d Gaussian filter (or its `order`-th derivative) along `axis`, as
    ``scipy.ndimage.gaussian_filter1d``: taps out to ``radius`` (default
    ``int(truncate * sigma + 0.5)``)."""
    sigma = _sigma(sigma)
    if sigma == 0:
        raise ValueError("sigma must be positive for a 1-d Gaussian filter; got 0")
    taps = _gaussian_taps(sigma, _order(order), truncate, radius)
    return _correlate1d(input, taps, axis, output, mode, cval, 0)


@pooled
def gaussian_filter(input, sigma, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0,
                    *, radius=None, axes=None):
    """A Gaussian filter as ``scipy.ndimage.gaussian_filter``: one 1-d Gaussian pass per axis
    (`sigma`, `order`, `mode`, `radius` one value or one per axis); axes whose sigma is
    (nearly) zero are left alone, as in SciPy."""
    x = _args.real_array(input, "input")
    axes_t = _axes(axes, x.ndim)
    n = len(axes_t)
    sigmas = _per_axis(sigma, n, "sigma", _sigma)
    orders = _per_axis(order, n, "order", _order)
    modes = _per_axis(mode, n, "mode", _mode)
    radii = _per_axis(radius, n, "radius", lambda r: r)
    cval = _cval(cval)
    passes = [_Pass(a, _gaussian_taps(s, o, truncate, r), m, 0)
              for a, s, o, m, r in zip(axes_t, sigmas, orders, modes, radii) if s > 1e-15]
    return _separable(x, output, passes, cval)
