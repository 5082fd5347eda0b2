"""Convolution in 1, 2 and 3 dimensions with PyTorch's semantics, and SciPy-style
``convolve``/``correlate``.

Each public function normalizes its arguments into a ConvProblem (dispatch.py), checks it,
allocates the output, picks the algorithm and calls one compiled kernel (_conv.pyx).
"""
import contextlib
import functools
from collections import namedtuple

import numpy as np

from fastconv import _args, _conv, _parallel
from fastconv.dispatch import (ConvProblem, Choice, forward_kernel_stride, gemm_band_rows,
                               packed_partition, packed_phase_grid, phase_grid_tile, select)

__all__ = ["conv1d", "conv2d", "conv3d", "convolve", "correlate", "output_shape",
           "receptive_field", "choose_algorithm", "ReceptiveField"]

_parallel.register_blas_hook(_conv)

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _normalize_padding(padding, nd, kernel_size, stride, dilation):
    """Padding as one (before, after) pair per spatial axis."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' needs stride 1 (as in PyTorch); got stride "
                                 f"{stride}")
            # PyTorch's rule: the odd pixel of an even total goes after.
            totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(f"padding must be an int, a sequence of ints or pairs, 'same' or "
                         f"'valid'; got {padding!r}")
    if _args.is_int(padding):
        pairs = ((int(padding), int(padding)),) * nd
    elif isinstance(padding, (tuple, list)) and len(padding) == nd:
        pairs = []
        for p in padding:
            if _args.is_int(p):
                pairs.append((int(p), int(p)))
            elif isinstance(p, (tuple, list)) and len(p) == 2 and all(_args.is_int(v) for v in p):
                pairs.append((int(p[0]), int(p[1])))
            else:
                raise TypeError(f"padding must be an int, {nd} ints, or {nd} (before, after) "
                                f"pairs; got {padding!r}")
        pairs = tuple(pairs)
    else:
        raise TypeError(f"padding must be an int, {nd} ints, {nd} (before, after) pairs, "
                        f"'same' or 'valid'; got {padding!r}")
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"padding must be non-negative; got {padding!r}")
    if any(v > _args.SIZE_LIMIT for pair in pairs for v in pair):
        raise ValueError(f"padding must be at most 2**32 = {_args.SIZE_LIMIT}; got {padding!r}")
    return pairs


def _plain(args):
    """True if every argument is an int, str, None, or a tuple of ints or of tuples of ints:
    arguments whose hash says everything the checks look at (1.0 == 1 and True == 1 hash
    alike but are refused). Called per convolution call, so written for speed."""
    for value in args:
        kind = type(value)
        if kind is tuple:
            for item in value:
                if type(item) is not int and not (type(item) is tuple
                                                  and all(type(v) is int for v in item)):
                    return False
        elif not (kind is int or kind is str or value is None):
            return False
    return True


@functools.lru_cache(maxsize=512)
def _checked_problem(*args):
    return _check_conv_problem(*args)


def _conv_problem(nd, x_shape, w_shape, bias_shape, stride, padding, dilation, groups,
                  padding_mode):
    """Check a convolution call and describe it as a ConvProblem; the checks of a call whose
    arguments are plain ints and tuples are remembered (a training loop repeats its shapes,
    and small layers pay the Python layer's time per call)."""
    args = (nd, x_shape, w_shape, bias_shape, stride, padding, dilation, groups, padding_mode)
    if _plain(args):
        return _checked_problem(*args)
    return _check_conv_problem(*args)


def _check_conv_problem(nd, x_shape, w_shape, bias_shape, stride, padding, dilation, groups,
                        padding_mode):
    dims = _args.SPATIAL_NAMES[nd]
    if len(x_shape) != nd + 2:
        raise ValueError(f"input must be {nd + 2}-d (N, C_in, {dims}) for conv{nd}d; got shape "
                         f"{tuple(x_shape)}")
    if len(w_shape) != nd + 2:
        raise ValueError(f"weight must be {nd + 2}-d (C_out, C_in/groups, {dims}) for "
                         f"conv{nd}d; got shape {tuple(w_shape)}")
    groups = _args.positive_int(groups, "groups")
    stride = _args.ntuple(stride, nd, "stride", minimum=1)
    dilation = _args.ntuple(dilation, nd, "dilation", minimum=1)
    _args.choice(padding_mode, "padding_mode", PADDING_MODES)
    batch, c_in = x_shape[:2]
    c_out, c_in_g = w_shape[:2]
    kernel = tuple(w_shape[2:])
    if c_in == 0 or any(n == 0 for n in x_shape[2:]):
        raise ValueError(f"input must have non-empty channel and spatial dimensions; got shape "
                         f"{tuple(x_shape)}")
    if c_out == 0 or c_in_g == 0 or any(k == 0 for k in kernel):
        raise ValueError(f"weight must have non-empty dimensions; got shape {tuple(w_shape)}")
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide both C_in={c_in} (input.shape[1]) and "
                         f"C_out={c_out} (weight.shape[0])")
    if c_in_g * groups != c_in:
        raise ValueError(f"weight.shape[1] must be C_in/groups = {c_in}/{groups} = "
                         f"{c_in // groups}; got weight shape {tuple(w_shape)}")
    if bias_shape is not None and tuple(bias_shape) != (c_out,):
        raise ValueError(f"bias must have shape (C_out,) = ({c_out},); got {tuple(bias_shape)}")
    pads = _normalize_padding(padding, nd, kernel, stride, dilation)
    in_size = tuple(x_shape[2:])
    if padding_mode == "reflect" and any(max(p) >= n for p, n in zip(pads, in_size)):
        raise ValueError(f"padding_mode='reflect' needs padding smaller than the input size; "
                         f"got padding {pads} for spatial size {in_size}")
    if padding_mode == "circular" and any(max(p) > n for p, n in zip(pads, in_size)):
        raise ValueError(f"padding_mode='circular' needs padding at most the input size; "
                         f"got padding {pads} for spatial size {in_size}")
    for axis, (n, (p0, p1), k, d) in enumerate(zip(in_size, pads, kernel, dilation)):
        if d * (k - 1) + 1 > n + p0 + p1:
            raise ValueError(f"kernel size {kernel} with dilation {dilation} is larger than the "
                             f"padded input {tuple(m + a + b for m, (a, b) in zip(in_size, pads))}"
                             f" along spatial axis {axis}")
    problem = ConvProblem(batch=int(batch), in_channels=int(c_in), out_channels=int(c_out),
                          groups=groups, in_size=in_size, kernel_size=kernel, stride=stride,
                          padding=pads, dilation=dilation, padding_mode=padding_mode)
    _args.check_output_size(problem.out_shape, np.float64,
                            "the input size, padding, stride and dilation")
    return problem


