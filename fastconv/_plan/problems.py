"""Problems: every call of the convolution family checked once into a frozen description.

``conv_problem`` (convolution and its gradients), ``conv_transpose_problem`` and
``locally_connected_problem`` turn what a user passed into a :class:`ConvProblem`, or raise a
ValueError/TypeError that names the argument. Every padding fact is inside the problem
(per-side pairs and the padding mode), so nothing travels beside it: the dispatcher, the
operators and the front ends all read the same frozen value.
"""
import functools
from dataclasses import dataclass
from functools import cached_property
from math import prod

import numpy as np

from fastconv._plan import args as _args

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# np.pad's name for each non-zero padding mode (they are applied as an explicit copy)
NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@dataclass(frozen=True)
class ConvProblem:
    """A convolution call reduced to plain numbers: what the dispatcher and kernels need.

    A transposed convolution is described by the convolution it transposes (its input has the
    transposed call's output shape); a locally connected layer by the convolution with the
    same grid.
    """
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple          # spatial input size, one int per axis
    kernel_size: tuple
    stride: tuple
    padding: tuple          # (before, after) per axis
    dilation: tuple
    padding_mode: str = "zeros"

    @property
    def ndim(self):
        return len(self.in_size)

    @property
    def in_per_group(self):
        return self.in_channels // self.groups

    @property
    def out_per_group(self):
        return self.out_channels // self.groups

    def __hash__(self):
        # the key of every per-problem cache, hashed several times per call: computed once.
        # Numbers only (padding_mode is left out: equal problems still hash alike), so the
        # remembered hash is the same in every process a pickled problem goes to.
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = hash((self.batch, self.in_channels, self.out_channels, self.groups,
                          self.in_size, self.kernel_size, self.stride, self.padding,
                          self.dilation))
            object.__setattr__(self, "_hash", value)
            return value

    @cached_property   # read many times per call by the dispatcher (frozen: never stale)
    def out_size(self):
        return tuple((n + p0 + p1 - d * (k - 1) - 1) // s + 1
                     for n, k, s, (p0, p1), d in zip(self.in_size, self.kernel_size, self.stride,
                                                      self.padding, self.dilation))

    @property
    def in_shape(self):
        return (self.batch, self.in_channels) + tuple(self.in_size)

    @property
    def weight_shape(self):
        return (self.out_channels, self.in_per_group) + tuple(self.kernel_size)

    @property
    def out_shape(self):
        return (self.batch, self.out_channels) + self.out_size

    @cached_property
    def gemm_depth(self):
        """K of the GEMM: the taps one output sums over."""
        return self.in_per_group * prod(self.kernel_size)

    @cached_property
    def multiply_adds(self):
        return self.batch * self.out_channels * prod(self.out_size) * self.gemm_depth

    @cached_property
    def pointwise(self):
        return (all(k == 1 for k in self.kernel_size) and all(s == 1 for s in self.stride)
                and all(p == (0, 0) for p in self.padding))

    @cached_property
    def explicitly_padded(self):
        """The zero-padded problem the kernels see: a non-zero padding mode is applied as a
        copy of the input (its padding becomes part of the input), zero padding stays
        implicit."""
        if self.padding_mode == "zeros" or all(p == (0, 0) for p in self.padding):
            return self
        size = tuple(n + a + b for n, (a, b) in zip(self.in_size, self.padding))
        return ConvProblem(self.batch, self.in_channels, self.out_channels, self.groups,
                           size, self.kernel_size, self.stride, ((0, 0),) * self.ndim,
                           self.dilation)

    def with_batch(self, batch):
        """The same problem on `batch` images (a piece of a call, or a slice of a batch)."""
        return ConvProblem(batch, self.in_channels, self.out_channels, self.groups,
                           self.in_size, self.kernel_size, self.stride, self.padding,
                           self.dilation, self.padding_mode)


def normalize_padding(padding, nd, kernel_size, stride, dilation):
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
def _remembered_conv_problem(*args):
    return _check_conv_problem(*args)


def conv_problem(nd, x_shape, w_shape, bias_shape=None, stride=1, padding=0, dilation=1,
                 groups=1, padding_mode="zeros"):
    """Check a conv{nd}d call given by its shapes and describe it as a ConvProblem; the checks
    of a call whose arguments are plain ints and tuples are remembered (a training loop
    repeats its shapes, and small layers pay the Python layer's time per call)."""
    args = (nd, x_shape, w_shape, bias_shape, stride, padding, dilation, groups, padding_mode)
    if _plain(args):
        return _remembered_conv_problem(*args)
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
    pads = normalize_padding(padding, nd, kernel, stride, dilation)
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


