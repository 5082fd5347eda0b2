"""Gradients of convolution, with the signatures of ``torch.nn.grad``.

``conv{1,2,3}d_input`` and ``conv{1,2,3}d_weight`` take the forward call's arguments (the
input or weight as a shape) and the gradient of its output; ``conv_bias`` sums the output
gradient. They accept every padding form and padding mode of the forward convolution: a
reflect/replicate/circular pad is run on the explicitly padded input and its gradient folded
back onto the input pixels it copied. ``input_grad_of``, ``weight_grad_of`` and
``bias_grad_of`` compute the gradients of an already checked problem (the transposed
convolution and the framework front ends use them).
"""
import contextlib
import functools
from math import prod

import numpy as np

from fastconv._kernels import conv_bias as _conv_bias, conv_channels_last, conv_direct, \
    conv_im2col, conv_packed, conv_phase_grid, conv_subpixel, conv_winograd
from fastconv._ops.conv import adjoint_packed_weights, as_5d, contiguous_weight, \
    nhwc_gemm_tiling, nhwc_phase_panels, nhwc_tile_shape, run_conv, run_conv_channels_last, \
    tile_cost, vector_lanes
from fastconv._ops.docs import document
from fastconv._plan import args as _args
from fastconv._plan.dispatch import Kernel, channels_last_col2im_pays, \
    channels_last_phases_fill_columns, plan_channels_last, plan_input_grad, plan_weight_grad, \
    sampled_pointwise
from fastconv._plan.problems import NUMPY_PAD_MODE, check_grad_output, conv_problem
from fastconv._plan.tiling import stride_phase_geometry
from fastconv._runtime import threads as _threads
from fastconv._runtime.memory import pooled, streams_output
from fastconv._runtime.precision import denormals_flushed, precision

__all__ = ["conv1d_input", "conv2d_input", "conv3d_input", "conv1d_weight", "conv2d_weight",
           "conv3d_weight", "conv1d_backward", "conv2d_backward", "conv3d_backward",
           "conv_bias"]


def fold_padding(grad_padded, problem):
    """The gradient of ``np.pad(x, problem.padding, mode)`` applied to `grad_padded`: every
    padded pixel's gradient is added to the input pixel it was copied from."""
    grad = grad_padded
    for axis, (size, (before, after)) in enumerate(zip(problem.in_size, problem.padding)):
        # for every padded position, the index of its source along this axis
        source = np.pad(np.arange(size), (before, after),
                        mode=NUMPY_PAD_MODE[problem.padding_mode])
        moved = np.moveaxis(grad, axis + 2, 0)
        folded = moved[before:before + size].copy()
        np.add.at(folded, source[:before], moved[:before])
        np.add.at(folded, source[before + size:], moved[before + size:])
        grad = np.moveaxis(folded, 0, axis + 2)
    return np.ascontiguousarray(grad)


def _run_subpixel(plan, problem, w, g, dtype):
    """Input gradient by phases (see tiling.subpixel_phases), each a stride-1 convolution of
    a slice of the output gradient with that phase's taps, on the forward kernels."""
    nd = problem.ndim
    everything = (slice(None), slice(None))
    w5 = as_5d(w, nd)
    whole = tuple(slice(0, n, 1) for n in problem.in_size)
    if len(plan.phases) == 1 and plan.phases[0][0] == whole:
        # one phase covering every input position (stride 1): it writes dx itself
        dx = np.empty(problem.in_shape, dtype)
    else:
        dx = np.zeros(problem.in_shape, dtype)
    for out_index, taps_index, g_index, phase_problem, phase_plan in plan.phases:
        single = out_index == whole and len(plan.phases) == 1
        every_tap = all((t.start or 0) == 0 and (t.step or 1) == 1 for t in taps_index)
        if single and every_tap and phase_plan.kernel == Kernel.CONV_WINOGRAD \
                and not phase_plan.pieces:
            # Winograd transforms the reversed, transposed weights straight from w (writing
            # them out first took 5 of 16 ms for 512 channels on 7x7, batch 1)
            run_conv(phase_problem, phase_plan, g[everything + g_index],
                     np.empty(phase_problem.weight_shape, dtype), None, dx,
                     remember_weights=False, adjoint_of=w5)
            continue
        # this phase's taps, reversed, channels transposed per group (one pass in Cython)
        phase = tuple(t.start or 0 for t in taps_index)
        step = tuple(t.step or 1 for t in taps_index)
        sub_w = np.empty(phase_problem.weight_shape, dtype)
        conv_subpixel.adjoint_phase_weight(w5, as_5d(sub_w, nd), problem.groups,
                                           (0,) * (3 - nd) + phase, (1,) * (3 - nd) + step)
        # sub_w is new on every call: nothing to remember of it
        if single:
            run_conv(phase_problem, phase_plan, g[everything + g_index], sub_w, None, dx,
                     remember_weights=False)
            continue
        y = np.empty(phase_problem.out_shape, dtype)
        run_conv(phase_problem, phase_plan, g[everything + g_index], sub_w, None, y,
                 remember_weights=False)
        dx[everything + out_index] = y
    return dx


def input_grad_kernel(plan, problem, g, w, dx, then_reads=0):
    """Run `plan` (one input-gradient kernel) for the zero-padded `problem`; `then_reads`:
    the bytes the caller reads after it, before dx's reader (memory.streams_output; the
    measurements under _fused_depthwise)."""
    nd, kernel = problem.ndim, plan.kernel
    args = (kernel, as_5d(g, nd), as_5d(w, nd), as_5d(dx, nd)) + plan.geometry \
        + (problem.groups,)
    if kernel in (Kernel.INPUT_GRAD_DIRECT_ROWS, Kernel.INPUT_GRAD_DIRECT_PHASES):
        conv_direct.input_grad(*args, plan.band_rows, plan.threads,
                               kernel == Kernel.INPUT_GRAD_DIRECT_PHASES
                               and streams_output(dx, g, then_reads=then_reads))
    elif kernel in (Kernel.INPUT_GRAD_PHASE_CLASSES, Kernel.INPUT_GRAD_PHASE_SCATTER):
        conv_phase_grid.input_grad(*args, plan.tile_panels, plan.threads)
    elif kernel == Kernel.INPUT_GRAD_GEMM1X1_STACKED:
        # The kernel reads the weight's transpose where it lies for few positions (whole
        # panels of input channels); else its packed transpose is remembered: a loop that
        # optimizes the input (adversarial examples, style transfer) back-propagates through
        # the same weights every step
        in_place = conv_packed.adjoint_read_in_place(w.shape[1], g[:, 0].size, plan.tile_shape,
                                                     w.dtype == np.float64)
        packed = None if in_place else adjoint_packed_weights(plan, args[2], problem.groups)
        conv_packed.input_grad(*args, plan.tile_panels, plan.channel_panels, plan.tile_shape,
                               plan.threads, packed)
    else:   # INPUT_GRAD_COL2IM_BLAS, _COL2IM_PACKED, _GEMM1X1_BLAS
        conv_im2col.input_grad(*args, plan.band_rows, plan.channel_chunks, plan.threads)