def _as_5d(a, nd):
    """View (N, C, *spatial) as (N, C, D, H, W) by inserting unit axes in front."""
    return a.reshape(a.shape[:2] + (1,) * (3 - nd) + a.shape[2:])


def _pad_input(x, problem):
    """Apply a non-zero padding mode as an explicit copy; zero padding stays implicit."""
    if problem.padding_mode == "zeros" or all(p == (0, 0) for p in problem.padding):
        return x, tuple(p[0] for p in problem.padding)
    widths = ((0, 0), (0, 0)) + problem.padding
    return np.pad(x, widths, mode=_NUMPY_PAD_MODE[problem.padding_mode]), (0,) * problem.ndim


# A call with more multiply-adds than this runs as several kernel calls (blocks of images, or
# of one image's output channels): a kernel runs without the GIL and cannot be interrupted,
# but Python raises KeyboardInterrupt between two calls, so Ctrl-C stops a long convolution
# within one piece. 2**33 multiply-adds take about 0.05-0.5 s on two cores; a smaller piece costs
# speed, because every piece unfolds its input again (2**28 made conv3d_video, 1.4e9
# multiply-adds in one image, run as 8 pieces and 3x slower). Pieces change no result: every
# output is one complete sum either way.
INTERRUPT_WORK = 1 << 33


