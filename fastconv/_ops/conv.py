"""Convolution in 1, 2 and 3 dimensions with PyTorch's semantics.

``conv_call`` checks a call into a ConvProblem, asks the dispatcher for its Plan and runs it:
``run_conv`` applies a non-zero padding mode as an explicit copy, then calls the planned
kernel once per piece (``forward_kernel`` is the one switch from a Kernel to its compiled
entry point).
"""
import contextlib
import functools
from math import prod

import numpy as np

from fastconv._kernels import (conv_channels_last, conv_direct, conv_im2col, conv_packed,
                               conv_phase_grid, conv_subpixel, conv_winograd)
from fastconv._ops import conv_fft
from fastconv._ops.docs import document
from fastconv._plan import args as _args
from fastconv._plan.tiling import phase_taps
from fastconv._plan.dispatch import (Kernel, autotune_candidates, autotune_key,
                                     plan_channels_last, plan_conv)
from fastconv._plan.problems import NUMPY_PAD_MODE, conv_problem
from fastconv._runtime import autotune as _autotune, threads as _threads
from fastconv._runtime.memory import is_cold, pooled
from fastconv._runtime.precision import denormals_flushed
from fastconv._runtime.weight_cache import cached_transform, scratch

__all__ = ["conv1d", "conv2d", "conv3d"]


def as_5d(a, nd):
    """View (N, C, *spatial) as (N, C, D, H, W) by inserting unit axes in front."""
    return a.reshape(a.shape[:2] + (1,) * (3 - nd) + a.shape[2:])


def pad_input(x, problem):
    """Apply a non-zero padding mode as an explicit copy; zero padding stays implicit."""
    if problem.explicitly_padded is problem:
        return x
    widths = ((0, 0), (0, 0)) + problem.padding
    return np.pad(x, widths, mode=NUMPY_PAD_MODE[problem.padding_mode])


def adjoint_packed_weights(plan, w5, groups):
    """A 1x1 layer's 5-d weights transposed into the panels of plan's register tile (its
    input gradient's A operand), remembered for the next call with the same weights. The
    forward kernels need no such copy: they read each filter where it lies (a row of the
    product), so an inference loop neither packs nor checks its weights."""
    tile = plan.tile_shape
    size = conv_packed.layer_weights_size(w5.shape, groups, tile, True)

    def fill(weight, out):
        conv_packed.pack_layer_weights(weight, groups, tile, True, out, plan.threads)
    return cached_transform(("packed", groups, tile, True), w5, size, fill)


def contiguous_weight(w, dtype=None):
    """w (C_out, C_in, *kernel) C-contiguous in `dtype` (w's own by default), w itself where
    it is: a channels-last weight (memory (C_out, *kernel, C_in), as a channels-last layer's)
    reordered by the tiled transpose, not numpy's copy of the transposed view (1.5-4 GB/s:
    the Winograd weights of a channels-last network's training step waited on it)."""
    dtype = w.dtype if dtype is None else np.dtype(dtype)
    if w.flags.c_contiguous or w.ndim < 3 or w.dtype != dtype \
            or dtype not in (np.float32, np.float64):
        return np.ascontiguousarray(w, dtype)
    channels_inner = np.moveaxis(w, 1, -1)
    if not channels_inner.flags.c_contiguous:
        return np.ascontiguousarray(w)
    c_out, c_in, taps = w.shape[0], w.shape[1], prod(w.shape[2:])
    out = np.empty(w.shape, dtype)
    conv_channels_last.transpose_images(channels_inner.reshape(c_out, taps, c_in),
                                        out.reshape(c_out, c_in, taps), _threads.team_size())
    return out


