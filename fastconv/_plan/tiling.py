"""Tiling arithmetic: how one kernel call cuts its work, as pure functions of the problem.

Every number here shapes the work (bands of rows, tiles of positions, blocks of channels,
partial sums), never the result: each output is one complete sum in a fixed order whatever
the split (the exceptions, where a split changes the order of a sum, are said so and never
depend on the thread count). The dispatcher (dispatch.py) calls these once per plan; the
measurements behind the constants are in notes/dispatch.md and notes/phase-grid.md.
"""
import heapq
from functools import lru_cache
from math import prod

import numpy as np

from scipy.fft import next_fast_len

from fastconv._kernels import conv_im2col, conv_packed, conv_phase_grid, conv_winograd
from fastconv._plan.problems import ConvProblem

# The cache budget of one thread's unfolded operand: about half of a 1-2 MiB L2.
L2_TILE_BYTES = 512 * 1024
# the most a col2im band's unfolded columns take (per thread), see input_grad_work_split
COL2IM_BAND_MAX_BYTES = 16 << 20


def kernel_geometry(problem):
    """(stride, padding before, dilation) of `problem` in 3-d, as the kernels take them."""
    unit, zero = (1,) * (3 - problem.ndim), (0,) * (3 - problem.ndim)
    return (unit + problem.stride, zero + tuple(p[0] for p in problem.padding),
            unit + problem.dilation)


def forward_kernel_stride(problem):
    """The forward kernels' 3-d stride (they see every problem as 3-d). Along an axis with one
    output the stride is never applied: they get 1, so that no index product (stride x row
    length) can approach 2**63 for a huge, legal stride."""
    return (1,) * (3 - problem.ndim) + tuple(1 if m == 1 else s for m, s in
                                             zip(problem.out_size, problem.stride))


def forward_geometry(problem):
    """(stride, padding before, dilation) of a forward kernel call on `problem`."""
    _, pad, dilation = kernel_geometry(problem)
    return forward_kernel_stride(problem), pad, dilation