def interruptible_pieces(problem):
    """(images, output channels) slices that cover `problem`, each of about INTERRUPT_WORK
    multiply-adds or less where the problem can be cut there (whole images first; within one
    image, whole groups, or blocks of 8 output channels for one group)."""
    batch, c_out = problem.batch, problem.out_channels
    if problem.multiply_adds <= INTERRUPT_WORK or batch == 0:
        return [(slice(0, batch), slice(0, c_out))]
    per_image = problem.multiply_adds // batch
    if per_image <= INTERRUPT_WORK:
        step = INTERRUPT_WORK // per_image
        return [(slice(n, min(n + step, batch)), slice(0, c_out)) for n in range(0, batch, step)]
    unit = problem.out_per_group if problem.groups > 1 else min(8, c_out)
    step = unit * max(1, INTERRUPT_WORK // (per_image * unit // c_out or 1))
    return [(slice(n, n + 1), slice(c, min(c + step, c_out)))
            for n in range(batch) for c in range(0, c_out, step)]


def run_conv(problem, x, w, bias, out, choice):
    """Compute `problem` into `out` with the algorithm in `choice` (arrays already validated)."""
    dtype = out.dtype
    x = np.ascontiguousarray(x, dtype=dtype)
    w = np.ascontiguousarray(w, dtype=dtype)
    bias = np.empty(0, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    if out.size == 0:
        return out
    x, pad_before = _pad_input(x, problem)
    if x.shape[2:] != problem.in_size:   # explicitly padded: the kernel sees a valid conv
        problem = ConvProblem(problem.batch, problem.in_channels, problem.out_channels,
                              problem.groups, x.shape[2:], problem.kernel_size, problem.stride,
                              ((0, 0),) * problem.ndim, problem.dilation)
    uses_blas = choice.algorithm in ("im2col", "gemm1x1")
    with _parallel.blas_guard() if uses_blas else contextlib.nullcontext():
        for images, channels in interruptible_pieces(problem):
            if channels == slice(0, problem.out_channels):
                piece, x_piece, w_piece, b_piece = problem, x[images], w, bias
            else:   # one image, a block of whole groups (or output channels of one group)
                groups = max(1, (channels.stop - channels.start) // problem.out_per_group) \
                    if problem.groups > 1 else 1
                first_group = channels.start // problem.out_per_group \
                    if problem.groups > 1 else 0
                c_in = groups * problem.in_per_group if problem.groups > 1 \
                    else problem.in_channels
                x_piece = x[images, first_group * problem.in_per_group:][:, :c_in]
                w_piece, b_piece = w[channels], bias[channels] if bias.size else bias
                piece = ConvProblem(1, c_in, channels.stop - channels.start, groups,
                                    problem.in_size, problem.kernel_size, problem.stride,
                                    problem.padding, problem.dilation)
            if piece.batch != problem.batch:
                piece = ConvProblem(x_piece.shape[0], piece.in_channels, piece.out_channels,
                                    piece.groups, piece.in_size, piece.kernel_size,
                                    piece.stride, piece.padding, piece.dilation)
            _conv_kernel(piece, x_piece, w_piece, b_piece, out[images, channels], choice,
                         pad_before)
    return out


def _conv_kernel(problem, x, w, bias, out, choice, pad_before):
    """One kernel call: `problem` on C-contiguous float arrays of its exact shapes."""
    nd = problem.ndim
    threads = _parallel.threads_for(problem.multiply_adds)
    stride, dilation, band, channel_panels, tile_shape, phase = _kernel_plan(
        problem, choice.algorithm, out.dtype.itemsize, threads)
    _conv.conv_forward(_as_5d(x, nd), _as_5d(w, nd), bias, _as_5d(out, nd), stride,
                       (0,) * (3 - nd) + pad_before, dilation, problem.groups,
                       choice.algorithm, band, threads, channel_panels, tile_shape, phase)


@functools.lru_cache(maxsize=512)
def _kernel_plan(problem, algorithm, itemsize, threads):
    """(stride, dilation, band, channel_panels, tile_shape, phase) of a kernel call: its 3-d
    stride and dilation (the kernels see every problem as 3-d) and how it cuts its work."""
    geometry = (forward_kernel_stride(problem), (1,) * (3 - problem.ndim) + problem.dilation)
    if algorithm != "packed":
        return geometry + (gemm_band_rows(problem, itemsize), 1, 0, False)
    double = itemsize == 8
    tile_shape = _conv.packed_tile_shape(problem.out_per_group, double)
    mr, nr = _conv.packed_tile_width(double, tile_shape)
    if packed_phase_grid(problem, itemsize, threads):
        return geometry + (phase_grid_tile(problem, itemsize, nr), 1, tile_shape, True)
    band, channel_panels = packed_partition(problem, itemsize, mr, nr)
    return geometry + (band, channel_panels, tile_shape, False)


def _convnd(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode,
          algorithm, out):
    return conv_call(nd, input, weight, bias, stride, padding, dilation, groups,
                     padding_mode, algorithm, out)[1]


def conv_call(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode,
              algorithm="auto", out=None):
    """(problem, output) of a checked conv{nd}d call: frameworks keep the ConvProblem for the
    backward pass (fastconv.conv_grad.input_grad_of, ...) instead of checking it again."""
    x = _args.as_array(input, "input")
    w = _args.as_array(weight, "weight")
    b = None if bias is None else _args.as_array(bias, "bias")
    dtype = _args.compute_dtype(input=x, weight=w, bias=b)
    problem = _conv_problem(nd, x.shape, w.shape, None if b is None else b.shape, stride,
                            padding, dilation, groups, padding_mode)
    choice = select(problem, algorithm)
    if out is not None:   # a fresh output shares memory with nothing
        out = _args.check_out(out, problem.out_shape, dtype)
        if _args.overlaps(out, x, w, b):
            raise ValueError("out must not share memory with input, weight or bias")
    else:
        out = np.empty(problem.out_shape, dtype)
    return problem, run_conv(problem, x, w, b, out, choice)


_CONV_DOC = """{nd}-d convolution (cross-correlation, as in PyTorch's ``conv{nd}d``).

    Parameters
    ----------
    input : array_like, shape (N, C_in, {dims})
    weight : array_like, shape (C_out, C_in / groups, {kdims})
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or tuple of {nd} ints
    padding : int, tuple of {nd} ints, tuple of {nd} (before, after) pairs, 'same' or 'valid'
        'same' keeps the spatial size (stride 1 only); an odd total pads one more after.
    groups : int
        Split channels into groups convolved separately; groups == C_in is depthwise.
    padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}
    algorithm : {{'auto', 'direct', 'im2col', 'gemm1x1', 'packed'}}
        'auto' asks :func:`fastconv.choose_algorithm`; a forced algorithm that cannot compute
        this call raises ValueError.
    out : ndarray, optional
        C-contiguous array of the output shape and dtype to write into.

    Returns
    -------
    ndarray, shape (N, C_out, {odims}), float32 or float64 (NumPy's promotion of the inputs;
    integers compute in float64).

    Examples
    --------
    {example}
    """


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto", out=None):
    return _convnd(1, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, out)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto", out=None):
    return _convnd(2, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, out)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto", out=None):
    return _convnd(3, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm, out)


conv1d.__doc__ = _CONV_DOC.format(
    nd=1, dims="L", kdims="kL", odims="L_out",
    example=""">>> import numpy as np, fastconv
    >>> x = np.arange(5, dtype=np.float32).reshape(1, 1, 5)
    >>> fastconv.conv1d(x, np.ones((1, 1, 2), np.float32))
    array([[[1., 3., 5., 7.]]], dtype=float32)""")
conv2d.__doc__ = _CONV_DOC.format(
    nd=2, dims="H, W", kdims="kH, kW", odims="H_out, W_out",
    example=""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 3, 8, 8), np.float32)
    >>> fastconv.conv2d(x, np.ones((4, 3, 3, 3), np.float32), padding=1).shape
    (1, 4, 8, 8)""")
conv3d.__doc__ = _CONV_DOC.format(
    nd=3, dims="D, H, W", kdims="kD, kH, kW", odims="D_out, H_out, W_out",
    example=""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 2, 4, 8, 8), np.float32)
    >>> fastconv.conv3d(x, np.ones((3, 2, 3, 3, 3), np.float32), stride=2).shape
    (1, 3, 1, 3, 3)""")


def _problem_from_call(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                       padding_mode="zeros"):
    x_shape = tuple(input) if isinstance(input, (tuple, list)) else _args.as_array(input, "input").shape
    w_shape = tuple(weight) if isinstance(weight, (tuple, list)) \
        else _args.as_array(weight, "weight").shape
    nd = len(w_shape) - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"weight must be 3-, 4- or 5-d (C_out, C_in/groups, *kernel); got shape "
                         f"{w_shape}")
    b_shape = None
    if bias is not None:
        b_shape = tuple(bias) if isinstance(bias, (tuple, list)) else _args.as_array(bias, "bias").shape
    return _conv_problem(nd, x_shape, w_shape, b_shape, stride, padding, dilation, groups,
                         padding_mode)