def conv_transpose_problem(nd, x_shape, w_shape, bias_shape=None, stride=1, padding=0,
                           output_padding=0, groups=1, dilation=1):
    """Check a conv_transpose{nd}d call given by its shapes; describe it as the ConvProblem of
    the convolution it transposes (whose input has this call's output shape, and whose output
    this call's input shape)."""
    dims = _args.SPATIAL_NAMES[nd]
    name = f"conv_transpose{nd}d"
    if len(x_shape) != nd + 2:
        raise ValueError(f"input must be {nd + 2}-d (N, C_in, {dims}) for {name}; got shape "
                         f"{tuple(x_shape)}")
    if len(w_shape) != nd + 2:
        raise ValueError(f"weight must be {nd + 2}-d (C_in, C_out/groups, {dims}) for {name}; "
                         f"got shape {tuple(w_shape)}")
    groups = _args.positive_int(groups, "groups")
    stride = _args.ntuple(stride, nd, "stride", minimum=1)
    dilation = _args.ntuple(dilation, nd, "dilation", minimum=1)
    output_padding = _args.ntuple(output_padding, nd, "output_padding", minimum=0)
    if isinstance(padding, str):
        raise ValueError(f"padding of {name} must be an int, {nd} ints or {nd} (before, after) "
                         f"pairs (string padding is for convolution only); got {padding!r}")
    batch, c_in = x_shape[:2]
    w_in, c_out_g = w_shape[:2]
    kernel = tuple(w_shape[2:])
    pads = normalize_padding(padding, nd, kernel, stride, dilation)
    if c_in == 0 or any(n == 0 for n in x_shape[2:]):
        raise ValueError(f"input must have non-empty channel and spatial dimensions; got shape "
                         f"{tuple(x_shape)}")
    if w_in == 0 or c_out_g == 0 or any(k == 0 for k in kernel):
        raise ValueError(f"weight must have non-empty dimensions; got shape {tuple(w_shape)}")
    if w_in != c_in:
        raise ValueError(f"weight.shape[0] must be C_in = input.shape[1] = {c_in}; got weight "
                         f"shape {tuple(w_shape)}")
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide C_in={c_in} (input.shape[1])")
    c_out = c_out_g * groups
    if bias_shape is not None and tuple(bias_shape) != (c_out,):
        raise ValueError(f"bias must have shape (C_out,) = ({c_out},) (weight.shape[1] x "
                         f"groups); got {tuple(bias_shape)}")
    for op, s, d in zip(output_padding, stride, dilation):
        if op >= s and op >= d:
            raise ValueError(f"output_padding must be smaller than stride or dilation (as in "
                             f"PyTorch); got output_padding {output_padding}, stride {stride}, "
                             f"dilation {dilation}")
    out_size = tuple((n - 1) * s - p0 - p1 + d * (k - 1) + op + 1
                     for n, s, (p0, p1), d, k, op in zip(x_shape[2:], stride, pads, dilation,
                                                          kernel, output_padding))
    if any(n < 1 for n in out_size):
        raise ValueError(f"padding {padding!r} is too large: the output size would be "
                         f"{out_size} for input shape {tuple(x_shape)}, kernel {kernel}, "
                         f"stride {stride}, dilation {dilation}")
    _args.check_output_size((batch, c_out_g * groups) + out_size, np.float64,
                            "the input size, stride, padding, output_padding and dilation")
    # The convolution with (p0, p1 - output_padding) maps out_size back to exactly the input
    # size; only its `before` padding reaches the kernels.
    conv_pads = tuple((p0, p1 - op) for (p0, p1), op in zip(pads, output_padding))
    return ConvProblem(batch=int(batch), in_channels=int(c_out), out_channels=int(c_in),
                       groups=groups, in_size=out_size, kernel_size=kernel, stride=stride,
                       padding=conv_pads, dilation=dilation)


def locally_connected_problem(nd, x_shape, w_shape, bias_shape=None, stride=1, padding=0,
                              dilation=1):
    """Check a locally_connected{nd}d call given by its shapes; return the ConvProblem of the
    convolution with the same grid (one filter bank per output position)."""
    dims = _args.SPATIAL_NAMES[nd]
    kdims = ", ".join("k" + d for d in dims.split(", "))
    odims = ", ".join(d + "_out" for d in dims.split(", "))
    layout = f"({odims}, C_out, C_in, {kdims})"
    if len(w_shape) != 2 * nd + 2:
        raise ValueError(f"weight must be {2 * nd + 2}-d {layout} for locally_connected{nd}d; "
                         f"got shape {tuple(w_shape)}")
    if len(x_shape) != nd + 2:
        raise ValueError(f"input must be {nd + 2}-d (N, C_in, {dims}) for "
                         f"locally_connected{nd}d; got shape {tuple(x_shape)}")
    c_out, c_in = w_shape[nd], w_shape[nd + 1]
    if c_in != x_shape[1]:
        raise ValueError(f"weight.shape[{nd + 1}] must be C_in = input.shape[1] = {x_shape[1]}; "
                         f"got weight shape {tuple(w_shape)}")
    conv_weight_shape = (c_out, c_in) + tuple(w_shape[nd + 2:])
    problem = conv_problem(nd, x_shape, conv_weight_shape, None, stride, padding, dilation, 1,
                           "zeros")
    if tuple(w_shape[:nd]) != problem.out_size:
        raise ValueError(f"weight.shape[:{nd}] must be the output grid ({odims}) = "
                         f"{problem.out_size} for this input, kernel, stride, padding and "
                         f"dilation; got weight shape {tuple(w_shape)}")
    if bias_shape is not None and tuple(bias_shape) != (c_out,) + problem.out_size:
        raise ValueError(f"bias must have shape (C_out, {odims}) = "
                         f"{(c_out,) + problem.out_size}; got {tuple(bias_shape)}")
    return problem


def problem_from_call(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                      padding_mode="zeros"):
    """The ConvProblem of a convolution call whose input, weight and bias are arrays or
    shapes; the dimensionality follows the weight."""
    x_shape = _shape_of(input, "input")
    w_shape = _shape_of(weight, "weight")
    nd = len(w_shape) - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"weight must be 3-, 4- or 5-d (C_out, C_in/groups, *kernel); got shape "
                         f"{w_shape}")
    b_shape = None if bias is None else _shape_of(bias, "bias")
    return conv_problem(nd, x_shape, w_shape, b_shape, stride, padding, dilation, groups,
                        padding_mode)


def _shape_of(value, name):
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return _args.as_array(value, name).shape


def check_grad_output(grad_output, expected_shape, forward):
    """Raise ValueError unless the output gradient has the forward output's shape."""
    if grad_output.shape != tuple(expected_shape):
        raise ValueError(f"grad_output must have the shape of the {forward} output, "
                         f"{tuple(expected_shape)}; got {grad_output.shape}")