def forward_kernel(plan, problem, x, w, bias, out, remember_weights=True, adjoint_of=None):
    """Run `plan` (one forward kernel) for the zero-padded `problem` on C-contiguous arrays of
    its exact shapes. `remember_weights`: keep transformed weights for the next call with
    the same weights (False for weights made for this call only). `adjoint_of` (Winograd
    only): this convolution is the stride-1 input gradient of the one by adjoint_of (5-d),
    whose reversed, transposed weights are transformed straight from it; `w` then only
    gives their shape (its values are never read)."""
    nd, kernel = problem.ndim, plan.kernel
    args = (kernel, as_5d(x, nd), as_5d(w, nd), bias, as_5d(out, nd)) + plan.geometry \
        + (problem.groups,)
    if kernel in (Kernel.CONV_DIRECT_ROWS, Kernel.CONV_DIRECT_PLANES):
        conv_direct.conv_forward(*args, plan.band_rows, plan.planes_per_item, plan.threads)
    elif kernel in (Kernel.CONV_PACKED_SEGMENTS, Kernel.CONV_PACKED_STACKED):
        # the weights (C-contiguous here) are read where they lie
        conv_packed.conv_forward(*args, plan.tile_panels, plan.channel_panels, plan.tile_shape,
                                 plan.threads)
    elif kernel == Kernel.CONV_PACKED_PHASE:
        conv_phase_grid.conv_forward(*args, plan.tile_panels, plan.tile_shape, plan.threads)
    elif kernel == Kernel.CONV_WINOGRAD:   # x and out may be channels-last (strided)
        w5, groups = args[2], problem.groups
        size = conv_winograd.weights_size(w5.shape[0], w5.shape[1], groups, w5.shape[2:])

        def fill(weight, out):   # a channels-last weight is keyed where it lies
            conv_winograd.transform_weights(contiguous_weight(weight), groups, out,
                                            plan.threads)
        # with plan.fused_weights, weights not kept transformed (the reversed ones of an
        # input gradient, a trained layer's, or weights for this call only) are transformed
        # as the GEMM step goes, read from `source` (C-contiguous)
        u, source = None, None
        if adjoint_of is not None:
            source = contiguous_weight(adjoint_of)
            if not plan.fused_weights:
                u = scratch(size, w5.dtype)
                conv_winograd.transform_adjoint_weights(source, groups, u, plan.threads)
        elif remember_weights:
            u = cached_transform(("winograd", groups), w5, size, fill,
                                 caller_can_transform=plan.fused_weights)
        elif not plan.fused_weights:
            u = scratch(size, w5.dtype)
            fill(w5, u)
        if u is not None:
            status = conv_winograd.conv_forward(*args, plan.tile_panels,
                                                plan.per_thread_blocks, plan.threads, u)
        else:
            status = conv_winograd.conv_forward(
                *args, plan.tile_panels, plan.per_thread_blocks, plan.threads,
                np.empty(0, w5.dtype),
                fused_weights=contiguous_weight(w5) if source is None else source,
                adjoint=adjoint_of is not None)
        if status == conv_winograd.NONFINITE:
            # an inf or NaN spread over whole tiles: the direct sums' answer, exactly
            if adjoint_of is not None:
                w = np.empty(w.shape, w.dtype)
                conv_subpixel.adjoint_phase_weight(contiguous_weight(adjoint_of),
                                                   as_5d(w, nd), groups,
                                                   (0, 0, 0), (1, 1, 1))
            exact = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
            run_conv(problem, plan_conv(problem, out.dtype, "packed"), x, w, bias, exact,
                     remember_weights)
            if exact is not out:
                out[...] = exact
    elif kernel == Kernel.CONV_FFT:
        if not conv_fft.conv_forward(problem, x, w, bias, out, plan.threads, remember_weights):
            # an inf or NaN spread over whole planes: the direct sums' answer, exactly
            run_conv(problem, plan_conv(problem, out.dtype, "packed"), x, w, bias, out,
                     remember_weights)
    else:   # CONV_IM2COL_BLAS, CONV_GEMM1X1_BLAS
        conv_im2col.conv_forward(*args, plan.band_rows, plan.threads)