def choose_algorithm(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     padding_mode="zeros"):
    """The algorithm ``algorithm='auto'`` uses for this convolution call, and why.

    `input` and `weight` may be arrays or shapes; the dimensionality follows the weight.

    Returns
    -------
    Choice
        A named tuple ``(algorithm, reason)``.

    Examples
    --------
    >>> import fastconv
    >>> choice = fastconv.choose_algorithm((1, 144, 56, 56), (144, 1, 3, 3), padding=1,
    ...                                    groups=144)
    >>> choice.algorithm
    'direct'
    """
    return select(_problem_from_call(input, weight, bias, stride, padding, dilation, groups,
                                     padding_mode))


def output_shape(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1):
    """Shape of ``conv{1,2,3}d(input, weight, ...)``: per spatial axis
    ``(in + p_before + p_after - dilation * (k - 1) - 1) // stride + 1``.

    Raises the same errors as the convolution itself for shapes that do not fit.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.output_shape((1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    (1, 64, 112, 112)
    """
    return _problem_from_call(tuple(input_shape), tuple(weight_shape), None, stride, padding,
                              dilation, groups).out_shape


ReceptiveField = namedtuple("ReceptiveField", ["size", "jump", "start"])
ReceptiveField.__doc__ = """Receptive field of one output of a layer stack, per spatial axis.

size: input pixels one output sees; jump: input pixels between neighbouring outputs (the
product of strides); start: input index where the first output's field begins (negative when
it reaches into padding)."""