def run_input_grad(problem, plan, weight, grad_output, dtype, then_reads=0):
    """The input gradient of the zero-padded convolution `problem` by `plan` (`then_reads`:
    see input_grad_kernel)."""
    with denormals_flushed(plan.threads):
        return _input_grad_by_plan(problem, plan, weight, grad_output, dtype, then_reads)


def _input_grad_by_plan(problem, plan, weight, grad_output, dtype, then_reads):
    w = contiguous_weight(weight, dtype)
    g = np.ascontiguousarray(grad_output, dtype=dtype)
    if problem.in_shape.count(0) or g.size == 0:
        return np.zeros(problem.in_shape, dtype)
    if plan.kernel in (Kernel.INPUT_GRAD_SUBPIXEL, Kernel.INPUT_GRAD_WINOGRAD):
        return _run_subpixel(plan, problem, w, g, dtype)
    if plan.kernel == Kernel.INPUT_GRAD_CHANNELS_LAST_PHASES:
        return _run_channels_last_phases(problem, plan, w, g, dtype)
    dx = np.empty(problem.in_shape, dtype)   # every kernel writes (or first zeroes) all of it
    with _threads.single_threaded_blas if plan.uses_blas else contextlib.nullcontext():
        input_grad_kernel(plan, problem, g, w, dx, then_reads)
    return dx


def _run_channels_last_phases(problem, plan, w, g, dtype):
    """A channels-first input gradient by the channels-last stride phases: the output
    gradient laid out channels-last, the phases' GEMMs, the result laid out back (both
    transposes tiled, over the threads)."""
    n, c_out, oh, ow = g.shape
    g_nhwc = np.empty((n, oh, ow, c_out), dtype)
    conv_channels_last.transpose_images(g.reshape(n, c_out, oh * ow),
                                        g_nhwc.reshape(n, oh * ow, c_out), plan.threads)
    dx_nhwc = _channels_last_phase_input_grad(problem, w, g_nhwc.transpose(0, 3, 1, 2),
                                              dtype).transpose(0, 2, 3, 1)
    _, c_in, h, width = problem.in_shape
    dx = np.empty(problem.in_shape, dtype)
    conv_channels_last.transpose_images(dx_nhwc.reshape(n, h * width, c_in),
                                        dx.reshape(n, c_in, h * width), plan.threads)
    return dx