def gemm_band_rows(problem, itemsize):
    """Output rows per im2col band: the unfolded band (K x rows*OW) should stay in L2 (about
    512 KiB), and there should be enough bands to keep up to 16 threads busy, as long as each
    GEMM keeps at least 256 columns. The band never depends on the thread count, so results
    are bit-for-bit the same whatever the number of threads."""
    out_w = problem.out_size[-1]
    rows = prod(problem.out_size[:-1])
    band = max(1, L2_TILE_BYTES // max(1, problem.gemm_depth * out_w * itemsize))
    if problem.pointwise:
        band = max(1, 4096 // out_w)   # no copy: bands only split the work, keep GEMMs wide
    work_items = problem.batch * problem.groups
    while band > 1 and work_items * -(-rows // band) < 16 and (band // 2) * out_w >= 256:
        band = (band + 1) // 2
    return int(min(band, rows))


# The direct kernel over whole planes (CONV_DIRECT_PLANES): a work item's zero-padded stride
# phases of its input rows and its computed sums stay in L1 (Zen 4: 32 KiB). On 112x112
# planes the whole plane (about 100 KiB of both) ran 10% slower than the row kernel; in
# bands of 28 rows, in L1, faster.
DIRECT_PLANES_BYTES = 32 * 1024
# A band re-reads the input rows its kernel reaches below it: bands shorter than this many
# times that reach (a 7x7 kernel on a 1024-wide image fits 1-2 output rows in L1) are left to
# the row kernel.
DIRECT_PLANES_MIN_BAND_REACH = 4


def _direct_planes_bytes(problem, band, itemsize):
    """Bytes of one work item of `band` output rows: its phase rectangles and sums (the
    layout of conv_direct.pyx's planes_layout)."""
    stride, _, dilation = forward_geometry(problem)
    kernel = (1,) * (3 - problem.ndim) + tuple(problem.kernel_size)
    out_w = problem.out_size[-1]
    reach_w = (kernel[2] - 1) * dilation[2] // stride[2]
    reach_h = (kernel[1] - 1) * dilation[1] // stride[1]
    wq = out_w + reach_w
    phases = kernel[0] * prod(min(s, (k - 1) * d + 1) for k, d, s in
                              zip(kernel[1:], dilation[1:], stride[1:]))
    chunk = 64 // itemsize
    sums = -(-band * wq // chunk) * chunk
    phase_size = (band + reach_h) * wq + (sums - band * wq) + reach_w
    return (phases * phase_size + sums) * itemsize


def _direct_planes_reach(problem):
    """(output rows, input rows a band reads below its last) of the planes kernel."""
    if problem.ndim < 2:
        return 1, 0
    stride, _, dilation = forward_geometry(problem)
    return problem.out_size[-2], (problem.kernel_size[-2] - 1) * dilation[1] // stride[1]


def _direct_planes_fitting_band(problem, itemsize):
    out_h, _ = _direct_planes_reach(problem)
    band = out_h
    while band > 1 and _direct_planes_bytes(problem, band, itemsize) > DIRECT_PLANES_BYTES:
        band = -(-band // 2)
    return band


def direct_planes_fit(problem, itemsize):
    """True if bands of the plane that fit DIRECT_PLANES_BYTES are long enough for the
    direct kernel over planes (else the row kernel runs)."""
    out_h, reach = _direct_planes_reach(problem)
    band = _direct_planes_fitting_band(problem, itemsize)
    return _direct_planes_bytes(problem, band, itemsize) <= DIRECT_PLANES_BYTES and \
        band >= min(out_h, DIRECT_PLANES_MIN_BAND_REACH * max(reach, 1))


def direct_planes_band(problem, itemsize, num_threads):
    """Output rows per work item of the direct kernel over planes: the most that fit
    DIRECT_PLANES_BYTES, fewer while the threads would have under 4 items each. The band
    never changes a result (every output sums its taps in one order)."""
    out_h, _ = _direct_planes_reach(problem)
    band = _direct_planes_fitting_band(problem, itemsize)
    depth = problem.out_size[0] if problem.ndim == 3 else 1
    planes = problem.batch * problem.groups * depth
    while band > 1 and planes * -(-out_h // band) < 4 * num_threads:
        band = -(-band // 2)
    return band


def direct_phases_band(problem, itemsize, num_threads):
    """Input rows per work item of the input gradient by stride phases (conv_direct.pyx,
    input_grad_phases): a band whose phase sums and output-gradient rows (about twice its
    input rows) fit DIRECT_PLANES_BYTES, fewer while the threads would have under 4 items
    each; a whole number of strides along H (the kernel rounds it so). The band never
    changes a result."""
    stride, _, _ = forward_geometry(problem)
    in_size = (1,) * (3 - problem.ndim) + tuple(problem.in_size)
    height, width = in_size[1], in_size[2]
    band = max(stride[1], DIRECT_PLANES_BYTES // (2 * width * itemsize) // stride[1]
               * stride[1])
    band = min(band, -(-height // stride[1]) * stride[1])
    planes = problem.batch * problem.groups * in_size[0]
    while band > stride[1] and planes * -(-height // band) < 4 * num_threads:
        band = max(stride[1], -(-band // 2 // stride[1]) * stride[1])
    return band


# Whole small planes are filled, computed and stored a few at a time (conv_direct.pyx,
# planes_item), so that no step reads what the step before has only just stored. MobileNetV2
# at batch 8 (ms, Zen 4, 2 threads, one plane an item -> 8): 960 channels 3x3 on 7x7 0.33 ->
# 0.26; 576 on 14x14, stride 2, 0.32 -> 0.27; 384 on 14x14 and 192 on 28x28: no change.
DIRECT_PLANES_PER_ITEM_MAX = 8


def direct_planes_per_item(problem, itemsize, band, num_threads):
    """Input planes per work item of the direct kernel over planes: as many whole planes (one
    filter each) as fit DIRECT_PLANES_BYTES together, up to DIRECT_PLANES_PER_ITEM_MAX, while
    each thread keeps 4 items or more; 1 for bands, 3-d, or several filters a plane."""
    out_h, _ = _direct_planes_reach(problem)
    depth = problem.out_size[0] if problem.ndim == 3 else 1
    if band < out_h or depth > 1 or problem.out_per_group != 1:
        return 1
    planes = problem.batch * problem.groups
    fit = DIRECT_PLANES_BYTES // _direct_planes_bytes(problem, band, itemsize)
    return int(max(1, min(DIRECT_PLANES_PER_ITEM_MAX, fit, planes // (4 * num_threads))))


def packed_tile(problem, itemsize):
    """(tile shape, MR, NR) of the packed micro-kernel's register tile for this problem: the
    shape that wastes least on its output channels per group."""
    double = itemsize == 8
    shape = conv_packed.tile_shape(problem.out_per_group, double)
    mr, nr = conv_packed.tile_size(double, shape)
    return shape, mr, nr


def wide_tile(itemsize):
    """(MR, NR) of the micro-kernel's wide register tile, the one the gradients use."""
    return conv_packed.tile_size(itemsize == 8, 0)


# The packed algorithm splits a call until it has this many work items per thread (at most
# 16 in all). Splitting a plane's output channels means unfolding each plane into panels the
# blocks share, with a fork and join of the threads per (image, group): at batch 8 on 2
# threads that cost 2-4x on MobileNetV2's 1x1 layers (ms, Zen 4, shared -> not: 384 -> 64 on
# 14x14 2.76 -> 0.65, 960 -> 160 on 7x7 3.24 -> 1.14); the images alone were items enough.
PACKED_ITEMS_PER_THREAD = 4


def packed_partition(problem, itemsize, mr, nr, num_threads, stacked=False):
    """How the packed algorithm splits one call into work items: (position panels per tile,
    weight panels per channel block). A tile's unfolded input (K x panels * nr) should stay in
    about half of L2; then tiles and channel blocks are split until there are
    PACKED_ITEMS_PER_THREAD work items per thread (at most 16). Every output is computed the
    same way whatever the split, so results do not depend on it (nor on the thread count).
    `stacked`: the batch's positions end to end (CONV_PACKED_STACKED), one run per group."""
    positions = prod(problem.out_size) * (problem.batch if stacked else 1)
    per_panel = problem.gemm_depth * nr * itemsize
    tile_panels = max(1, min(L2_TILE_BYTES // per_panel, -(-positions // nr)))
    channel_panels = -(-problem.out_per_group // mr)
    base_items = problem.groups * (1 if stacked else problem.batch)
    wanted = min(16, PACKED_ITEMS_PER_THREAD * num_threads)

    def items():
        return (base_items * -(-positions // (tile_panels * nr))
                * -(-(-(-problem.out_per_group // mr)) // channel_panels))
    while items() < wanted and (tile_panels > 1 or channel_panels > 1):
        # halve whichever keeps each GEMM squarer: positions first while the tile is wide
        if tile_panels >= channel_panels and tile_panels > 1:
            tile_panels = (tile_panels + 1) // 2
        else:
            channel_panels = (channel_panels + 1) // 2
    tile_panels = balanced_tile_panels(positions, nr, tile_panels, base_items,
                                       -(-problem.out_per_group // mr), channel_panels,
                                       num_threads)
    return int(tile_panels), int(channel_panels)


# What a work item costs beyond its multiply-adds (its weight panels brought back into L1,
# its loop's fork), per weight panel, in position panels' worth of multiply-adds: of two
# about equally balanced splits the one with fewer items wins.
ITEM_OVERHEAD_PANELS = 0.25
# With this many work items per thread a short last tile is at most a small share of any
# thread's work: the tile stays as sized (and planning stays cheap for huge batches).
BALANCED_ITEMS_PER_THREAD = 32


def dynamic_makespan(costs, num_threads):
    """When the last of `num_threads` threads finishes, the items of `costs` handed out in
    order to whichever thread is free first (OpenMP's dynamic schedule)."""
    free = [0.0] * num_threads
    for cost in costs:
        heapq.heapreplace(free, free[0] + cost)
    return max(free)


def balanced_tile_panels(positions, nr, tile_panels, base_items, m_panels, channel_panels,
                         num_threads):
    """The tile of at most `tile_panels` (and at least half that) position panels that
    finishes first when `base_items` runs of `positions` positions, cut into tiles and their
    `m_panels` weight panels into blocks of `channel_panels`, are shared by `num_threads`
    threads. The last tile of a run is short: 3136 positions in tiles of 5 panels of 48 are
    13 full tiles and a third of a panel, and two threads split the 14 items 7 full against
    6 and a scrap (35 panels against 30.3); tiles of 4 split it 33.3 against 32."""
    blocks = [min(channel_panels, m_panels - b) for b in range(0, m_panels, channel_panels)]
    items = base_items * -(-positions // (tile_panels * nr)) * len(blocks)
    if num_threads <= 1 or items >= BALANCED_ITEMS_PER_THREAD * num_threads:
        return tile_panels

    def makespan(panels):
        tile = panels * nr
        tiles = [min(tile, positions - p) / nr for p in range(0, positions, tile)]
        costs = [(t + ITEM_OVERHEAD_PANELS) * b for t in tiles for b in blocks]
        return dynamic_makespan(costs * base_items, num_threads)

    candidates = range(tile_panels, max(1, tile_panels // 2) - 1, -1)
    return min(candidates, key=lambda panels: (makespan(panels), -panels))


# A 1x1 layer's tile of one image's positions wastes the rest of its last panel: where that
# is more than this share of the plane, the batch's positions are stacked end to end
# (CONV_PACKED_STACKED) instead. On AMD Zen 3 (AVX2: 16-position panels), 2 threads, batch
# 8, MobileNetV2's and ResNet-50's 1x1 layers on 14x14 (6% of the last panel empty), ms, per
# image -> stacked: 384 -> 64 1.11 -> 0.79, 576 -> 96 2.12 -> 1.82, 256 -> 1024 6.31 -> 5.65,
# 1024 -> 256 6.11 -> 5.54, but 64 -> 384 0.80 -> 0.87 and 96 -> 576 1.47 -> 1.62; with no
# waste it lost (128 -> 128 on 16x16 0.66 -> 0.69; 32 -> 192 on 28x28 0.82 -> 1.02).
STACKED_MIN_WASTE = 0.05
# Deep 1x1 layers run stacked whatever their planes: the stacked kernel's products go to a
# scratch tile a few panels wide and are copied out after, where the per-image kernel
# stores its tiles into output rows a plane apart; the copy costs little against K
# multiply-adds per output. AMD Zen 4 (AVX-512), 2 threads, ms, per image -> stacked, no
# panel wasted: 512 -> 128 on 28x28, batch 8, 6.11 -> 5.06; 256 -> 64 on 56x56, batch 8,
# 7.22 -> 6.34; 256 -> 512 on 28x28, batch 1, 1.27 -> 1.09; 2048 -> 512 on 7x7, batch 1,
# 1.01 -> 0.75; 192 -> 32 on 28x28 0.59 -> 0.56; below, the copy shows (128 -> 512 on 28x28,
# batch 8, 3.98 -> 4.49; 64 -> 256 on 56x56 4.96 -> 5.64; 128 -> 128 on 56x56, batch 1,
# 0.62 -> 0.65).
STACKED_MIN_DEPTH = 192


def packed_stacks_images(problem, nr):
    """True if a pointwise `problem` should run on the stacked positions: at least
    STACKED_MIN_DEPTH input channels per group, or more than one image and a plane whose
    last panel of nr positions would be more than STACKED_MIN_WASTE empty."""
    if not problem.pointwise:
        return False
    if problem.gemm_depth >= STACKED_MIN_DEPTH:
        return True
    if problem.batch < 2:
        return False
    plane = prod(problem.out_size)
    return (-(-plane // nr) * nr - plane) > STACKED_MIN_WASTE * plane


# The stride-phase grid (notes/phase-grid.md): one zero-padded, stride-phase-split copy of each
# (image, group), from which every tap's operand row is one contiguous run, at the price of
# computing a few extended columns per output row. These bound it.
PHASE_GRID_MAX_BYTES = 8 << 20     # the per-thread copy of one (image, group)
PHASE_GRID_MAX_EXTRA = 1.5         # extended positions per output position


def phase_grid_shape(problem):
    """(extended positions, buffer elements) of the phase grid, from the kernel's own code."""
    unit = (1,) * (3 - problem.ndim)
    return conv_phase_grid.grid_shape(
        (problem.batch, problem.in_channels) + unit + problem.in_size,
        (problem.out_channels, problem.in_per_group) + unit + problem.kernel_size,
        (problem.batch, problem.out_channels) + unit + problem.out_size,
        forward_kernel_stride(problem), (0,) * 3, unit + problem.dilation, problem.groups)


def phase_grid_fits(problem, itemsize):
    """True if the phase grid of one (image, group) stays small and its extended grid adds
    little work, and there are taps to unfold (a 1x1 convolution has nothing to unfold: the
    copy would be pure cost)."""
    if problem.pointwise:
        return False
    positions, elements = phase_grid_shape(problem)
    return (elements * itemsize <= PHASE_GRID_MAX_BYTES
            and positions <= PHASE_GRID_MAX_EXTRA * prod(problem.out_size))


def phase_grid_tile(problem, itemsize, nr):
    """Position panels per tile of the phase-grid path: the tile's panels (K x tile) in about
    half of L2, as for the segment path."""
    positions = phase_grid_shape(problem)[0]
    per_panel = problem.gemm_depth * nr * itemsize
    return int(max(1, min(L2_TILE_BYTES // per_panel, -(-positions // nr))))


def weight_grad_phase_images(problem, itemsize, num_threads):
    """Images per work unit of the weight gradient on the phase grid. A unit's images sit side
    by side in one grid, enough of them for dot products of about 1024 positions (shorter
    ones pay for reducing their register tiles; longer ones only spill the grid out of L2),
    at most 512 KiB of grid, and at least two units per thread. Measured on the small CNN's
    weight gradients (Zen 5, 2 threads, us, 1/2/4/8/16 images per unit): 28x28 planes
    74/76/83/102/145, 15x15 (stride 2) 396/317/359/350/308, 8x8 493/343/262/215/200."""
    if problem.batch == 0:   # an empty batch is planned, never run
        return 1
    positions, elements = phase_grid_shape(problem)
    images = max(1, min(-(-1024 // positions), problem.batch // (2 * num_threads),
                        L2_TILE_BYTES // (elements * itemsize)))
    # as many units as a multiple of the threads, so that no thread waits for a last one
    units = num_threads * -(-problem.batch // (images * num_threads))
    return int(-(-problem.batch // units))


def input_grad_work_split(problem, itemsize, num_threads):
    """(band_rows, channel_chunks) for the col2im path.

    A work item owns whole input channels of one (image, group) so that the col2im scatter never
    races; when images x groups are fewer than the threads (batch 1), each group's input
    channels are split into chunks, one per thread: smaller chunks make thinner GEMMs (measured
    on conv_transpose_2x2_s2 with 2 threads: 2 chunks 0.32 ms, 4 chunks 0.35 ms, 8 0.42 ms).
    Bands keep the unfolded columns of a chunk in L2, unless that makes a band narrower than
    the output gradient has channels: each band reads the chunk's whole W_g^T (chunk depth x
    C_out/groups), so on small planes with many channels that read, repeated per band, was the
    call. Then a band takes at least C_out/groups columns (its unfolded columns no more than
    the weights it saves reading again), up to COL2IM_BAND_MAX_BYTES. Measured on Zen 4, 2
    threads, float32, col2im, ms, L2 bands -> wider: 512 -> 512 3x3 on 14x14, batch 1, 10.0 ->
    6.6; 1024 <- 256 on 14x14 10.3 -> 6.2; 256 on 32x32, batch 2, 23.7 -> 15.1; 512 on 8x8,
    batch 4, 10.3 -> 8.2; 3-d 256 <- 128 on 8x16x16 61 -> 45; 1.0-1.1 on the rest of a grid
    of 2-d, 3-d, 1-d, strided and transposed layers (planes of 28x28 and more, 64-128
    channels)."""
    items = max(1, problem.batch * problem.groups)   # an empty batch is planned, never run
    chunks = 1
    if items < num_threads:
        chunks = min(problem.in_per_group, -(-num_threads // items))
    chunk_depth = -(-problem.in_per_group // chunks) * prod(problem.kernel_size)
    out_w = problem.out_size[-1]
    rows = prod(problem.out_size[:-1])
    if problem.pointwise:
        return int(min(max(1, 4096 // out_w), rows)), int(chunks)
    row_bytes = max(1, chunk_depth * out_w * itemsize)
    band = max(1, L2_TILE_BYTES // row_bytes)
    wide = min(-(-problem.out_per_group // out_w), COL2IM_BAND_MAX_BYTES // row_bytes)
    return int(min(max(band, wide), rows)), int(chunks)


def col2im_weight_in_place(problem, itemsize, num_threads):
    """True if the col2im input gradient on fastconv's micro-kernel (INPUT_GRAD_COL2IM_PACKED)
    multiplies by W_g^T where it lies, as planned for `num_threads`: no packed copy of the
    weights, whose serial packing was most of a batch-1 call on small planes."""
    band, chunks = input_grad_work_split(problem, itemsize, num_threads)
    return not problem.pointwise and conv_im2col.input_grad_reads_weight_in_place(
        problem.in_per_group, prod(problem.kernel_size), chunks,
        band * problem.out_size[-1], itemsize == 8)


def weight_grad_chunks(problem, num_threads, band_rows):
    """Partial sums for the weight gradient: up to four per thread, so that dynamic scheduling
    can balance a busy core, but a whole number per thread and each of at least four work
    items: with fewer, chunks of one or two items left a thread idle at the end and added
    buffers to sum (a batch-1 56x56 layer's 14 bands, Zen 4, 2 threads: in 8 chunks 1.79 ms,
    in 2 chunks 1.52 ms). No more than the work items, and at most 64 MiB of buffers."""
    bands = -(-prod(problem.out_size[:-1]) // band_rows)
    items = problem.batch * problem.groups * bands
    weight_bytes = 8 * problem.out_channels * problem.gemm_depth
    by_memory = max(1, (64 << 20) // weight_bytes)
    per_thread = max(1, min(4, items // (4 * num_threads)))
    return int(max(1, min(items, per_thread * num_threads, by_memory)))


def weight_grad_phase_chunks(problem, images_per_unit, num_threads):
    """Partial sums of the weight gradient on the phase grid: one per work unit (a block of
    images of one group), at most four per thread."""
    units = -(-problem.batch // images_per_unit) * problem.groups
    return int(max(1, min(units, 4 * num_threads)))


# A call with more multiply-adds than this runs as several kernel calls (blocks of images, or
# of one image's output channels): a kernel runs without the GIL and cannot be interrupted,
# but Python raises KeyboardInterrupt between two calls, so Ctrl-C stops a long convolution
# within one piece. 2**33 multiply-adds take about 0.05-0.5 s on two cores; a smaller piece costs
# speed, because every piece unfolds its input again (2**28 made conv3d_video, 1.4e9
# multiply-adds in one image, run as 8 pieces and 3x slower). Pieces change no result: every
# output is one complete sum either way.
INTERRUPT_WORK = 1 << 33


def interruptible_pieces(problem, work=None):
    """(images, output channels) slices that cover `problem`, each of about `work`
    (INTERRUPT_WORK) multiply-adds or less where the problem can be cut there (whole images
    first; within one image, whole groups, or blocks of 8 output channels for one group)."""
    work = INTERRUPT_WORK if work is None else work
    batch, c_out = problem.batch, problem.out_channels
    if problem.multiply_adds <= work or batch == 0:
        return [(slice(0, batch), slice(0, c_out))]
    per_image = problem.multiply_adds // batch
    if per_image <= work:
        step = work // per_image
        return [(slice(n, min(n + step, batch)), slice(0, c_out)) for n in range(0, batch, step)]
    unit = problem.out_per_group if problem.groups > 1 else min(8, c_out)
    step = unit * max(1, work // (per_image * unit // c_out or 1))
    return [(slice(n, n + 1), slice(c, min(c + step, c_out)))
            for n in range(batch) for c in range(0, c_out, step)]


def piece_problem(problem, images, channels):
    """The zero-padded problem of one piece: `images` of the batch and the output `channels`
    (whole groups, or output channels of a single group)."""
    batch = len(range(problem.batch)[images])
    if channels == slice(0, problem.out_channels):
        return problem.with_batch(batch)
    groups = max(1, (channels.stop - channels.start) // problem.out_per_group) \
        if problem.groups > 1 else 1
    c_in = groups * problem.in_per_group if problem.groups > 1 else problem.in_channels
    return ConvProblem(batch, c_in, channels.stop - channels.start, groups, problem.in_size,
                       problem.kernel_size, problem.stride, problem.padding, problem.dilation)


def piece_input_channels(problem, channels):
    """The input channels a piece of output `channels` reads (whole groups, or all)."""
    if problem.groups == 1 or channels == slice(0, problem.out_channels):
        return slice(0, problem.in_channels)
    first_group = channels.start // problem.out_per_group
    groups = max(1, (channels.stop - channels.start) // problem.out_per_group)
    start = first_group * problem.in_per_group
    return slice(start, start + groups * problem.in_per_group)


def phase_taps(kernel, stride):
    """Per stride phase r < stride of one axis, the kernel taps that reach the input pixels
    of that phase (those at stride * q + r - padding), last first: the taps of the phase's
    stride-1 convolution of the output gradient."""
    return [list(range(r, kernel, stride))[::-1] for r in range(stride)]


@lru_cache(maxsize=512)
def stride_phase_geometry(kernel, stride, padding, in_size, out_size):
    """{(rh, rw): (first input pixel, taps, padding of the phase's stride-1 convolution)} of
    a strided 2-d layer's stride phases that hold input pixels: the input pixels (sh * qh +
    rh - ph, sw * qw + rw - pw) are reached only by the taps kh = rh, rh + sh, ... (likewise
    kw) from output pixels qh, qh - 1, ..., so each phase's input gradient is a stride-1
    convolution of the output gradient by those taps, reversed and transposed (dilation 1).
    None where a phase would need negative padding (padding past what its taps reach)."""
    axes = []
    for k, s, (before, _), size, outs in zip(kernel, stride, padding, in_size, out_size):
        phases = {}
        for r, taps in enumerate(phase_taps(k, s)):
            q0 = -(-(before - r) // s)          # the first output row of this phase's pixels
            first = s * q0 + r - before
            count = len(range(first, size, s))
            if count == 0:
                continue
            left = len(taps) - 1 - q0
            right = count - outs - left + len(taps) - 1
            if taps and (left < 0 or right < 0):
                return None
            phases[r] = (first, len(taps), (left, right))
        axes.append(phases)
    return {(rh, rw): ((fh, fw), (th, tw), (ph, pw))
            for rh, (fh, th, ph) in axes[0].items() for rw, (fw, tw, pw) in axes[1].items()}


def subpixel_phases(problem):
    """The input gradient of `problem` (a transposed convolution) as stride-1 convolutions.

    Along an axis with stride s, input position i = o * s - p + k * d receives from the taps
    k of one residue class: for phase f = (i + p) mod s those with k = f + m * s. So the
    input positions i = i0 + q * s of phase f are a stride-1 correlation of the output
    gradient with that phase's taps, reversed (d = 1; with s = 1, any d, there is one phase:
    the whole kernel, reversed, dilated). Returns, per axis, a list of phases
    (start i0, count, taps, padding before, padding after, phase); padding may be negative
    (a crop of the gradient). None for a stride and a dilation on one axis."""
    per_axis = []
    for n_in, n_out, k, s, (p, _), d in zip(problem.in_size, problem.out_size,
                                            problem.kernel_size, problem.stride,
                                            problem.padding, problem.dilation):
        if s > 1 and d > 1:
            return None
        phases = []
        for f in range(s):
            taps = -(-(k - f) // s) if f < k else 0            # k = f, f + s, ... < kernel
            q_lo = -((f - p) // s)                              # ceil((p - f) / s)
            q_hi = (n_in - 1 + p - f) // s
            count = q_hi - q_lo + 1
            if count <= 0:
                continue
            start = q_lo * s + f - p
            span = (taps - 1) * d + 1 if taps else 0
            before = span - 1 - q_lo if s > 1 else (k - 1) * d - p
            after = count + span - 1 - n_out - before
            phases.append((start, count, taps, before, after, f))
        per_axis.append(phases)
    return per_axis


def subpixel_plan(problem):
    """The stride-1 convolutions (one per combination of phases along the axes) that make up
    the input gradient of `problem`, as (output slices, tap slices, gradient slices, padding,
    dilation) tuples; phases that no tap reaches are left out (their gradient is zero).
    None when some phase would need more cropping than the gradient has (use col2im)."""
    per_axis = subpixel_phases(problem)
    if per_axis is None:
        return None
    plan = []
    for combo in np.ndindex(*[len(p) for p in per_axis]):
        phases = [per_axis[a][i] for a, i in enumerate(combo)]
        if any(taps == 0 for _, _, taps, _, _, _ in phases):
            continue
        out_index, taps_index, g_index, padding = [], [], [], []
        for (start, count, taps, before, after, f), n_out, s, d in zip(
                phases, problem.out_size, problem.stride, problem.dilation):
            out_index.append(slice(start, start + count * s, s))
            taps_index.append(slice(f, None, s) if s > 1 else slice(None))
            lo, hi = max(0, -before), n_out + min(0, after)
            if hi - lo <= 0:
                return None
            g_index.append(slice(lo, hi))
            padding.append((max(0, before), max(0, after)))
            span = ((taps - 1) * (d if s == 1 else 1)) + 1
            if hi - lo + padding[-1][0] + padding[-1][1] < span:
                return None
        dilation = tuple(d if s == 1 else 1 for s, d in zip(problem.stride, problem.dilation))
        plan.append((tuple(out_index), tuple(taps_index), tuple(g_index), tuple(padding),
                     dilation))
    return plan


# Winograd's super-block of tiles: its transformed inputs (36 x tiles x C_in/groups) and
# products (36 x tiles x C_out/groups), shared by the threads, should stay in the caches.
# Measured on Zen 4, 2 threads, 64 -> 64 channels on 56x56: 2 panels 0.69 ms, 4 (this budget)
# 0.64, 8 0.64.
WINOGRAD_BLOCK_BYTES = 4 << 20


def winograd_tiles(problem):
    """Winograd's output tiles over the batch: 4x4 of every output plane (of every output
    depth, in 3-d); in 1-d, 4 outputs of one of the dilation's phases."""
    if problem.ndim == 1:
        (length,), (dilation,) = problem.out_size, problem.dilation
        return problem.batch * dilation * -(-(-(-length // dilation)) // 4)
    *depth, height, width = problem.out_size
    return problem.batch * prod(depth) * -(-height // 4) * -(-width // 4)


def winograd_elements(problem):
    """Transformed elements per Winograd tile: 36 for F(4x4, 3x3), 6 for 1-d F(4, 3)."""
    return 6 if problem.ndim == 1 else 36


def winograd_depth(problem):
    """The GEMM depth of Winograd's products per group: input channels x depth taps."""
    return problem.in_per_group * prod(problem.kernel_size[:-2])


def winograd_tile_panels(problem, itemsize):
    """Panels (of NR tiles) per Winograd super-block. The split never changes a result:
    every tile's sums run over the channels in the same order whatever the block."""
    _, nr, _ = conv_winograd.tile_geometry(itemsize == 8)
    per_tile = winograd_elements(problem) * (winograd_depth(problem) + problem.out_per_group) \
        * itemsize
    panels = max(1, WINOGRAD_BLOCK_BYTES // (per_tile * nr))
    return int(min(panels, -(-winograd_tiles(problem) // nr)))


# Each thread running whole super-blocks alone (one parallel region per call, no barrier
# between the steps, each block's transforms and products in the thread's own caches) pays
# where there are many tiles and few channels: every thread reads all the transformed
# weights per super-block. On a quiet machine both splits run alike; where one core is
# slowed (these shared VMs, or another runtime's threads spinning beside ours) the shared
# split waits for it at every step. Zen 4, 2 threads, float32 batch 8, a busy loop on the
# second core, shared -> own (ms): 64 -> 64 on 56x56 14.1-14.8 -> 8.1-8.5 (quiet 6.2-6.5 ->
# 5.9-6.6); 128 -> 128 on 28x28 9.3 -> 6.5 (quiet 4.0 -> 3.8); TCN 128 -> 128 on 4000
# (dilation 4) 26.7-30.3 -> 20.0-24.3 (quiet 12.3 -> 12.5). With few tiles for all those
# weights own blocks lose, quiet: 256 on 14x14 4.4 -> 6.0, 512 on 7x7 5.3 -> 9.4.
WINOGRAD_THREAD_BLOCK_BYTES = 2 << 20
WINOGRAD_THREAD_BLOCKS = 4     # at least this many super-blocks per thread
# ... or transformed weights this small (a thread rereads them from its own L2 per block)
# and a few vectors of tiles per thread: batch 1, 64 -> 64 on 56x56 (196 tiles, 0.6 MB of
# weights; Intel Xeon, 2 threads, float32, ms) shared 0.79-0.85 -> own 0.62-0.68 alone, and
# inside ResNet-50's inference at batch 1 its three layers 3.9 -> 3.0 (with 128 -> 128 on
# 28x28, 2.4 MB, also own: 3.8 -> 3.9, so not those).
WINOGRAD_THREAD_WEIGHT_BYTES = 1 << 20


def winograd_blocks(problem, itemsize, threads):
    """(panels per super-block, whether each thread runs whole super-blocks alone)."""
    _, nr, lanes = conv_winograd.tile_geometry(itemsize == 8)
    per_tile = winograd_elements(problem) * (winograd_depth(problem) + problem.out_per_group) \
        * itemsize
    tiles = winograd_tiles(problem)
    weight_bytes = winograd_elements(problem) * winograd_depth(problem) \
        * problem.out_per_group * itemsize
    own = WINOGRAD_THREAD_BLOCK_BYTES // (per_tile * nr)
    if own > 1:
        # the weights, reread per block, share the budget: 64 -> 64 channels (0.6 MB of
        # them), 1 panel against 2 (Intel Xeon, 2 MB L2 a core, 2 threads, ms): batch 8 on
        # 56x56 4.01 / 4.35, batch 1 0.65 / 0.71
        own = max(1, (WINOGRAD_THREAD_BLOCK_BYTES - weight_bytes) // (per_tile * nr))
    if threads > 1 and own >= 1 and (
            tiles >= WINOGRAD_THREAD_BLOCKS * threads * own * nr
            or (weight_bytes <= WINOGRAD_THREAD_WEIGHT_BYTES
                and tiles >= 2 * threads * lanes)):
        return int(own), True
    return winograd_tile_panels(problem, itemsize), False


# Up to this many tiles a call is one block of V one vector row wide, and the weights are
# transformed as the GEMM goes (conv_winograd's fused_multiply) wherever they are not kept
# transformed: in training (changed every step) and in the input gradient (the reversed
# weights). Intel Xeon, 2 threads, float32, ms, batch 1 but where said, kept transform /
# transformed per call / fused: 256 -> 256 on 14x14 (16 tiles) 0.46 / 0.87 / 0.63-0.68,
# 512 -> 512 on 14x14 1.5 / 3.3 / 2.45, 128 -> 128 on 14x14 0.17 / 0.28 / 0.23, 512 on 7x7
# at batch 4 1.6 / 3.4 / 2.47; past one vector of tiles every weight panel rereads a wider
# V: 256 on 14x14 at batch 2 (32 tiles) 0.81 / 1.28 / 1.29, 128 on 28x28 (49) 0.52 / 0.61
# / 0.67.
WINOGRAD_FUSED_MAX_TILES = 16


def winograd_fused_panels(problem, itemsize):
    """The panels of tiles of the one super-block in which Winograd transforms `problem`'s
    weights as its GEMM goes where they are not kept transformed (2-d or 3-d, at most
    WINOGRAD_FUSED_MAX_TILES tiles), else 0."""
    _, nr, _ = conv_winograd.tile_geometry(itemsize == 8)
    tiles = winograd_tiles(problem)
    if problem.ndim == 1 or tiles > WINOGRAD_FUSED_MAX_TILES:
        return 0
    return -(-tiles // nr)


def fft_shape(problem):
    """The FFT convolution's transform length along each spatial axis of `problem`: a fast
    length (scipy.fft.next_fast_len) of at least the size plus the wider of the axis's two
    paddings, the dilated kernel's extent, and one past the last output's position. A
    circular cross-correlation of that length equals the zero-padded one at every output
    position: the padding on either side lands in the zeros past the data."""
    last = problem.ndim - 1
    return tuple(
        next_fast_len(max(n + max(lo, hi), (k - 1) * d + 1, (o - 1) * s + 1),
                      real=(axis == last))
        for axis, (n, (lo, hi), k, d, o, s) in enumerate(zip(
            problem.in_size, problem.padding, problem.kernel_size, problem.dilation,
            problem.out_size, problem.stride)))


def spectrum_shape(shape):
    """The shape of a real FFT of a signal of `shape` (the last axis halved, plus one)."""
    return shape[:-1] + (shape[-1] // 2 + 1,)