def receptive_field(layers):
    """Receptive field of a stack of convolution/pooling layers, applied first to last.

    Parameters
    ----------
    layers : sequence of dict
        Each with ``kernel_size`` and optionally ``stride`` (1), ``padding`` (0) and
        ``dilation`` (1): ints, or tuples with one value per spatial axis (padding may also
        give (before, after) pairs). Pooling layers are described the same way.

    Returns
    -------
    ReceptiveField of tuples, one value per axis.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.receptive_field([dict(kernel_size=3, padding=1)] * 2)
    ReceptiveField(size=(5,), jump=(1,), start=(-2,))
    >>> fastconv.receptive_field([dict(kernel_size=7, stride=2, padding=3),
    ...                           dict(kernel_size=3, stride=2, padding=1)]).size
    (11,)
    """
    if isinstance(layers, dict) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a sequence of dicts; got {type(layers).__name__}")
    layers = list(layers)
    if not layers:
        raise ValueError("layers must contain at least one layer; got an empty sequence")
    nd = None
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or "kernel_size" not in layer:
            raise TypeError(f"layers[{i}] must be a dict with a 'kernel_size'; got {layer!r}")
        unknown = set(layer) - {"kernel_size", "stride", "padding", "dilation"}
        if unknown:
            raise ValueError(f"layers[{i}] has unknown keys {sorted(unknown)}")
        k = layer["kernel_size"]
        n = len(k) if isinstance(k, (tuple, list)) else None
        nd = nd or n
    nd = nd or 1
    size, jump, start = [1] * nd, [1] * nd, [0] * nd
    for i, layer in enumerate(layers):
        k = _args.ntuple(layer["kernel_size"], nd, f"layers[{i}]['kernel_size']", minimum=1)
        s = _args.ntuple(layer.get("stride", 1), nd, f"layers[{i}]['stride']", minimum=1)
        d = _args.ntuple(layer.get("dilation", 1), nd, f"layers[{i}]['dilation']", minimum=1)
        pads = _normalize_padding(layer.get("padding", 0), nd, k, s, d)
        for a in range(nd):
            start[a] -= pads[a][0] * jump[a]
            size[a] += d[a] * (k[a] - 1) * jump[a]
            jump[a] *= s[a]
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))