def _run_stacked_weight_grad(problem, plan, input, grad_output, weight_shape, dtype, bias_out):
    """The weight gradient of the zero-padded `problem` as the gradient of plan.stacked's 1-d
    pointwise problem over all the images' positions: the operand (for a 1x1 kernel without
    padding the pixels it reads, every stride-th: the input itself at stride 1; else each
    image's im2col) and the output gradient, each image's channels (and taps) by positions."""
    n, positions = problem.batch, prod(problem.out_size)
    if sampled_pointwise(problem):
        sampled = input[(slice(None), slice(None)) + tuple(slice(None, None, s)
                                                           for s in problem.stride)]
        x = np.ascontiguousarray(sampled, dtype).reshape(n, problem.in_channels, positions)
    else:
        (stacked,) = plan.stacked
        nd = problem.ndim
        x = np.empty((n, stacked.in_channels, positions), dtype)
        unit = (1,) * (3 - nd)
        conv_im2col.unfold_stacked(as_5d(np.ascontiguousarray(input, dtype), nd),
                                   weight_shape[:2] + unit + tuple(weight_shape[2:]),
                                   problem.out_shape[:2] + unit + problem.out_size, x,
                                   *plan.geometry, problem.groups, plan.threads)
    g = np.ascontiguousarray(grad_output, dtype).reshape(n, problem.out_channels, positions)
    dw = np.empty((weight_shape[0], x.shape[1] // problem.groups), dtype)
    with _threads.single_threaded_blas:
        conv_im2col.weight_grad_stacked(plan.kernel, x, g, dw, problem.groups, plan.chunks,
                                        plan.threads)
    if bias_out is not None:
        bias_out[...] = bias_grad_of(grad_output, dtype)
    return dw.reshape(weight_shape)


def run_weight_grad(problem, plan, input, grad_output, weight_shape, dtype, bias_out=None):
    """The weight gradient of the zero-padded convolution `problem` on `input` by `plan`;
    with `bias_out` (an array of C_out elements), the bias gradient too, written there (on the
    phase grid it is summed while the output gradient is read anyway)."""
    with denormals_flushed(plan.threads):
        return _weight_grad_by_plan(problem, plan, input, grad_output, weight_shape, dtype,
                                    bias_out)


def _weight_grad_by_plan(problem, plan, input, grad_output, weight_shape, dtype, bias_out):
    nd = problem.ndim
    if plan.stacked:
        return _run_stacked_weight_grad(problem, plan, input, grad_output, weight_shape, dtype,
                                        bias_out)
    x = np.ascontiguousarray(input, dtype=dtype)
    g = np.ascontiguousarray(grad_output, dtype=dtype)
    dw = np.empty(weight_shape, dtype)    # every kernel writes all of it
    if g.size == 0:
        if bias_out is not None:
            bias_out[...] = 0
        dw[...] = 0
        return dw
    args = (plan.kernel, as_5d(x, nd), as_5d(g, nd), as_5d(dw, nd)) + plan.geometry \
        + (problem.groups,)
    if plan.kernel == Kernel.WEIGHT_GRAD_PHASE:
        conv_phase_grid.weight_grad(*args, plan.images_per_unit, plan.chunks, plan.threads,
                                    bias_out)
        return dw
    if plan.kernel == Kernel.WEIGHT_GRAD_WINOGRAD:
        return _run_winograd_weight_grad(problem, plan, x, g, dw, dtype, bias_out)
    if plan.kernel == Kernel.WEIGHT_GRAD_DEPTHWISE_ROWS:
        conv_direct.weight_grad(*args, plan.threads)
        if bias_out is not None:
            bias_out[...] = bias_grad_of(g, dtype)
        return dw
    with _threads.single_threaded_blas if plan.uses_blas else contextlib.nullcontext():
        conv_im2col.weight_grad(*args, plan.band_rows, plan.chunks, plan.threads)
    if bias_out is not None:
        bias_out[...] = bias_grad_of(g, dtype)
    return dw


def _run_winograd_weight_grad(problem, plan, x, g, dw, dtype, bias_out):
    """The weight gradient by Winograd F(2x2, 3x3) (conv_winograd.weight_grad; in 3-d, F(2x2,
    3x3) over each depth tap), images in chunks of plan.images_per_unit. Its tiles mix every
    input of a 4x4 patch, so one inf or NaN spreads to sums the direct ones keep finite (inf -
    inf): a result that is not all finite is recomputed exactly."""
    x5, g5, dw5 = (as_5d(a, problem.ndim) for a in (x, g, dw))
    n, c_in = x.shape[:2]
    od, oh, ow = g5.shape[2:]
    depth_taps = dw5.shape[2]
    elements = conv_winograd.GRADIENT_ELEMENTS
    products = elements * depth_taps * problem.out_channels * problem.in_per_group
    if plan.per_thread_blocks:
        _winograd_blocks(plan, x5, g5, dw5, dtype)
    else:
        capacity = conv_winograd.gradient_capacity(min(plan.images_per_unit, n), oh, ow,
                                                   dtype == np.float64, od, x5.shape[2])
        xhat = np.empty(elements * c_in * capacity, dtype)
        ghat = np.empty(elements * problem.out_channels * capacity, dtype)
        with _threads.single_threaded_blas:
            conv_winograd.weight_grad(plan.kernel, x5, g5, dw5, plan.geometry[1],
                                      problem.groups, plan.images_per_unit, xhat, ghat,
                                      np.empty(products, dtype), plan.threads)
    if not np.isfinite(dw).all():
        with precision("exact"):
            return _weight_grad_by_plan(problem, plan_weight_grad(problem, dtype), x, g,
                                        dw.shape, dtype, bias_out)
    if bias_out is not None:
        bias_out[...] = bias_grad_of(g, dtype)
    return dw


def _winograd_blocks(plan, x, g, dw, dtype, channels_last=False):
    """dw (5-d) := the Winograd weight gradient of x and g (5-d, channels-first, or with
    `channels_last` (N, D, H, W, C)) by plan's blocks (conv_winograd.weight_grad_blocks),
    their chunks' partial products (one depth tap's at a time) in a fresh array."""
    c_out, c_in = dw.shape[:2]
    partial = np.empty(plan.chunks * conv_winograd.GRADIENT_ELEMENTS * c_out * c_in, dtype)
    conv_winograd.weight_grad_blocks(plan.kernel, x, g, dw, plan.geometry[1], plan.band_rows,
                                     plan.images_per_unit, plan.chunks, partial, plan.threads,
                                     channels_last)


# The gradients of a checked call (its ConvProblem, operands of its shapes): the public
# functions below after their checks, the transposed convolution, and the framework front
# ends, which keep the problem of the forward call and skip checking it again.

@pooled
def input_grad_of(problem, weight, grad_output, dtype, algorithm="auto", then_reads=0):
    """The input gradient of the checked convolution `problem`, any padding mode;
    `then_reads`: the bytes the caller reads after it (the weight gradient's operands), which
    may make a kernel stream dx out past the caches (memory.streams_output)."""
    padded = problem.explicitly_padded
    relaid = False
    if algorithm == "auto" and _args.is_channels_last(grad_output):
        # channels-first col2im, laid out channels-last after, where its weights dwarf the
        # gradients (see channels_last_col2im_pays)
        relaid = channels_last_col2im_pays(padded, np.dtype(dtype).itemsize)
        grad = None if relaid else channels_last_input_grad(problem, weight, grad_output,
                                                            dtype)
        if grad is not None:
            return grad
    plan = plan_input_grad(problem, dtype, algorithm, weight)
    grad = run_input_grad(padded, plan, weight, grad_output, dtype, then_reads)
    grad = grad if padded is problem else fold_padding(grad, problem)
    return _args.as_channels_last(grad) if relaid else grad


def channels_last_input_grad(problem, weight, grad_output, dtype):
    """The input gradient of a one-group, zero-padded 2-d convolution from a channels-last
    output gradient, channels-last, computed where the gradient lies on the channels-last
    kernels: at stride 1 it is the forward convolution of the gradient by the reversed,
    transposed weights, padded by dilation x (kernel - 1) less the layer's padding; a
    strided layer's is that of each stride phase (_channels_last_phase_input_grad). None
    where neither applies (the caller computes channels-first)."""
    depthwise = problem.groups == problem.in_channels == problem.out_channels
    if problem.ndim != 2 or not (problem.groups == 1 or depthwise) \
            or problem.padding_mode != "zeros":
        return None
    c_out, c_in, kh, kw = weight.shape
    if any(s != 1 for s in problem.stride):
        if depthwise:
            return _channels_last_depthwise_input_grad(problem, weight, grad_output, dtype)
        if not channels_last_phases_fill_columns(problem):   # its columns mostly empty
            return None
        return _channels_last_phase_input_grad(problem, weight, grad_output, dtype)
    adjoint = _channels_last_adjoint(problem, tuple(weight.shape), tuple(grad_output.shape))
    if adjoint is None:
        return None
    plan = plan_channels_last(adjoint, dtype)
    if plan is None:
        return None
    if depthwise:   # each channel's filter turned by 180 degrees (C x KH x KW: small)
        return run_conv_channels_last(adjoint, plan, grad_output,
                                      np.ascontiguousarray(weight[:, :, ::-1, ::-1], dtype),
                                      None, dtype)
    # the adjoint's weights are taken straight from the layer's (the array passed for them
    # only gives their shape: never written, never read)
    return run_conv_channels_last(adjoint, plan, grad_output,
                                  np.empty((c_in, c_out, kh, kw), dtype), None, dtype,
                                  adjoint_of=weight)


def _channels_last_phase_input_grad(problem, weight, grad_output, dtype):
    """A strided one-group layer's input gradient, channels-last, by stride phases
    (tiling.stride_phase_geometry): each phase a stride-1 convolution of the output gradient
    by the taps that reach its pixels, on the channels-last GEMM, written straight to every
    stride-th pixel of the input gradient: no zeros to fill between, nothing scattered
    after. Phases no tap reaches are zero. None with dilation, or padding past what a
    phase's taps reach (the caller computes channels-first)."""
    if any(d != 1 for d in problem.dilation):
        return None
    n, c_in, h, w = problem.in_shape
    oh, ow = grad_output.shape[2:]
    geometry = stride_phase_geometry(problem.kernel_size, problem.stride, problem.padding,
                                     (h, w), (oh, ow))
    if geometry is None:
        return None
    shape, mr, nr = nhwc_tile_shape(c_in, dtype)
    panels = nhwc_phase_panels(np.asarray(weight), nr, dtype, problem.stride)
    g = grad_output.transpose(0, 2, 3, 1)
    if g.dtype != dtype:
        g = g.astype(dtype)
    # phases no tap reaches stay zero: fresh zeroed pages cost no more than fresh pages
    allocate = np.zeros if any(phase not in panels for phase in geometry) else np.empty
    dx = allocate((n, h, w, c_in), dtype)
    empty_bias = np.empty(0, dtype)
    sh, sw = problem.stride
    for (rh, rw), (first, taps, padding) in geometry.items():
        if (rh, rw) not in panels:
            continue
        out = dx[:, first[0]::sh, first[1]::sw]
        phase = conv_problem(2, grad_output.shape, (c_in, problem.out_channels) + taps, None,
                             1, padding, 1, 1, "zeros")
        threads = _threads.threads_for(phase.multiply_adds)
        _, tile_panels, chunks, _, _ = nhwc_gemm_tiling(phase, dtype, threads)
        with denormals_flushed(threads):
            conv_channels_last.conv_gemm_nhwc(
                g, panels[rh, rw], empty_bias, out, taps, (1, 1),
                tuple(before for before, _ in padding), (1, 1), shape, tile_panels, chunks,
                True, threads)
    return dx.transpose(0, 3, 1, 2)


@functools.lru_cache(maxsize=512)   # per backward call; a network repeats its layers
def _channels_last_adjoint(problem, weight_shape, grad_shape):
    """The stride-1 convolution of the output gradient whose output is the input gradient of
    the stride-1 `problem`, or None where that does not hold (padding beyond the kernel's
    reach)."""
    c_out, c_in, kh, kw = weight_shape
    depthwise = problem.groups == problem.in_channels == problem.out_channels
    reach = [d * (k - 1) for d, k in zip(problem.dilation, problem.kernel_size)]
    if any(p > r for (before, after), r in zip(problem.padding, reach) for p in (before, after)):
        return None
    adjoint = conv_problem(2, grad_shape, (c_out, 1, kh, kw) if depthwise
                           else (c_in, c_out, kh, kw), None, 1,
                           tuple((r - before, r - after)
                                 for (before, after), r in zip(problem.padding, reach)),
                           problem.dilation, problem.groups, "zeros")
    if adjoint.out_shape != problem.in_shape:
        return None
    return adjoint


def _channels_last_depthwise_input_grad(problem, weight, grad_output, dtype):
    """A strided depthwise layer's input gradient, channels-last: each input pixel gathers
    the taps that read it (no zero fill, no scatter)."""
    kh, kw = problem.kernel_size
    g = np.ascontiguousarray(grad_output.transpose(0, 2, 3, 1), dtype)
    taps = np.ascontiguousarray(weight.reshape(weight.shape[0], kh * kw).T, dtype)
    n, c, h, w = problem.in_shape
    dx = np.empty((n, h, w, c), dtype)
    threads = _threads.threads_for(problem.multiply_adds)
    with denormals_flushed(threads):
        conv_channels_last.depthwise_input_grad_nhwc(
            g, taps, dx, problem.kernel_size, problem.stride,
            tuple(before for before, _ in problem.padding), problem.dilation, threads)
    return dx.transpose(0, 3, 1, 2)


# The channels-last weight gradient's work items: blocks of up to this many output channels x
# patch columns (each block's operands read, and packed, once per block of pixels: a layer
# wider than a block reads the other operand once per block, so blocks cover the usual
# layers whole), pixels in blocks of this many (the GEMM's depth: a panel of each operand
# stays in L1), and at least this many items per thread (the pixels split into parts of at
# least one block, summed after, when the blocks are fewer): with 4 items a thread, the 3
# blocks of 96 -> 576 channels on 14x14 (batch 8) ran as one part, 3 items on 2 threads (Zen
# 4, ms, 4 -> 8: 1.33 -> 1.04; 576 -> 96 1.22 -> 0.99; 512 -> 128 on 28x28 4.93 -> 4.61).
# Blocks of 192 -> 512 (Zen 4, 2 threads, batch 8, 17 1x1 layers of ResNet-50 and
# MobileNetV2, 5 interleaved rounds): 49.8 -> 46.7 ms in all, 128 -> 512 on 28x28 5.35 ->
# 4.72, 512 -> 128 5.49 -> 4.65, 512 -> 2048 on 7x7 4.58 -> 4.21 (PyTorch 46.2, 4.53,
# 4.01, 4.35).
_NHWC_GRAD_BLOCK = 512
_NHWC_GRAD_PIXELS = 256
_NHWC_GRAD_ITEMS_PER_THREAD = 8
# A 1x1, stride-1, unpadded layer's operands are read where they lie, not packed (the same
# sums; the test of that flips it), unless one operand's rows are longer than
# _NHWC_GRAD_IN_PLACE_ROW_BYTES and a multiple of _NHWC_GRAD_ALIASED_ROW_BYTES apart: those
# rows fall into few L1 sets. In place pays on narrow rows (Zen 3, 2 threads, ms, in place /
# packed: 32 -> 16 channels on 112x112 0.95-1.19 / 1.93-2.44, 144 -> 24 on 56x56 1.37-1.50 /
# 2.20-2.85, 256 -> 64 6.3-7.1 / 8.4-9.6) and lost on rows 4-8 KiB apart (512 -> 2048 on 7x7
# 8.4-9.0 / 6.4-6.8, 1024 -> 256 on 14x14 6.5-7.7 / 5.9-6.1). MobileNetV2's rows of 576, 960
# and 1280 channels are not aliased: in place there (Zen 4, 2 threads, batch 8, ms, packed
# -> in place, PyTorch: 96 -> 576 on 14x14 1.34 -> 1.07 / 1.08, 576 -> 96 1.27 -> 1.14 /
# 1.12, 160 -> 960 on 7x7 0.80 -> 0.74 / 0.83, 320 -> 1280 1.99 -> 1.80 / 2.03).
_NHWC_GRAD_IN_PLACE = True
_NHWC_GRAD_IN_PLACE_ROW_BYTES = 1024
_NHWC_GRAD_ALIASED_ROW_BYTES = 2048


def _nhwc_grad_in_place(c_out, c_in, dtype):
    """Whether a 1x1 layer's channels-last weight gradient reads its operands in place."""
    rows = [c * np.dtype(dtype).itemsize for c in (c_out, c_in)]
    return _NHWC_GRAD_IN_PLACE and not any(
        row > _NHWC_GRAD_IN_PLACE_ROW_BYTES and row % _NHWC_GRAD_ALIASED_ROW_BYTES == 0
        for row in rows)


# Layers with at most this many input channels (and at most _NHWC_TAPS_MAX_SUMS elements of
# weight per part of the pixels) run transposed with the patches read in place
# (weight_grad_nhwc_taps): their runs of channels are too short to pack. Zen 4, 2 threads,
# batch 8, ms, packed -> taps: 3 -> 64 7x7 stride-2 stem 21.1 -> 10.9 (PyTorch 11.2), 3 ->
# 32 3x3 stem 4.4 -> 2.3, 8 -> 32 on 112x112 5.1 -> 2.8, 64 -> 64 on 56x56 11.1 -> 9.9; level
# at 128 channels (28x28: 9.6 / 9.4), a loss beyond (256 on 14x14: 9.5 / 10.9).
_NHWC_TAPS_MAX_CHANNELS = 64
_NHWC_TAPS_MAX_SUMS = 1 << 18


def _nhwc_grad_swaps(c_out, c_in, dtype):
    """Whether a 1x1 layer's channels-last weight gradient runs as its transpose, dW^T (C_in,
    C_out) = X^T G (the input's channels on the micro-kernel's broadcast side, the output
    gradient's in its vector lanes): where that wastes fewer of the tiles' lanes. A few
    channels on the vector side fill a fraction of a panel (16 of 32 lanes for 16 -> 96
    channels: Zen 4, ms, 3.68 -> 1.79 transposed; 24 -> 144 on 56x56 1.12 -> 0.78). Where
    the lanes are as full either way, a vector side of one vector or less goes to the
    broadcast side: its tiles load MR broadcasts for each vector, the other way three (16 ->
    96 on 112x112, 48-wide tiles: 3.19 -> 2.52 ms transposed, Zen 4, 2 threads, batch 8,
    PyTorch 2.58). Wider ones stay (64 -> 256 on 56x56 4.88 -> 5.40, 512 -> 2048 on 7x7
    4.68 -> 5.15; 32 -> 192 on 28x28 level)."""
    vec = vector_lanes(dtype)

    def cost(rows, columns):
        shape, _, _ = nhwc_tile_shape(columns, dtype, rows)
        return tile_cost(rows, columns, shape, dtype), columns <= vec < rows
    return cost(c_in, c_out) < cost(c_out, c_in)


def channels_last_weight_grad(problem, input, grad_output, weight_shape, dtype, bias_out):
    """The weight gradient of a one-group, zero-padded 2-d convolution whose input and output
    gradient are both channels-last, read where they lie (a GEMM over the pixels on the
    micro-kernel); laid out channels-last, as a channels-last layer's weight is. None where
    that does not apply. With `bias_out`, the bias gradient too."""
    depthwise = problem.groups == problem.in_channels == problem.out_channels
    if problem.ndim != 2 or not (problem.groups == 1 or depthwise) \
            or problem.padding_mode != "zeros" \
            or not (_args.is_channels_last(input) and _args.is_channels_last(grad_output)):
        return None
    x = np.ascontiguousarray(input.transpose(0, 2, 3, 1), dtype)
    g = np.ascontiguousarray(grad_output.transpose(0, 2, 3, 1), dtype)
    c_out, c_in, kh, kw = weight_shape
    if depthwise:
        return _channels_last_depthwise_weight_grad(problem, x, g, grad_output, dtype,
                                                    bias_out)
    dw = _channels_last_winograd_weight_grad(problem, x, g, grad_output, weight_shape, dtype,
                                             bias_out)
    if dw is not None:
        return dw
    pointwise = (kh, kw) == (1, 1) and problem.stride == (1, 1) \
        and problem.padding == ((0, 0), (0, 0))
    if not pointwise and c_in <= _NHWC_TAPS_MAX_CHANNELS \
            and c_in * kh * kw * c_out <= _NHWC_TAPS_MAX_SUMS:
        return _channels_last_taps_weight_grad(problem, x, g, grad_output, weight_shape,
                                               dtype, bias_out)
    # a 1x1, stride-1 layer's gradient is symmetric in its operands: X^T G is the same GEMM
    # with the roles of the input and the output gradient exchanged
    swapped = pointwise and _nhwc_grad_swaps(c_out, c_in, dtype)
    if swapped:
        x, g, c_out, c_in = g, x, c_in, c_out
    k = c_in * kh * kw
    shape, mr, nr = nhwc_tile_shape(k, dtype, c_out)
    threads = _threads.threads_for(problem.multiply_adds)
    row_blocks, col_blocks = -(-c_out // _NHWC_GRAD_BLOCK), -(-k // _NHWC_GRAD_BLOCK)
    pixels = g.shape[0] * g.shape[1] * g.shape[2]
    parts = max(1, min(-(-_NHWC_GRAD_ITEMS_PER_THREAD * threads // (row_blocks * col_blocks)),
                       pixels // _NHWC_GRAD_PIXELS))
    if parts == 1:
        # too few pixels to split: as many equal row blocks as make whole rounds of the
        # threads (1280 output channels on a 7x7 batch in 3 blocks ran 2 on one thread)
        while row_blocks * col_blocks % threads and row_blocks < -(-c_out // mr):
            row_blocks += 1
    block_rows = -(-c_out // row_blocks)
    sums = np.empty((parts, c_out, k), dtype)
    with denormals_flushed(threads):
        conv_channels_last.weight_grad_nhwc(
            x, g, sums, problem.kernel_size, problem.stride,
            tuple(before for before, _ in problem.padding), problem.dilation, shape,
            block_rows, _NHWC_GRAD_BLOCK, _NHWC_GRAD_PIXELS,
            _nhwc_grad_in_place(c_out, c_in, dtype), threads)
    dw = sums[0] if parts == 1 else sums.sum(axis=0)
    if bias_out is not None:
        bias_out[...] = bias_grad_of(grad_output, dtype)
    if swapped:     # (C_in, C_out) -> (C_out, C_in, 1, 1), by the tiled transpose (numpy's
        # copy of dw.T ran at 1.5 GB/s: 3 of the 4 ms of a 512 -> 2048 layer on 7x7, Zen 4)
        dw_t = np.empty((1, c_in, c_out), dtype)
        conv_channels_last.transpose_images(np.ascontiguousarray(dw)[None], dw_t, threads)
        return dw_t.reshape(c_in, c_out, 1, 1)
    return dw.reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2)


def _channels_last_winograd_weight_grad(problem, x, g, grad_output, weight_shape, dtype,
                                        bias_out):
    """The weight gradient of a 3x3 stride-1 layer by Winograd, where `auto` takes it for the
    channels-first call: its blocks read x and g (NHWC) where they lie; the batch-wide GEMMs
    (wider layers) take channels-first copies of them, made by tiled transposes (the direct
    GEMM over the pixels, which reads them in place, does 2.25x the multiply-adds). Laid out
    channels-last. None where `auto` does not take Winograd, or where the blocks' result is
    not all finite (the exact kernels then run)."""
    plan = plan_weight_grad(problem, dtype)
    if plan.kernel != Kernel.WEIGHT_GRAD_WINOGRAD:
        return None
    c_out, c_in = weight_shape[:2]
    if plan.per_thread_blocks:
        dw = np.empty(weight_shape, dtype)
        with denormals_flushed(plan.threads):
            _winograd_blocks(plan, x[:, None], g[:, None], dw[:, :, None], dtype,
                             channels_last=True)
        if not np.isfinite(dw).all():
            return None
        if bias_out is not None:
            bias_out[...] = bias_grad_of(grad_output, dtype)
    else:
        planes = []
        for a in (x, g):
            n, h, w, c = a.shape
            first = np.empty((n, c, h * w), dtype)
            conv_channels_last.transpose_images(a.reshape(n, h * w, c), first, plan.threads)
            planes.append(first.reshape(n, c, h, w))
        dw = run_weight_grad(problem, plan, planes[0], planes[1], weight_shape, dtype,
                             bias_out)
    dw_cl = np.empty((c_out, 9, c_in), dtype)
    conv_channels_last.transpose_images(np.ascontiguousarray(dw).reshape(c_out, c_in, 9),
                                        dw_cl, plan.threads)
    return dw_cl.reshape(c_out, 3, 3, c_in).transpose(0, 3, 1, 2)


def _channels_last_taps_weight_grad(problem, x, g, grad_output, weight_shape, dtype,
                                    bias_out):
    """The weight gradient of a layer with few input channels, transposed (the patches on the
    micro-kernel's broadcast side, read in place from the zero-padded input): parts of the
    pixels among the threads, summed after."""
    c_out, c_in, kh, kw = weight_shape
    threads = _threads.threads_for(problem.multiply_adds)
    (top, bottom), (left, right) = problem.padding
    if top or bottom or left or right:
        n, h, w, _ = x.shape
        padded = np.empty((n, h + top + bottom, w + left + right, c_in), dtype)
        conv_channels_last.pad_nhwc(x, padded, top, left, threads)
        x = padded
    shape, _, _ = nhwc_tile_shape(c_out, dtype, kh * kw * c_in)
    pixels = g.shape[0] * g.shape[1] * g.shape[2]
    parts = max(1, min(_NHWC_GRAD_ITEMS_PER_THREAD * threads, pixels // _NHWC_GRAD_PIXELS))
    sums = np.empty((parts, kh * kw * c_in, c_out), dtype)
    with denormals_flushed(threads):
        conv_channels_last.weight_grad_nhwc_taps(x, g, sums, problem.kernel_size,
                                                 problem.stride, problem.dilation, shape,
                                                 _NHWC_GRAD_PIXELS, threads)
    dwt = sums[0] if parts == 1 else sums.sum(axis=0)
    if bias_out is not None:
        bias_out[...] = bias_grad_of(grad_output, dtype)
    # (KH * KW * C_in, C_out) -> (C_out, C_in, KH, KW) over (C_out, KH, KW, C_in) memory
    return np.ascontiguousarray(dwt.T).reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2)


# the depthwise weight gradient's parts of output rows per thread (each its own partial sums)
_DEPTHWISE_GRAD_PARTS_PER_THREAD = 4


def _channels_last_depthwise_weight_grad(problem, x, g, grad_output, dtype, bias_out):
    threads = _threads.threads_for(problem.multiply_adds)
    kh, kw = problem.kernel_size
    rows = g.shape[0] * g.shape[1]
    parts = max(1, min(rows, _DEPTHWISE_GRAD_PARTS_PER_THREAD * threads))
    sums = np.empty((parts, kh * kw, problem.in_channels), dtype)
    with denormals_flushed(threads):
        conv_channels_last.depthwise_weight_grad_nhwc(
            x, g, sums, problem.kernel_size, problem.stride,
            tuple(before for before, _ in problem.padding), problem.dilation, threads)
    if bias_out is not None:
        bias_out[...] = bias_grad_of(grad_output, dtype)
    # (C, 1, KH, KW) over (KH, KW, C) memory: the layout of a channels-last depthwise weight
    return sums.sum(axis=0).reshape(kh, kw, 1, -1).transpose(3, 2, 0, 1)


@pooled
def weight_grad_of(problem, input, grad_output, weight_shape, dtype, bias_out=None,
                   algorithm="auto"):
    """The weight gradient of the checked convolution `problem` on `input`, any padding mode
    (and the bias gradient into `bias_out`, if given: see run_weight_grad)."""
    if algorithm == "auto":
        dw = channels_last_weight_grad(problem, input, grad_output, weight_shape, dtype,
                                       bias_out)
        if dw is not None:
            return dw
    plan = plan_weight_grad(problem, dtype, algorithm)
    padded = problem.explicitly_padded
    if padded is not problem:
        input = np.pad(input, ((0, 0), (0, 0)) + problem.padding,
                       mode=NUMPY_PAD_MODE[problem.padding_mode])
    return run_weight_grad(padded, plan, input, grad_output, weight_shape, dtype, bias_out)


@pooled
def conv_grads_of(problem, input, weight, grad_output, dtype, bias_out=None):
    """(input gradient, weight gradient) of the checked convolution `problem`: those of
    input_grad_of and weight_grad_of (and the bias gradient into `bias_out`, if given), in
    one pass where the kernels the planner picks for the two can share it (_fused_depthwise);
    else by the two calls."""
    grads = _fused_depthwise(problem, input, weight, grad_output, dtype)
    if grads is None:
        # the weight gradient reads both operands after dx is written
        return (input_grad_of(problem, weight, grad_output, dtype,
                              then_reads=input.nbytes + grad_output.nbytes),
                weight_grad_of(problem, input, grad_output, tuple(weight.shape), dtype,
                               bias_out))
    if bias_out is not None:
        bias_out[...] = bias_grad_of(grad_output, dtype)
    return grads


def _fused_depthwise(problem, input, weight, grad_output, dtype):
    """Both gradients of a zero-padded depthwise layer at stride 1 (channels-first) where the
    planner runs its input gradient as one forward convolution on the direct planes kernel
    and its weight gradient by rows: one pass over each channel's output gradient for both
    (conv_direct.depthwise_grads), the same bits as the two kernels apart. Zen 4, 2 threads,
    float32, batch 8, back to back, ms (two calls -> one pass, with the weight gradient's
    register fix in both): 144 channels of 56x56 3x3 3.3-3.4 -> 3.0-3.2, 96 of 112x112
    11.6-11.9 -> 9.7-10.7. dx goes out by streaming stores where memory.streams_output says
    so. None where that does not apply."""
    # (one input and one output channel per group first: the rows kernel needs it, and the
    # other layers skip planning their weight gradient twice)
    if problem.in_per_group != 1 or problem.out_per_group != 1 \
            or problem.explicitly_padded is not problem or _args.is_channels_last(grad_output) \
            or problem.in_shape.count(0) or grad_output.size == 0:
        return None
    weight_plan = plan_weight_grad(problem, dtype)
    if weight_plan.kernel != Kernel.WEIGHT_GRAD_DEPTHWISE_ROWS:
        return None
    input_plan = plan_input_grad(problem, dtype, "auto", weight)
    if input_plan.kernel != Kernel.INPUT_GRAD_SUBPIXEL or len(input_plan.phases) != 1:
        return None
    (out_index, taps_index, g_index, phase_problem, phase_plan), = input_plan.phases
    whole = tuple(slice(0, n, 1) for n in problem.in_size)
    if out_index != whole or phase_plan.kernel != Kernel.CONV_DIRECT_PLANES \
            or any((t.start or 0) != 0 or (t.step or 1) != 1 for t in taps_index) \
            or g_index != tuple(slice(0, n) for n in problem.out_size):
        return None
    nd = problem.ndim
    w5 = as_5d(contiguous_weight(weight, dtype), nd)
    reversed_w = np.empty_like(w5)
    conv_subpixel.adjoint_phase_weight(w5, reversed_w, problem.groups, (0, 0, 0), (1, 1, 1))
    x = np.ascontiguousarray(input, dtype)
    g = np.ascontiguousarray(grad_output, dtype)
    dx = np.empty(problem.in_shape, dtype)
    dw = np.empty(weight.shape, dtype)
    stride, pad, dilation = weight_plan.geometry
    _, adjoint_pad, _ = phase_plan.geometry
    with denormals_flushed(weight_plan.threads):
        conv_direct.depthwise_grads(as_5d(x, nd), as_5d(g, nd), reversed_w, as_5d(dx, nd),
                                    as_5d(dw, nd), stride, pad, dilation, adjoint_pad,
                                    problem.groups, phase_plan.band_rows, weight_plan.threads,
                                    streams_output(dx, x, g))
    return dx, dw


# The depthwise input gradients (one pass with the weight's, or by stride phases) write dx by
# streaming stores where no cache keeps it (memory.streams_output): where the call moves more
# than COLD_AFTER_BYTES (its reads evict dx's block before each plane is written, so a plain
# store first reads the line back from memory, and evict dx before its reader), or dx's
# block is cold. Zen 4 (32 MiB L3), 2 threads, float32, batch 8, 144 channels of 56x56: one
# pass at stride 1 (43 MB), alternating builds, 2.35-2.42 -> 2.12-2.21 ms; both gradients at
# stride 2 (dx then dw: 32 MB) 1.70-1.83 -> 1.52-1.59, but dx alone (18 MB, kept in L3 from
# call to call) 0.64-0.82 -> 0.76-0.88: not streamed.


def bias_grad_of(grad_output, dtype):
    """The bias gradient from a checked output gradient of at least 3 dimensions."""
    out = np.zeros(grad_output.shape[1], dtype)
    if grad_output.size and _args.is_channels_last(grad_output):
        # each pixel's channels side by side: summed as rows, in float64
        rows = grad_output.transpose(0, 2, 3, 1).reshape(-1, grad_output.shape[1])
        out[...] = rows.sum(axis=0, dtype=np.float64)
    elif grad_output.size:
        planes = np.ascontiguousarray(grad_output, dtype=dtype).reshape(
            grad_output.shape[0], grad_output.shape[1], -1)
        _conv_bias.bias_grad(planes, out, _threads.threads_for(grad_output.size))
    return out


def _input_grad(nd, input_shape, weight, grad_output, stride, padding, dilation, groups,
                padding_mode, algorithm):
    w = _args.as_array(weight, "weight")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(weight=w, grad_output=g)
    input_shape = _args.shape_argument(input_shape, "input_shape", nd + 2)
    problem = conv_problem(nd, input_shape, w.shape, None, stride, padding, dilation, groups,
                           padding_mode)
    check_grad_output(g, problem.out_shape, f"conv{nd}d")
    return input_grad_of(problem, w, g, dtype, algorithm)


def _weight_grad(nd, input, weight_shape, grad_output, stride, padding, dilation, groups,
                 padding_mode, algorithm):
    x = _args.as_array(input, "input")
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(input=x, grad_output=g)
    weight_shape = _args.shape_argument(weight_shape, "weight_shape", nd + 2)
    problem = conv_problem(nd, x.shape, weight_shape, None, stride, padding, dilation, groups,
                           padding_mode)
    check_grad_output(g, problem.out_shape, f"conv{nd}d")
    return weight_grad_of(problem, x, g, weight_shape, dtype, algorithm=algorithm)


def _grads(nd, input, weight, grad_output, stride, padding, dilation, groups, padding_mode):
    x = _args.as_array(input, "input")
    w = _args.as_array(weight, "weight")
    g = _args.as_array(grad_output, "grad_output")
    # each gradient in the dtype its own function computes in (they differ for mixed inputs)
    input_dtype = _args.compute_dtype(weight=w, grad_output=g)
    weight_dtype = _args.compute_dtype(input=x, grad_output=g)
    problem = conv_problem(nd, x.shape, w.shape, None, stride, padding, dilation, groups,
                           padding_mode)
    check_grad_output(g, problem.out_shape, f"conv{nd}d")
    if input_dtype != weight_dtype:
        return (input_grad_of(problem, w, g, input_dtype),
                weight_grad_of(problem, x, g, w.shape, weight_dtype))
    return conv_grads_of(problem, x, w, g, input_dtype)


BACKWARD_DOC = """Gradients of ``conv{nd}d`` with respect to its input and its weight, in one
    call (what PyTorch's autograd runs, ``torch.ops.aten.convolution_backward``).

    The same arrays as :func:`conv{nd}d_input` and :func:`conv{nd}d_weight` give, bit for
    bit; where the kernels of the two can share one pass over the data (a depthwise layer
    at stride 1), they run as one, reading the output gradient once.

    Parameters
    ----------
    input : array_like, shape (N, C_in, {dims})
        The forward call's input.
    weight : array_like, shape (C_out, C_in / groups, {kdims})
        The forward call's weight.
    grad_output : array_like
        Gradient of the loss with respect to the forward output; must have its shape.
    stride, padding, dilation, groups, padding_mode
        As in the forward call.

    Returns
    -------
    (grad_input, grad_weight) : ndarrays of the shapes of `input` and `weight`, float32 or
    float64.

    Examples
    --------
    {example}
    """


INPUT_DOC = """Gradient of ``conv{nd}d`` with respect to its input
    (``torch.nn.grad.conv{nd}d_input``).

    Parameters
    ----------
    input_shape : tuple of {n} ints
        Shape of the forward call's input (N, C_in, {dims}).
    weight : array_like, shape (C_out, C_in / groups, {kdims})
    grad_output : array_like
        Gradient of the loss with respect to the forward output; must have its shape.
    stride, padding, dilation, groups, padding_mode
        As in the forward call (every padding form and mode of :func:`fastconv.conv{nd}d`).
    algorithm : str
        'auto' lets the dispatcher choose (``fastconv.planning.INPUT_GRAD_RULES``); a family
        ('direct', 'col2im', 'gemm1x1', 'subpixel') or a kernel variant
        (``fastconv.planning.algorithm_names("input_grad")``) forces it.

    Returns
    -------
    ndarray of shape `input_shape`, float32 or float64.

    Examples
    --------
    {example}
    """

WEIGHT_DOC = """Gradient of ``conv{nd}d`` with respect to its weight
    (``torch.nn.grad.conv{nd}d_weight``).

    Parameters
    ----------
    input : array_like, shape (N, C_in, {dims})
        The forward call's input.
    weight_shape : tuple of {n} ints
        Shape of the forward call's weight (C_out, C_in / groups, {kdims}).
    grad_output : array_like
        Gradient of the loss with respect to the forward output; must have its shape.
    stride, padding, dilation, groups, padding_mode
        As in the forward call.
    algorithm : str
        'auto' lets the dispatcher choose (``fastconv.planning.WEIGHT_GRAD_RULES``); 'gemm',
        'phase' or a kernel variant (``fastconv.planning.algorithm_names("weight_grad")``)
        forces it.

    Returns
    -------
    ndarray of shape `weight_shape`, float32 or float64. Deterministic for a given thread
    count: partial sums over fixed runs of the work are added in a fixed order.

    Examples
    --------
    {example}
    """


@document(INPUT_DOC, nd=1, example=""">>> import numpy as np, fastconv
    >>> w = np.ones((1, 1, 2), np.float32)
    >>> fastconv.grad.conv1d_input((1, 1, 4), w, np.ones((1, 1, 3), np.float32))
    array([[[1., 2., 2., 1.]]], dtype=float32)""")
def conv1d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", *, algorithm="auto"):
    return _input_grad(1, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode, algorithm)


@document(INPUT_DOC, nd=2, example=""">>> import numpy as np, fastconv
    >>> w = np.ones((4, 3, 3, 3), np.float32)
    >>> g = np.ones((1, 4, 8, 8), np.float32)
    >>> fastconv.grad.conv2d_input((1, 3, 8, 8), w, g, padding=1).shape
    (1, 3, 8, 8)""")
@_args.keeps_channels_last(2, "grad_output")
def conv2d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", *, algorithm="auto"):
    return _input_grad(2, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode, algorithm)


@document(INPUT_DOC, nd=3, example=""">>> import numpy as np, fastconv
    >>> w = np.ones((2, 1, 3, 3, 3), np.float32)
    >>> g = np.ones((1, 2, 2, 2, 2), np.float32)
    >>> fastconv.grad.conv3d_input((1, 1, 4, 4, 4), w, g).shape
    (1, 1, 4, 4, 4)""")
def conv3d_input(input_shape, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", *, algorithm="auto"):
    return _input_grad(3, input_shape, weight, grad_output, stride, padding, dilation, groups,
                       padding_mode, algorithm)


@document(WEIGHT_DOC, nd=1, example=""">>> import numpy as np, fastconv
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    >>> fastconv.grad.conv1d_weight(x, (1, 1, 2), np.ones((1, 1, 3), np.float32))
    array([[[3., 6.]]], dtype=float32)""")
def conv1d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros", *, algorithm="auto"):
    return _weight_grad(1, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode, algorithm)


@document(WEIGHT_DOC, nd=2, example=""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 3, 8, 8), np.float32)
    >>> g = np.ones((1, 4, 8, 8), np.float32)
    >>> fastconv.grad.conv2d_weight(x, (4, 3, 3, 3), g, padding=1).shape
    (4, 3, 3, 3)""")
def conv2d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros", *, algorithm="auto"):
    return _weight_grad(2, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode, algorithm)


@document(WEIGHT_DOC, nd=3, example=""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 4, 4, 4), np.float32)
    >>> g = np.ones((1, 2, 2, 2, 2), np.float32)
    >>> fastconv.grad.conv3d_weight(x, (2, 1, 3, 3, 3), g).shape
    (2, 1, 3, 3, 3)""")
def conv3d_weight(input, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros", *, algorithm="auto"):
    return _weight_grad(3, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode, algorithm)


@document(BACKWARD_DOC, nd=1, example=""">>> import numpy as np, fastconv
    >>> x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    >>> w = np.ones((1, 1, 2), np.float32)
    >>> fastconv.grad.conv1d_backward(x, w, np.ones((1, 1, 3), np.float32))
    (array([[[1., 2., 2., 1.]]], dtype=float32), array([[[3., 6.]]], dtype=float32))""")
def conv1d_backward(input, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    return _grads(1, input, weight, grad_output, stride, padding, dilation, groups,
                  padding_mode)


@document(BACKWARD_DOC, nd=2, example=""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 8, 16, 16), np.float32)
    >>> w = np.ones((8, 1, 3, 3), np.float32)
    >>> g = np.ones((1, 8, 16, 16), np.float32)
    >>> dx, dw = fastconv.grad.conv2d_backward(x, w, g, padding=1, groups=8)
    >>> dx.shape, dw.shape
    ((1, 8, 16, 16), (8, 1, 3, 3))""")
@_args.keeps_channels_last(2, "grad_output")
def conv2d_backward(input, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    return _grads(2, input, weight, grad_output, stride, padding, dilation, groups,
                  padding_mode)


@document(BACKWARD_DOC, nd=3, example=""">>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 4, 4, 4), np.float32)
    >>> w = np.ones((2, 1, 3, 3, 3), np.float32)
    >>> dx, dw = fastconv.grad.conv3d_backward(x, w, np.ones((1, 2, 2, 2, 2), np.float32))
    >>> dx.shape, dw.shape
    ((1, 1, 4, 4, 4), (2, 1, 3, 3, 3))""")
def conv3d_backward(input, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    return _grads(3, input, weight, grad_output, stride, padding, dilation, groups,
                  padding_mode)


def conv_bias(grad_output):
    """Gradient of any convolution (or transposed convolution) with respect to its bias: the
    output gradient summed over the batch and every spatial axis.

    Parameters
    ----------
    grad_output : array_like, shape (N, C_out, *spatial)

    Returns
    -------
    ndarray, shape (C_out,)

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> fastconv.grad.conv_bias(np.ones((2, 3, 4, 4), np.float32))
    array([32., 32., 32.], dtype=float32)
    """
    g = _args.as_array(grad_output, "grad_output")
    dtype = _args.compute_dtype(grad_output=g)
    if g.ndim < 3:
        raise ValueError(f"grad_output must be at least 3-d (N, C_out, *spatial); got shape "
                         f"{g.shape}")
    return bias_grad_of(g, dtype)