def run_conv(problem, plan, x, w, bias, out, remember_weights=True, adjoint_of=None):
    """Compute `problem` into `out` by `plan` (arrays already validated); see forward_kernel
    for `remember_weights` and `adjoint_of` (a plan in one piece only)."""
    dtype = out.dtype
    x = np.ascontiguousarray(x, dtype=dtype)
    w = contiguous_weight(w, dtype)
    bias = np.empty(0, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    if out.size == 0:
        return out
    if adjoint_of is not None and plan.pieces:
        raise ValueError("run_conv: adjoint_of needs a plan in one piece")
    x = pad_input(x, problem)
    padded = problem.explicitly_padded
    # the FFT's transforms run on scipy.fft's threads: an OpenMP team woken to flush
    # denormals would spin beside them (a 31x31 filter on 1024x1024: 9.3 -> 24 ms)
    team = 1 if plan.kernel == Kernel.CONV_FFT else plan.threads
    with denormals_flushed(team), \
            _threads.blas_guard() if plan.uses_blas else contextlib.nullcontext():
        if not plan.pieces:
            forward_kernel(plan, padded, x, w, bias, out, remember_weights, adjoint_of)
        # a long call runs as pieces: Python raises KeyboardInterrupt between two of them
        for images, in_channels, channels, piece, piece_plan in plan.pieces:
            b_piece = bias[channels] if bias.size else bias
            forward_kernel(piece_plan, piece, x[images, in_channels], w[channels], b_piece,
                           out[images, channels], remember_weights)
    return out


# The channels-last GEMM's work items: a tile of pixels whose packed patches (tile x K) take
# about this many bytes (in L2 beside the weights' K block), and enough items for the threads
# (output channels split into chunks when the pixels are few: 8 x 7 x 7 pixels by 2048
# channels is 4 tiles).
_NHWC_TILE_BYTES = 192 << 10
_NHWC_TILE_PANELS = (2, 32)
_NHWC_ITEMS_PER_THREAD = 4
# ... but a call of one tile (see _nhwc_gemm_tiling) packs its patches once per column chunk:
# 2 chunks a thread (Intel Xeon, 2 threads, batch 1, ms warm, 1 / 2 / 4 chunks a thread):
# 512 -> 512 3x3 on 7x7 1.38 / 1.44 / 1.52, stride 2 on 14x14 1.50 / 1.45 / 1.52, 256 -> 256
# on 14x14 0.97 / 0.72 / 0.68, stride 2 on 28x28 1.10 / 1.25 / 1.60 (in tiles as before:
# 1.96, 2.24, 0.94, 1.22)
_NHWC_ONE_TILE_CHUNKS = 2
# Panels of pixels whose taps all lie inside the input are read where they lie, not packed:
# the same sums, and packing them cost more than the product on few channels (Zen 3, batch
# 8: the 3 -> 32 3x3 stride-2 stem 3.8-4.1 -> 2.3-2.7 ms, 32 -> 16 1x1 on 112x112 1.9-2.3
# -> 1.0-1.3); level on wide layers.
_NHWC_READ_IN_PLACE = True
# A forward call of at most this many tiles of pixels (a batch-1 layer on a small plane)
# transposes a channels-last weight's rows into the GEMM's panels block by block as it goes
# (conv_gemm_nhwc's weight_rows), reading the weight once: kept panels are read and checked
# against a kept copy of the weight, three reads, and inside a network each layer's weight
# comes from beyond L2.
_NHWC_PACK_PER_CALL_TILES = 2
# Channels-last GEMM outputs of at least this many bytes are written by streaming stores
# (each tile through a buffer in cache): past the last-level cache a plain store first reads
# the line it writes. Zen 4 (32 MiB L3), 2 threads, ms, plain -> streamed: 16 -> 96 channels
# on 112x112, batch 8 (38.5 MB) 3.11 -> 2.87, 64 -> 256 on 56x56 (25.7 MB) 5.08 -> 4.74; a
# loss below (14.5 MB: 1.19 -> 1.34, 6.4 MB: 0.77 -> 0.96) when the output's block was
# just freed and is still cached. So are smaller outputs, from _NHWC_STREAM_MIN_BYTES, whose
# block is cold (memory.is_cold: a forward pass during training).
_NHWC_STREAM_BYTES = 24 << 20
_NHWC_STREAM_MIN_BYTES = 2 << 20


def nhwc_gemm_tiling(problem, dtype, threads):
    """(register tile shape, tile_panels, column_chunks, NR, tiles of pixels) of the
    channels-last GEMM."""
    return _nhwc_gemm_tiling(problem, np.dtype(dtype), threads)


@functools.lru_cache(maxsize=512)   # per call, and a network repeats its layers' problems
def _nhwc_gemm_tiling(problem, dtype, threads):
    shape, mr, nr = nhwc_tile_shape(problem.out_channels, dtype)
    k = problem.in_channels * prod(problem.kernel_size)
    low, high = _NHWC_TILE_PANELS
    panels = int(max(low, min(high, _NHWC_TILE_BYTES // (mr * k * np.dtype(dtype).itemsize))))
    pixels = problem.batch * prod(problem.out_shape[2:])
    column_panels = -(-problem.out_channels // nr)
    if problem.out_channels >= pixels and -(-pixels // mr) <= high:
        # more weight than patches (a batch-1 layer on a small plane): one tile of every
        # pixel reads the weight once (packing it as it goes: weight_rows), where tiles of
        # _NHWC_TILE_BYTES each read all of it. Intel Xeon, 2 threads, batch 1, ms, warm /
        # cold caches: 512 -> 512 3x3 on 7x7 1.96-2.35 / 2.10 -> 1.44 / 1.66 (PyTorch 1.72
        # / 1.77)
        panels = -(-pixels // mr)
        return shape, panels, max(1, min(column_panels, _NHWC_ONE_TILE_CHUNKS * threads)), \
            nr, 1
    tiles = -(-pixels // (panels * mr))
    chunks = max(1, min(column_panels, -(-_NHWC_ITEMS_PER_THREAD * threads // tiles)))
    return shape, panels, chunks, nr, tiles


@functools.lru_cache(maxsize=512)
def nhwc_tile_shape(columns, dtype, rows=None):
    """(register tile shape, MR, NR) for a channels-last GEMM whose B side has `columns` and
    whose A side `rows`: the shape that computes the fewest vector multiply-adds
    (tile_cost). Rows None: the pixels, too many to round, and whole panels of NR counted
    (the rule the forward kernels were tuned with), but for the mixed tile."""
    double = np.dtype(dtype) == np.float64
    shapes = (0, 1, 2) if _mixed_tile(dtype) else (0, 1)
    cost = {shape: tile_cost(rows, columns, shape, dtype) for shape in shapes}
    shape = min(shapes, key=lambda s: (cost[s], s))
    return (shape,) + conv_channels_last.tile_columns(double, shape)


def vector_lanes(dtype):
    """Elements of one vector register of the micro-kernels in `dtype` (the narrow tile is
    two vectors wide)."""
    return conv_channels_last.tile_columns(np.dtype(dtype) == np.float64, 1)[1] // 2


def _mixed_tile(dtype):
    """Whether the mixed tile (a vector and a half one a row, gemm_microkernel.h) is offered:
    with 512-bit vectors, where a half vector's multiply-add costs half a whole one's
    (Zen 4) or as much (two 512-bit units: then it costs what the narrow tile does)."""
    return vector_lanes(dtype) * np.dtype(dtype).itemsize == 64


def tile_cost(rows, columns, shape, dtype):
    """Vector multiply-adds of register tile `shape` per unit of depth of a rows x columns
    product: rows rounded up to whole tiles of MR, times each column panel's vectors (the
    tails compute only the vectors a last panel needs; the mixed tile's half vector counts
    half), about 8% more for the 12-row shapes' broadcasts. The mixed tile takes more
    columns than a vector and one panel at most: 17-24 columns (float32) cost 1.5 vectors a row, not the narrow tile's 2 (Zen 4,
    2 threads, ms, narrow -> mixed: 1x1 from 144 to 24 channels on 56x56, batch 8,
    1.74-2.30 -> 0.95, its input gradient 1.78 -> 0.93). A weight gradient's rows are a
    layer's channels: 16 of them take two 8-row tiles, not two 12-row ones (32 -> 16 on
    112x112: 0.75-0.83 -> 0.53)."""
    double = np.dtype(dtype) == np.float64
    mr, nr = conv_channels_last.tile_columns(double, shape)
    vec = vector_lanes(dtype)
    if shape == 2:
        if not vec < columns <= nr:
            return float("inf")
        vectors = 1.5
    elif rows is None:
        vectors = -(-columns // nr) * nr / vec
    else:
        whole, rest = divmod(columns, nr)
        vectors = whole * (nr // vec) + -(-rest // vec)
    padded_rows = 1 if rows is None else -(-rows // mr) * mr
    return padded_rows * vectors * (1.0 if shape == 0 else 1.08)


def _pack_tap_panels(weight, taps, out, nr):
    """out := the B panels (NR columns each, K x NR contiguous, zero past C_in) of the
    (len(taps) * C_out, C_in) matrix W[(t, o), c] = weight[o, c, taps[t]]."""
    conv_channels_last.pack_tap_panels(weight, np.asarray(taps, np.intp).reshape(-1, 2),
                                       out.reshape(-1, nr), _threads.team_size())


def nhwc_weight_panels(w, nr, dtype, adjoint=False):
    """The channels-last GEMM's B panels of w (C_out, C_in, KH, KW): W = the (KH * KW * C_in,
    C_out) matrix in (kh, kw, c) row order, cut into panels of NR columns, each K x NR
    contiguous, zero past C_out; with `adjoint`, those of the input gradient's convolution
    (w's reversed, transposed weights: W[(kh, kw, o), c] = w[o, c, KH - 1 - kh, KW - 1 - kw]).
    Remembered while w's memory holds the same values (a channels-last layer's weight is
    itself channels-last, one dense block)."""
    columns = w.shape[1] if adjoint else w.shape[0]
    k = w.size // columns if columns else 0

    def fill(weight, out):
        if adjoint:
            # (kh, kw, o) x c: every tap, reversed
            kh, kw = weight.shape[2:]
            taps = [(kh - 1 - i, kw - 1 - j) for i in range(kh) for j in range(kw)]
            _pack_tap_panels(weight, taps, out, nr)
        else:
            # each output channel's (kh, kw, c) weights: a channels-last weight's own rows
            # (a channels-first one's reordered within each filter), transposed into panels
            # by a blocked kernel (numpy's copy of W's transposed view read across filters,
            # 1.5 GB/s: 6 ms for 512 x 512 x 3 x 3, repacked on every training step)
            rows = np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(columns, k)
            conv_channels_last.pack_panels(rows, out.reshape(-1, nr), _threads.team_size())
    w = w if w.dtype == dtype else w.astype(dtype)
    panels_flat = cached_transform(("nhwc_panels", nr, adjoint), w, -(-columns // nr) * k * nr,
                                   fill)
    return panels_flat.reshape(-1, nr)


def nhwc_phase_panels(w, nr, dtype, stride):
    """{(rh, rw): B panels} of the stride phases of a strided layer's input gradient: phase
    (rh, rw) is the stride-1 convolution of the output gradient by w's taps phase_taps
    reach, reversed and transposed (W[(jh, jw, o), c] = w[o, c, taps_h[jh], taps_w[jw]]).
    Phases no tap reaches are left out. Remembered like nhwc_weight_panels (one entry for
    all the phases)."""
    c_out, c_in, kh, kw = w.shape
    taps_h, taps_w = phase_taps(kh, stride[0]), phase_taps(kw, stride[1])
    phases = [(rh, rw) for rh in range(stride[0]) for rw in range(stride[1])
              if taps_h[rh] and taps_w[rw]]
    panels = -(-c_in // nr)
    sizes = [len(taps_h[rh]) * len(taps_w[rw]) * c_out * panels * nr for rh, rw in phases]
    starts = np.cumsum([0] + sizes)

    def fill(weight, out):
        for (rh, rw), start, size in zip(phases, starts, sizes):
            _pack_tap_panels(weight, [(i, j) for i in taps_h[rh] for j in taps_w[rw]],
                             out[start:start + size], nr)
    w = w if w.dtype == dtype else w.astype(dtype)
    flat = cached_transform(("nhwc_phase_panels", nr, stride), w, int(starts[-1]), fill)
    return {phase: flat[start:start + size].reshape(-1, nr)
            for phase, start, size in zip(phases, starts, sizes)}


def run_conv_channels_last(problem, plan, x, w, bias, dtype, adjoint_of=None):
    """The channels-last kernels: x (N, C, H, W) with channels-last memory; returns the output
    (N, C_out, OH, OW), channels-last too. `adjoint_of`: this convolution is the stride-1
    input gradient of the one by adjoint_of, whose reversed, transposed weights the kernels
    take straight from it (w then only gives their shape)."""
    x_nhwc = x.transpose(0, 2, 3, 1)
    if x_nhwc.dtype != dtype:
        x_nhwc = x_nhwc.astype(dtype)
    oh, ow = problem.out_shape[2:]
    out = np.empty((problem.batch, oh, ow, problem.out_channels), dtype)
    bias = np.empty(0, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    geometry = (problem.kernel_size, problem.stride, tuple(p[0] for p in problem.padding),
                problem.dilation)
    with denormals_flushed(plan.threads):
        _channels_last_kernel(problem, plan, x_nhwc, w, bias, out, geometry, dtype,
                              adjoint_of)
    return out.transpose(0, 3, 1, 2)


def _streams(out):
    """Whether the channels-last GEMM writes `out` with streaming stores."""
    return out.nbytes >= _NHWC_STREAM_BYTES \
        or (out.nbytes >= _NHWC_STREAM_MIN_BYTES and is_cold(out))


def _channels_last_kernel(problem, plan, x_nhwc, w, bias, out, geometry, dtype, adjoint_of):
    c_out = problem.out_channels
    kh, kw = problem.kernel_size
    if plan.algorithm == "channels_last_winograd":
        # the channels-first kernel on channels-last views: it reads and writes by strides
        forward_kernel(plan.strided, problem, x_nhwc.transpose(0, 3, 1, 2),
                       w.astype(dtype, copy=False), bias, out.transpose(0, 3, 1, 2),
                       adjoint_of=None if adjoint_of is None
                       else adjoint_of.astype(dtype, copy=False)[:, :, None])
    elif plan.algorithm == "channels_last_gemm":
        shape, panels, chunks, nr, tiles = nhwc_gemm_tiling(problem, dtype, plan.threads)
        weight_rows = adjoint_of is None and _packs_per_call(w, dtype, tiles)
        if weight_rows:
            weights = w.transpose(0, 2, 3, 1).reshape(c_out, -1)     # a view: W^T's rows
        elif adjoint_of is None:
            weights = nhwc_weight_panels(w, nr, dtype)
        else:
            weights = nhwc_weight_panels(adjoint_of, nr, dtype, adjoint=True)
        conv_channels_last.conv_gemm_nhwc(x_nhwc, weights, bias, out, *geometry, shape, panels,
                                          chunks, _NHWC_READ_IN_PLACE, plan.threads,
                                          _streams(out), weight_rows)
    else:
        w_taps = np.ascontiguousarray(w.reshape(c_out, kh * kw).T, dtype=dtype)
        conv_channels_last.conv_depthwise_nhwc(x_nhwc, w_taps, bias, out, *geometry,
                                               plan.threads)


def _packs_per_call(w, dtype, tiles):
    """Whether the channels-last GEMM takes w's rows and packs them as it goes: a weight that
    is one channels-last block of `dtype`, and a call of few `tiles` of pixels."""
    return (w.dtype == dtype and w.transpose(0, 2, 3, 1).flags.c_contiguous
            and tiles <= _NHWC_PACK_PER_CALL_TILES)


def autotune_forward(problem, dtype, x, w, b):
    """Time every candidate family on this call's arrays and remember the fastest, unless a
    winner for the problem is remembered already (fastconv/_runtime/autotune.py)."""
    name = autotune_key("forward", problem, dtype)
    if _autotune.lookup(name) is not None:
        return
    trial = np.empty(problem.out_shape, dtype)
    times = {}
    for family in autotune_candidates(problem):
        plan = plan_conv(problem, dtype, family)
        times[family] = _autotune.measure(lambda: run_conv(problem, plan, x, w, b, trial))
    _autotune.remember(name, times)


@pooled
def conv_call(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode,
              algorithm="auto", out=None):
    """(problem, output) of a checked conv{nd}d call: frameworks keep the ConvProblem for the
    backward pass (the gradient operators take it) instead of checking it again."""
    x = _args.as_array(input, "input")
    w = _args.as_array(weight, "weight")
    b = None if bias is None else _args.as_array(bias, "bias")
    dtype = _args.compute_dtype(input=x, weight=w, bias=b)
    problem = conv_problem(nd, x.shape, w.shape, None if b is None else b.shape, stride,
                           padding, dilation, groups, padding_mode)
    if out is None and _args.is_channels_last(x):
        # the output keeps the input's memory format (as PyTorch's does)
        plan = plan_channels_last(problem, dtype) if algorithm == "auto" else None
        if plan is not None:
            return problem, run_conv_channels_last(problem, plan, x, w, b, dtype)
        result = run_conv(problem, plan_conv(problem, dtype, algorithm), x, w, b,
                          np.empty(problem.out_shape, dtype))
        return problem, _args.as_channels_last(result)
    if algorithm == "auto" and _autotune.get_autotune():
        autotune_forward(problem, dtype, x, w, b)
    plan = plan_conv(problem, dtype, algorithm)
    if out is not None:   # a fresh output shares memory with nothing
        out = _args.check_out(out, problem.out_shape, dtype)
        if _args.overlaps(out, x, w, b):
            raise ValueError("out must not share memory with input, weight or bias")
    else:
        out = np.empty(problem.out_shape, dtype)
    return problem, run_conv(problem, plan, x, w, b, out)


CONV_DOC = """{nd}-d convolution (cross-correlation, as in PyTorch's ``conv{nd}d``).

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
    algorithm : str
        'auto' asks :func:`fastconv.choose_algorithm`; a family ('direct', 'im2col',
        'gemm1x1', 'packed') or one kernel variant ('packed_segments', 'packed_phase', ...:
        ``fastconv.planning.algorithm_names("forward")``) forces it; one that cannot compute
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


@document(CONV_DOC, nd=1, example=""">>> import numpy as np, fastconv
    >>> x = np.arange(5, dtype=np.float32).reshape(1, 1, 5)
    >>> fastconv.conv1d(x, np.ones((1, 1, 2), np.float32))
    array([[[1., 3., 5., 7.]]], dtype=float32)""")
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto", out=None):
    return conv_call(1, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                     algorithm, out)[1]


@document(CONV_DOC, nd=2, example=""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 3, 8, 8), np.float32)
    >>> fastconv.conv2d(x, np.ones((4, 3, 3, 3), np.float32), padding=1).shape
    (1, 4, 8, 8)""")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto", out=None):
    return conv_call(2, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                     algorithm, out)[1]


@document(CONV_DOC, nd=3, example=""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 2, 4, 8, 8), np.float32)
    >>> fastconv.conv3d(x, np.ones((3, 2, 3, 3, 3), np.float32), stride=2).shape
    (1, 3, 1, 3, 3)""")
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto", out=None):
    return conv_call(3, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                     algorithm, out)[1]