# ---------------------------------------------------------------------------------------------
# SciPy-style convolve/correlate on plain 1-3 d arrays, computed by the same kernels.

_SIGNAL_MODES = ("full", "same", "valid")


def _signal_operands(in1, in2, mode):
    a = _args.as_array(in1, "in1")
    b = _args.as_array(in2, "in2")
    dtype = _args.compute_dtype(in1=a, in2=b)
    _args.choice(mode, "mode", _SIGNAL_MODES)
    if a.ndim != b.ndim:
        raise ValueError(f"in1 and in2 must have the same number of dimensions; got {a.ndim} "
                         f"and {b.ndim}")
    if a.ndim not in (1, 2, 3):
        raise ValueError(f"in1 and in2 must be 1-, 2- or 3-d; got {a.ndim}-d")
    if a.size == 0 or b.size == 0:
        raise ValueError(f"in1 and in2 must be non-empty; got shapes {a.shape} and {b.shape}")
    return a, b, dtype


def convolve(in1, in2, mode="full"):
    """N-d convolution of two arrays (the kernel flipped), like ``scipy.signal.convolve``.

    Parameters
    ----------
    in1, in2 : array_like, 1-, 2- or 3-d with the same number of dimensions
    mode : {'full', 'same', 'valid'}
        'full': every overlap; 'same': the size of `in1`, centred on 'full'; 'valid': only
        complete overlaps (the larger input comes first, as convolution commutes).

    Examples
    --------
    >>> import fastconv
    >>> fastconv.convolve([1.0, 2.0, 3.0], [0.0, 1.0, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    """
    a, b, dtype = _signal_operands(in1, in2, mode)
    if mode == "valid":
        if all(m >= n for m, n in zip(b.shape, a.shape)) and b.shape != a.shape:
            a, b = b, a
        elif not all(m >= n for m, n in zip(a.shape, b.shape)):
            raise ValueError(f"mode='valid' needs one input at least as large as the other in "
                             f"every dimension; got shapes {a.shape} and {b.shape}")
    return _correlate_flipped(a, np.flip(b), mode, dtype)


def correlate(in1, in2, mode="full"):
    """N-d cross-correlation of two arrays (no flip), like ``scipy.signal.correlate``.

    ``correlate(a, b, mode) == convolve(a, b[::-1, ...], mode)``, as in SciPy.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.correlate([1.0, 2.0, 3.0], [0.0, 1.0, 0.5], mode="valid")
    array([3.5])
    """
    a, b, dtype = _signal_operands(in1, in2, mode)
    return convolve(a, np.flip(b), mode)


def _correlate_flipped(a, kernel, mode, dtype):
    """Cross-correlate `a` with `kernel` (already flipped), padded so the result lines up with
    SciPy's convolution in `mode`."""
    if mode == "full":
        padding = tuple((k - 1, k - 1) for k in kernel.shape)
    elif mode == "same":
        padding = tuple((k // 2, (k - 1) // 2) for k in kernel.shape)
    else:
        padding = 0
    nd = a.ndim
    fn = (conv1d, conv2d, conv3d)[nd - 1]
    return fn(a.astype(dtype, copy=False)[None, None], kernel.astype(dtype, copy=False)[None, None],
              padding=padding)[0, 0]
