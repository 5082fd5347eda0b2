"""fastconv past one machine: the operators on ``dask.array`` inputs, on Dask's own schedulers.

Each output block is computed by fastconv from one input block plus exactly the halo its
receptive field needs, taken from the neighbouring blocks with ``dask.array.overlap`` (the
``map_overlap`` approach dask-image uses for SciPy's filters):

1. the padding is applied once to the whole array with ``dask.array.pad`` in the operator's
   mode, so border rules act only at the array's true borders;
2. along each spatial axis the input is rechunked so that every block starts at a multiple of
   the stride (block ``j`` owns the output positions whose window starts inside it), and a
   block smaller than the halo its left neighbour needs is merged with the next one, with a
   warning;
3. every block gets its right-hand halo (``span - stride`` elements, ``span = dilation x
   (kernel - 1) + 1``) and fastconv computes a *valid* operation on it.

The blocks therefore see exactly the windows of the in-memory call, in the same order: with a
deterministic algorithm (``algorithm='packed'`` or ``'direct'``) the result is bit-for-bit the
in-memory result, for every chunking. Channels are never split (they are rechunked to one).

Threads: a task uses ``threads_per_task()`` fastconv threads, so that concurrent tasks x
threads never exceed the cores (Dask's distributed workers already set OMP_NUM_THREADS=1).

Install with ``pip install "fastconv[dask]"``.
"""
import functools
import math
import multiprocessing
import threading
import warnings
from typing import NamedTuple, Tuple

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as err:  # pragma: no cover - exercised only without dask
    raise ImportError("fastconv.dask needs Dask; install the extra: "
                      "pip install \"fastconv[dask]\"") from err

import fastconv
from fastconv import operators, planning

__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "conv1d_weight_grad", "conv2d_weight_grad", "conv3d_weight_grad",
           "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "interpolate", "pool_output_size", "threads_per_task", "HaloRechunkWarning"]

_NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                   "circular": "wrap"}


class HaloRechunkWarning(UserWarning):
    """A chunk was smaller than the halo its neighbour needs and was merged with the next."""


# ---------------------------------------------------------------------------------------------
# Threads per task


class _TaskThreads:
    """Holds fastconv's thread count at the per-task value while any task of this process runs.

    ``fastconv.num_threads`` is process-wide: nested per-task enter/exit from concurrent
    threads would restore the count while another task still runs, so the first task in sets
    it and the last one out restores it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None

    def __call__(self, n):
        self._n = n
        return self

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._saved = fastconv.set_num_threads(self._n)
            self._depth += 1

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                fastconv.set_num_threads(self._saved)
        return False


_task_threads = _TaskThreads()


def threads_per_task():
    """fastconv threads for one Dask task running here, so that tasks x threads <= cores.

    - in a ``dask.distributed`` worker: the process's count (Dask's nanny sets
      OMP_NUM_THREADS=1, which fastconv honours) divided by the worker's threads;
    - in the synchronous scheduler (the main thread of the main process): every core;
    - in the threads or processes scheduler: the cores divided by the pool size (Dask's
      ``num_workers`` setting, else its default, the CPU count).

    Examples
    --------
    >>> import fastconv.dask
    >>> fastconv.dask.threads_per_task() >= 1
    True
    """
    cores = fastconv.get_num_threads() if _task_threads._depth == 0 else _task_threads._saved
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        worker = None
    if worker is not None:
        return max(1, cores // max(1, worker.state.nthreads))
    if threading.current_thread() is threading.main_thread() \
            and multiprocessing.parent_process() is None:
        return cores
    workers = dask.config.get("num_workers", None) or dask.system.CPU_COUNT
    return max(1, cores // workers)


def _with_task_threads(fn, *args, **kwargs):
    with _task_threads(threads_per_task()):
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Geometry along one axis


class AxisPlan(NamedTuple):
    """How one spatial axis is cut: input blocks (before their halo), halo, output blocks, and
    the zeros the kernel adds at the array's true borders (first and last block only)."""
    in_chunks: Tuple[int, ...]
    halo_before: int
    halo_after: int
    out_chunks: Tuple[int, ...]
    pad_before: int = 0
    pad_after: int = 0


def _boundaries(chunks):
    return np.cumsum((0,) + tuple(chunks)).tolist()


def _sliding_plan(chunks, offset, used, out_size, span, stride, axis, zero_pad=None):
    """Plan for a sliding-window operator over a padded axis of length >= `used`.

    `chunks` are the input's chunks, `offset` the padding added in front (so the user's chunk
    boundaries sit at `offset + boundary` in padded coordinates). Output block j owns the
    windows starting in input block j; its input block starts at a multiple of the stride.

    With ``zero_pad=(before, size)`` the zeros are not materialized: the first and last blocks
    ask the kernel for them, so the plan's chunks are in the unpadded array of length `size`
    (None if that is impossible: the windows reach no input at all).
    """
    halo = max(span - stride, 0)
    starts = sorted({math.ceil((b + offset) / stride) for b in _boundaries(chunks)[1:-1]})
    cuts = [0] + [o for o in starts if 0 < o < out_size] + [out_size]
    counts = [b - a for a, b in zip(cuts[:-1], cuts[1:])]
    merged = _merge_small(counts, lambda c: c * stride, halo, axis)

    def padded_chunks(counts):
        return [c * stride for c in counts[:-1]] + [(counts[-1] - 1) * stride + span]

    if zero_pad is None:
        in_chunks = padded_chunks(merged)
        assert sum(in_chunks) == used
        return AxisPlan(tuple(in_chunks), 0, halo, tuple(merged))
    before, size = zero_pad
    after = max(used - before - size, 0)
    while True:
        in_chunks = padded_chunks(merged)
        in_chunks[0] -= before
        in_chunks[-1] -= after
        if len(merged) == 1:
            if in_chunks[0] < 1:
                return None
            break
        # the border blocks lose their zeros: each must still hold its neighbour's halo
        if in_chunks[0] < max(halo, 1):
            merged[0:2] = [merged[0] + merged[1]]
        elif in_chunks[-1] < max(halo, 1):
            merged[-2:] = [merged[-2] + merged[-1]]
        else:
            break
    return AxisPlan(tuple(in_chunks), 0, halo, tuple(merged), before, after)


def _merge_small(counts, in_length, halo, axis):
    """Merge output blocks whose input block is shorter than `halo` with the next one: a
    block's halo comes from its neighbour only (dask's overlap reaches one block)."""
    merged = list(counts)
    changed = False
    j = 0
    while j < len(merged) - 1:
        if in_length(merged[j]) < halo:
            merged[j:j + 2] = [merged[j] + merged[j + 1]]
            changed = True
        else:
            j += 1
    if changed:
        warnings.warn(f"spatial axis {axis}: chunks smaller than the halo ({halo} elements) "
                      f"were merged with their neighbour; output chunks are now "
                      f"{tuple(merged)}", HaloRechunkWarning, stacklevel=5)
    return merged


def _block_index(block_info):
    return block_info[0]["chunk-location"]


def _dask_input(x, nd, name):
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if x.ndim != nd + 2:
        dims = {1: "L", 2: "H, W", 3: "D, H, W"}[nd]
        raise ValueError(f"{name} must be {nd + 2}-d (N, C, {dims}); got shape {x.shape}")
    if len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})  # channels are never split
    return x


def _compute_dtype(x, *arrays):
    return planning.compute_dtype(np.empty(0, x.dtype), *arrays)


def _with_halo(x, plans):
    """x cut as the plans say, every block extended by its halo from the neighbouring blocks
    (the map_overlap pattern; see _halo_map)."""
    x, depth = _halo_depth(x, plans)
    if all(d == (0, 0) for d in depth):
        return x
    extended = list(x.chunks)
    for a, (before, after) in enumerate(depth):
        axis = x.chunks[2 + a]
        extended[2 + a] = tuple(c + (before if j > 0 else 0) + (after if j < len(axis) - 1
                                                                else 0)
                                for j, c in enumerate(axis))
    return _halo_map(x, depth, _assemble, tuple(extended), x.dtype, x._meta)


def _halo_depth(x, plans):
    """x rechunked as the plans say, and the halo (before, after) of each spatial axis."""
    chunks, depth = list(x.chunks), []
    for i, p in enumerate(plans):
        chunks[2 + i] = p.in_chunks
        depth.append((p.halo_before, p.halo_after) if len(p.in_chunks) > 1 else (0, 0))
    return x.rechunk(tuple(chunks)), tuple(depth)


def _edge_copy(block, index):
    """A copy (not a view: the block may then be released) of block[index]."""
    return np.array(block[index], copy=True)


def _edge_widths(offsets, depth):
    """Per spatial axis, the elements the neighbours' edges add before and after a block."""
    nd = len(depth)
    lead = [depth[a][0] if any(o[a] == -1 for o in offsets) else 0 for a in range(nd)]
    trail = [depth[a][1] if any(o[a] == 1 for o in offsets) else 0 for a in range(nd)]
    return lead, trail


def _assemble(center, edges, offsets, depth, rows=None, **_):
    """The block extended by its neighbours' edges: edges[e] lies at offsets[e] (one of -1,
    0, 1 per spatial axis: before, along, after the block). With ``rows=(a, b)`` only those
    rows of the extended block along the first spatial axis are assembled."""
    nd = len(depth)
    lead, trail = _edge_widths(offsets, depth)
    size = center.shape[2:]
    full = [l + n + t for l, n, t in zip(lead, size, trail)]
    a, b = rows if rows is not None else (0, full[0])
    out = np.empty(center.shape[:2] + (b - a,) + tuple(full[1:]), center.dtype)
    for piece, offset in [(center, (0,) * nd)] + list(zip(edges, offsets)):
        # where the piece lies in the extended block, axis by axis
        spans = [(0, lead[i]) if o == -1 else (lead[i], lead[i] + size[i]) if o == 0
                 else (lead[i] + size[i], full[i]) for i, o in enumerate(offset)]
        lo, hi = max(spans[0][0], a), min(spans[0][1], b)
        if lo >= hi:
            continue
        region = (slice(None), slice(None), slice(lo - a, hi - a)) + tuple(
            slice(*span) for span in spans[1:])
        out[region] = piece[:, :, lo - spans[0][0]:hi - spans[0][0]]
    return out


def _halo_map(x, depth, fn, chunks, dtype, meta):
    """One task per block of x: fn(center, edges, offsets=..., depth=..., index=..., counts=...)
    where `edges` are the neighbours' edges (depth[a] = (before, after) elements along spatial
    axis a, boundary 'none') at `offsets` (-1, 0, 1 per axis), `index` the block's spatial
    index and `counts` the blocks per axis. Every edge is a task of its own that copies it,
    so that a neighbour block is held only until its edge is taken, not until this block's
    task runs (dask's overlap slices views, which keep the whole neighbour alive)."""
    import itertools
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    token = tokenize(x, depth, fn, chunks)
    name, edge_name = f"fastconv-halo-{token}", f"fastconv-halo-edge-{token}"
    counts = x.numblocks[2:]
    dsk = {}
    for index in itertools.product(*(range(n) for n in x.numblocks)):
        spatial = index[2:]
        choices = []
        for a, (before, after) in enumerate(depth):
            choices.append([0] + ([-1] if before and spatial[a] > 0 else [])
                           + ([1] if after and spatial[a] < counts[a] - 1 else []))
        edge_keys, offsets = [], []
        for offset in itertools.product(*choices):
            if not any(offset):
                continue
            region = (slice(None), slice(None)) + tuple(
                slice(-depth[a][0], None) if o == -1 else slice(0, depth[a][1]) if o == 1
                else slice(None) for a, o in enumerate(offset))
            neighbour = index[:2] + tuple(i + o for i, o in zip(spatial, offset))
            key = (edge_name,) + index + tuple(o + 1 for o in offset)
            dsk[key] = (_edge_copy, (x.name,) + neighbour, region)
            edge_keys.append(key)
            offsets.append(offset)
        task = functools.partial(fn, offsets=tuple(offsets), depth=tuple(depth),
                                 index=spatial, counts=counts)
        dsk[(name,) + index] = (task, (x.name,) + index, edge_keys)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(graph, name, chunks=chunks, dtype=dtype, meta=meta)


def _border_padding(plans, index, counts):
    """The zeros the kernel adds to the block at spatial `index` (of `counts` blocks per
    axis): only at the array's true borders."""
    return tuple((p.pad_before if j == 0 else 0, p.pad_after if j == n - 1 else 0)
                 for p, j, n in zip(plans, index, counts))


# ---------------------------------------------------------------------------------------------
# Convolution


def _conv_problem(nd, x, w, b, stride, padding, dilation, groups, padding_mode):
    return planning.conv_problem(nd, x.shape, w.shape, None if b is None else b.shape, stride,
                                 padding, dilation, groups, padding_mode)


def _pad(x, pads, mode):
    if any(p != (0, 0) for p in pads):
        x = da.pad(x, ((0, 0), (0, 0)) + tuple(pads), mode=mode)
    return x


# The input of a band of output rows: at most this many bytes (a task never holds its whole
# halo-extended block, only its own block, its neighbours' edges and one band)
BAND_BYTES = 8 << 20


def _conv_block(center, edges, offsets, depth, index, counts, nd, stride, dilation, groups,
                algorithm, plans, weight, bias):
    """One output block, by bands of output rows (first spatial axis): each band's input is
    assembled from the block and its neighbours' edges, convolved, and written in place."""
    padding = _border_padding(plans, index, counts)
    lead, trail = _edge_widths(offsets, depth)
    length = lead[0] + center.shape[2] + trail[0]     # extended rows along the first axis
    span = dilation[0] * (weight.shape[2] - 1) + 1
    (before, after), s = padding[0], stride[0]
    rows_out = (length + before + after - span) // s + 1
    band = max(1, BAND_BYTES // max(1, center[:, :, :1].nbytes * s))   # output rows
    conv = getattr(fastconv, f"conv{nd}d")
    out = None
    for o0 in range(0, rows_out, band):
        o1 = min(rows_out, o0 + band)
        a, b = o0 * s - before, (o1 - 1) * s + span - before   # extended rows it reads
        if max(a, 0) < min(b, length):
            piece = _assemble(center, edges, offsets, depth, rows=(max(a, 0), min(b, length)))
            rows_padding = (max(-a, 0), max(b - length, 0))
        else:   # rows read in the padding only: the kernel's zeros, made explicit
            piece = np.zeros(center.shape[:2] + (b - a,) + tuple(
                l + n + t for l, n, t in zip(lead[1:], center.shape[3:], trail[1:])),
                center.dtype)
            rows_padding = (0, 0)
        result = _with_task_threads(conv, piece, weight, bias, stride=stride,
                                    padding=(rows_padding,) + padding[1:],
                                    dilation=dilation, groups=groups, algorithm=algorithm)
        if out is None:
            out = np.empty(result.shape[:2] + (rows_out,) + result.shape[3:], result.dtype)
        out[:, :, o0:o1] = result
    return out


def _prepare_conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode):
    x = _dask_input(input, nd, "input")
    w = np.asarray(weight)
    b = None if bias is None else np.asarray(bias)
    problem = _conv_problem(nd, x, w, b, stride, padding, dilation, groups, padding_mode)

    def plans_for(zeros_by_kernel):
        plans = []
        for axis in range(nd):
            span = problem.dilation[axis] * (problem.kernel_size[axis] - 1) + 1
            out = problem.out_size[axis]
            used = (out - 1) * problem.stride[axis] + span
            zero_pad = (problem.padding[axis][0], x.shape[2 + axis]) if zeros_by_kernel else None
            plans.append(_sliding_plan(x.chunks[2 + axis], problem.padding[axis][0], used, out,
                                       span, problem.stride[axis], axis, zero_pad))
        return plans

    if problem.padding_mode == "zeros":
        # zeros come from the kernel at the true borders: no padded copy of the array
        plans = plans_for(True)
        if all(p is not None for p in plans):
            crop = tuple(slice(0, sum(p.in_chunks)) for p in plans)
            return x, w, b, problem, plans, x[(slice(None),) * 2 + crop]
    plans = plans_for(False)
    x_padded = _pad(x, problem.padding, _NUMPY_PAD_MODE[problem.padding_mode])
    x_used = x_padded[(slice(None),) * 2 + tuple(slice(0, sum(p.in_chunks)) for p in plans)]
    return x, w, b, problem, plans, x_used


def _conv(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm):
    x, w, b, problem, plans, x_used = _prepare_conv(nd, input, weight, bias, stride, padding,
                                                    dilation, groups, padding_mode)
    dtype = _compute_dtype(x, w, b)
    x_used, depth = _halo_depth(x_used, plans)
    chunks = (x_used.chunks[0], (problem.out_channels,)) + tuple(p.out_chunks for p in plans)
    task = functools.partial(_conv_block, nd=nd, stride=problem.stride,
                             dilation=problem.dilation, groups=problem.groups,
                             algorithm=algorithm, plans=tuple(plans), weight=w, bias=b)
    return _halo_map(x_used, depth, task, chunks, dtype, np.empty((0,) * (nd + 2), dtype))


_CONV_DOC = """:func:`fastconv.conv{nd}d` on a Dask array chunked along batch and space.

    Parameters
    ----------
    input : dask.array.Array, shape (N, C_in, {dims})
        Any chunking along N and the spatial axes; channels are rechunked to one block.
    weight, bias : NumPy arrays (small: sent with every task)
    stride, padding, dilation, groups, padding_mode, algorithm
        As in :func:`fastconv.conv{nd}d`.

    Returns
    -------
    dask.array.Array, shape (N, C_out, {odims}): equal to the in-memory call for every
    chunking (bit-for-bit with a deterministic algorithm such as 'packed' or 'direct').

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask
    >>> x = np.random.rand({example_shape}).astype(np.float32)
    >>> w = np.random.rand({example_weight}).astype(np.float32)
    >>> y = fastconv.dask.conv{nd}d(da.from_array(x, chunks={example_chunks}), w, padding=1,
    ...                            algorithm="packed")
    >>> bool((y.compute() == fastconv.conv{nd}d(x, w, padding=1, algorithm="packed")).all())
    True
    """


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto"):
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto"):
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", *, algorithm="auto"):
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 algorithm)


conv1d.__doc__ = _CONV_DOC.format(nd=1, dims="L", odims="L_out", example_shape="2, 3, 50",
                                  example_weight="4, 3, 3", example_chunks="(1, 3, 16)")
conv2d.__doc__ = _CONV_DOC.format(nd=2, dims="H, W", odims="H_out, W_out",
                                  example_shape="2, 3, 40, 40", example_weight="4, 3, 3, 3",
                                  example_chunks="(1, 3, 16, 16)")
conv3d.__doc__ = _CONV_DOC.format(nd=3, dims="D, H, W", odims="D_out, H_out, W_out",
                                  example_shape="1, 2, 12, 12, 12",
                                  example_weight="2, 2, 3, 3, 3", example_chunks="(1, 2, 5, 6, 6)")


# ---------------------------------------------------------------------------------------------
# Weight gradient of a batch-sharded training step


def _weight_grad_block(block, grad, nd, weight_shape, stride, dilation, groups):
    return _with_task_threads(getattr(fastconv.grad, f"conv{nd}d_weight"), block, weight_shape,
                              grad, stride=stride, padding=0, dilation=dilation, groups=groups)


def _weight_grad(nd, input, weight_shape, grad_output, stride, padding, dilation, groups,
                 padding_mode, split_every):
    x = _dask_input(input, nd, "input")
    weight_shape = tuple(int(n) for n in weight_shape)
    probe = np.empty(weight_shape, np.float32)  # shapes only: the checks need no data
    problem = _conv_problem(nd, x, probe, None, stride, padding, dilation, groups, padding_mode)
    g = _dask_input(grad_output, nd, "grad_output")
    if g.shape != problem.out_shape:
        raise ValueError(f"grad_output must have shape {problem.out_shape} (the forward "
                         f"output of conv{nd}d); got {g.shape}")
    # shard along the batch only: each shard's gradient is a full weight-shaped array
    x = _pad(x, problem.padding, _NUMPY_PAD_MODE[problem.padding_mode])
    x = x.rechunk({i: -1 for i in range(1, nd + 2)})
    g = g.rechunk({0: x.chunks[0], **{i: -1 for i in range(1, nd + 2)}})
    dtype = _compute_dtype(x, np.empty(0, g.dtype))
    shard_grad = dask.delayed(_weight_grad_block, pure=True)
    shards = [da.from_delayed(shard_grad(x.blocks[i], g.blocks[i], nd, weight_shape,
                                         problem.stride, problem.dilation, problem.groups),
                              shape=weight_shape, dtype=dtype)
              for i in range(len(x.chunks[0]))]
    # Dask's sum is a tree reduction: split_every shards per node
    return da.stack(shards).sum(axis=0, split_every=split_every, dtype=dtype)


_WEIGHT_GRAD_DOC = """Gradient of ``conv{nd}d`` with respect to its weight over a batch-sharded
    Dask array: one :func:`fastconv.grad.conv{nd}d_weight` per batch chunk, summed by a tree
    reduction (``split_every`` shards per node).

    Parameters
    ----------
    input : dask.array.Array (N, C_in, {dims}), chunked along N
    weight_shape : tuple of ints
    grad_output : dask.array.Array, the forward output's shape (rechunked like `input`)
    stride, padding, dilation, groups, padding_mode : as in the forward call
    split_every : int, optional
        Fan-in of the reduction tree (Dask's default if None).

    Returns
    -------
    dask.array.Array of `weight_shape`, equal to the in-memory gradient up to the rounding of
    the summation order.
    """


def conv1d_weight_grad(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                       groups=1, padding_mode="zeros", *, split_every=None):
    return _weight_grad(1, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode, split_every)


def conv2d_weight_grad(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                       groups=1, padding_mode="zeros", *, split_every=None):
    return _weight_grad(2, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode, split_every)


def conv3d_weight_grad(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                       groups=1, padding_mode="zeros", *, split_every=None):
    return _weight_grad(3, input, weight_shape, grad_output, stride, padding, dilation, groups,
                        padding_mode, split_every)


for _nd, _fn in ((1, conv1d_weight_grad), (2, conv2d_weight_grad), (3, conv3d_weight_grad)):
    _fn.__doc__ = _WEIGHT_GRAD_DOC.format(nd=_nd, dims={1: "L", 2: "H, W", 3: "D, H, W"}[_nd])


# ---------------------------------------------------------------------------------------------
# Transposed convolution: output block j gathers from input block j and a left halo


def _transpose_block(block, nd, plans, in_bounds, stride, pads, groups, dilation, weight, bias,
                     block_info=None):
    index = _block_index(block_info)[2:]
    padding, extra = [], []
    for axis, j in enumerate(index):
        plan, bounds = plans[axis], in_bounds[axis]
        s, p0 = stride[axis], pads[axis][0]
        span = dilation[axis] * (weight.shape[2 + axis] - 1) + 1
        start_in = max(bounds[j] - plan.halo_before, 0)
        n_in = bounds[j + 1] - start_in
        out_start = sum(plan.out_chunks[:j])
        out_end = out_start + plan.out_chunks[j]
        full_start = start_in * s - p0
        full_end = full_start + (n_in - 1) * s + span
        before, after = out_start - full_start, full_end - out_end
        padding.append((before, max(after, 0)))
        extra.append(max(-after, 0))
    return _with_task_threads(getattr(fastconv, f"conv_transpose{nd}d"), block, weight, bias,
                              stride=stride, padding=tuple(padding), output_padding=tuple(extra),
                              groups=groups, dilation=dilation)


def _transpose_plan(chunks, out_size, span, stride, p0, axis):
    halo = math.ceil((span - 1) / stride)
    bounds = _boundaries(chunks)
    # output block j: [B_j * s - p0, B_{j+1} * s - p0), clipped; empty blocks are merged
    cuts = [0] + [min(max(b * stride - p0, 0), out_size) for b in bounds[1:-1]] + [out_size]
    in_chunks, out_chunks, too_small = [], [], False
    for j, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        if out_chunks and (b == a or in_chunks[-1] < halo):
            too_small |= in_chunks[-1] < halo
            in_chunks[-1] += chunks[j]
            out_chunks[-1] += b - a
        else:
            in_chunks.append(chunks[j])
            out_chunks.append(b - a)
    while len(out_chunks) > 1 and out_chunks[0] == 0:  # blocks before the first output
        in_chunks[0:2] = [in_chunks[0] + in_chunks[1]]
        out_chunks[0:2] = [out_chunks[0] + out_chunks[1]]
    while len(in_chunks) > 1 and in_chunks[-1] < halo:  # dask's overlap checks every block
        too_small = True
        in_chunks[-2:] = [in_chunks[-2] + in_chunks[-1]]
        out_chunks[-2:] = [out_chunks[-2] + out_chunks[-1]]
    if too_small:
        warnings.warn(f"spatial axis {axis}: chunks smaller than the halo ({halo} elements) "
                      f"were merged with their neighbour; input chunks are now "
                      f"{tuple(in_chunks)}", HaloRechunkWarning, stacklevel=5)
    return AxisPlan(tuple(in_chunks), halo, 0, tuple(out_chunks))


def _conv_transpose(nd, input, weight, bias, stride, padding, output_padding, groups,
                    dilation):
    x = _dask_input(input, nd, "input")
    w = np.asarray(weight)
    b = None if bias is None else np.asarray(bias)
    problem = planning.conv_transpose_problem(nd, x.shape, w.shape,
                                              None if b is None else b.shape, stride, padding,
                                              output_padding, groups, dilation)
    # `problem` describes the convolution this transposes: its input is our output
    out_size = problem.in_size
    pads = planning.normalize_padding(padding, nd, w.shape[2:], problem.stride, problem.dilation)
    plans = []
    for axis in range(nd):
        span = problem.dilation[axis] * (w.shape[2 + axis] - 1) + 1
        plans.append(_transpose_plan(x.chunks[2 + axis], out_size[axis],
                                     span, problem.stride[axis], pads[axis][0], axis))
    dtype = _compute_dtype(x, w, b)
    blocks = _with_halo(x, plans)
    in_bounds = tuple(_boundaries(p.in_chunks) for p in plans)
    chunks = (blocks.chunks[0], (problem.in_channels,)) + tuple(p.out_chunks for p in plans)
    return blocks.map_blocks(_transpose_block, nd, tuple(plans), in_bounds,
                             problem.stride, pads, problem.groups, problem.dilation,
                             weight=w, bias=b, chunks=chunks, dtype=dtype,
                             meta=np.empty((0,) * (nd + 2), dtype))


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """:func:`fastconv.conv_transpose1d` on a Dask array (see :func:`conv2d` for chunking)."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """:func:`fastconv.conv_transpose2d` on a Dask array: output block j is gathered from input
    block j and the left halo its windows reach (``ceil((span - 1) / stride)`` elements)."""
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """:func:`fastconv.conv_transpose3d` on a Dask array (see :func:`conv_transpose2d`)."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


# ---------------------------------------------------------------------------------------------
# Pooling: the padding is applied once (-inf for max, zeros for average), blocks pool validly


pool_output_size = planning.pool_output_size   # kept here for users of fastconv.dask


def _pool_geometry(nd, x, kernel_size, stride, padding, dilation, ceil_mode, op):
    kernel = planning.ntuple(kernel_size, nd, "kernel_size", minimum=1)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) \
        else planning.ntuple(stride, nd, "stride", minimum=1)
    pads = planning.ntuple(padding, nd, "padding", minimum=0)
    dilation = planning.ntuple(dilation, nd, "dilation", minimum=1)
    if any(2 * p > k for p, k in zip(pads, kernel)):
        raise ValueError(f"padding must be at most half the kernel size for {op} (as in "
                         f"PyTorch); got padding {pads} for kernel_size {kernel}")
    sizes = x.shape[2:]
    outs = tuple(pool_output_size(n, k, s, p, d, ceil_mode)
                 for n, k, s, p, d in zip(sizes, kernel, stride, pads, dilation))
    if any(o < 1 for o in outs):
        raise ValueError(f"{op}: the output would be empty for input shape {x.shape}, "
                         f"kernel_size {kernel}, stride {stride}, padding {pads}")
    plans, pad_widths = [], []
    for axis in range(nd):
        span = dilation[axis] * (kernel[axis] - 1) + 1
        used = (outs[axis] - 1) * stride[axis] + span
        after = max(0, used - sizes[axis] - pads[axis])
        pad_widths.append((pads[axis], after))
        plans.append(_sliding_plan(x.chunks[2 + axis], pads[axis], used, outs[axis], span,
                                   stride[axis], axis))
    return kernel, stride, pads, dilation, outs, plans, pad_widths


def _pooled_input(x, plans, pad_widths, value):
    if any(p != (0, 0) for p in pad_widths):
        x = da.pad(x, ((0, 0), (0, 0)) + tuple(pad_widths), mode="constant",
                   constant_values=value)
    x = x[(slice(None),) * 2 + tuple(slice(0, sum(p.in_chunks)) for p in plans)]
    return _with_halo(x, plans)


def _max_pool_block(block, nd, kernel, stride, dilation, plans, pads, in_size, with_indices,
                    block_info=None):
    result = _with_task_threads(getattr(fastconv, f"max_pool{nd}d"), block, kernel,
                                stride=stride, padding=0, dilation=dilation,
                                return_indices=with_indices)
    if not with_indices:
        return result
    out, local = result
    # block-local flat indices -> flat indices into the whole input plane
    index = _block_index(block_info)[2:]
    coords = np.unravel_index(local, block.shape[2:])
    origin = [sum(plan.in_chunks[:j]) - p for plan, j, p in zip(plans, index, pads)]
    global_coords = tuple(c + o for c, o in zip(coords, origin))
    return out, np.ravel_multi_index(global_coords, in_size)


def _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    x = _dask_input(input, nd, "input")
    dtype = _compute_dtype(x)
    kernel, stride, pads, dilation, outs, plans, pad_widths = _pool_geometry(
        nd, x, kernel_size, stride, padding, dilation, ceil_mode, f"max_pool{nd}d")
    blocks = _pooled_input(x.astype(dtype), plans, pad_widths, -np.inf)
    chunks = blocks.chunks[:2] + tuple(p.out_chunks for p in plans)
    meta = np.empty((0,) * (nd + 2), dtype)
    args = (nd, kernel, stride, dilation, tuple(plans), pads, tuple(x.shape[2:]))
    if not return_indices:
        return blocks.map_blocks(_max_pool_block, *args, False, chunks=chunks, dtype=dtype,
                                 meta=meta)
    # one task computes values and indices; two light tasks per block pick them apart
    pairs = blocks.map_blocks(_max_pool_block, *args, True, chunks=chunks, dtype=dtype,
                              meta=meta)
    values = pairs.map_blocks(lambda pair: pair[0], dtype=dtype, meta=meta)
    indices = pairs.map_blocks(lambda pair: pair[1], dtype=np.int64,
                               meta=np.empty((0,) * (nd + 2), np.int64))
    return values, indices


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """:func:`fastconv.max_pool1d` on a Dask array (see :func:`max_pool2d`)."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """:func:`fastconv.max_pool2d` on a Dask array chunked along batch and space.

    The input is padded once with -inf (so windows at the array's true borders see PyTorch's
    implicit padding); each block pools validly with its halo. With ``return_indices`` the
    indices are a Dask array of flat positions in each whole input plane (H x W), exactly as
    the in-memory call returns them.

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask
    >>> x = np.random.rand(1, 2, 9, 9)
    >>> y, i = fastconv.dask.max_pool2d(da.from_array(x, chunks=(1, 2, 4, 5)), 3, 2, 1,
    ...                                 return_indices=True)
    >>> y0, i0 = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    >>> bool((y.compute() == y0).all() and (i.compute() == i0).all())
    True
    """
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """:func:`fastconv.max_pool3d` on a Dask array (see :func:`max_pool2d`)."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _avg_divisor(out_size, in_size, kernel, stride, pad, count_include_pad):
    """PyTorch's divisor along one axis: the window clipped to the padded input (not to
    ceil_mode's overhang), or to the input itself without count_include_pad."""
    start = np.arange(out_size) * stride - pad
    end = np.minimum(start + kernel, in_size + pad)
    if not count_include_pad:
        return np.minimum(end, in_size) - np.maximum(start, 0)
    return end - start


def _avg_pool_block(block, nd, kernel, stride, divisors, divisor_override, block_info=None):
    sums = _with_task_threads(getattr(fastconv, f"avg_pool{nd}d"), block, kernel,
                              stride=stride, padding=0, divisor_override=1)
    if divisor_override is not None:
        return sums / sums.dtype.type(divisor_override)
    location = block_info[None]["array-location"][2:]
    divisor = np.ones((), np.int64)
    for axis, (lo, hi) in enumerate(location):
        shape = [1] * nd
        shape[axis] = hi - lo
        divisor = divisor * divisors[axis][lo:hi].reshape(shape)
    return sums / divisor.astype(sums.dtype)


def _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override):
    x = _dask_input(input, nd, "input")
    dtype = _compute_dtype(x)
    kernel, stride, pads, dilation, outs, plans, pad_widths = _pool_geometry(
        nd, x, kernel_size, stride, padding, 1, ceil_mode, f"avg_pool{nd}d")
    divisors = tuple(_avg_divisor(o, n, k, s, p, count_include_pad)
                     for o, n, k, s, p in zip(outs, x.shape[2:], kernel, stride, pads))
    blocks = _pooled_input(x.astype(dtype), plans, pad_widths, 0)
    chunks = blocks.chunks[:2] + tuple(p.out_chunks for p in plans)
    return blocks.map_blocks(_avg_pool_block, nd, kernel, stride, divisors, divisor_override,
                             chunks=chunks, dtype=dtype, meta=np.empty((0,) * (nd + 2), dtype))


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """:func:`fastconv.avg_pool1d` on a Dask array (see :func:`avg_pool2d`)."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """:func:`fastconv.avg_pool2d` on a Dask array chunked along batch and space.

    Each block sums its windows with fastconv (zero padding applied once to the whole array)
    and divides by PyTorch's divisor for that output position, so the borders follow
    ``count_include_pad``, ``ceil_mode`` and ``divisor_override`` exactly; equal to the
    in-memory call up to the last bit of the division.
    """
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """:func:`fastconv.avg_pool3d` on a Dask array (see :func:`avg_pool2d`)."""
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


# ---------------------------------------------------------------------------------------------
# Interpolation: output block j holds the outputs whose first source pixel lies in input
# block j; the linear modes' second source pixel may be the first of block j + 1 (a halo of 1)


def _interpolate_block(block, nd, tables, plans, out_bounds, in_bounds, taps,
                       block_info=None):
    index = _block_index(block_info)[2:]
    src_parts, weight_parts = [], []
    src, weight = tables
    offset = 3 - nd  # the kernel's tables start with one entry per unit axis in front
    src_parts.append(src[:, :offset])
    weight_parts.append(weight[:, :offset])
    starts = np.cumsum([0] + [b[-1] for b in out_bounds])
    for axis, j in enumerate(index):
        o0, o1 = out_bounds[axis][j], out_bounds[axis][j + 1]
        base = offset + starts[axis]
        src_parts.append(src[:, base + o0:base + o1] - in_bounds[axis][j])
        weight_parts.append(weight[:, base + o0:base + o1])
    out_shape = block.shape[:2] + tuple(b[j + 1] - b[j] for b, j in zip(out_bounds, index))
    with _task_threads(threads_per_task()):
        return operators.resample_with_tables(block, out_shape, taps,
                                              np.concatenate(src_parts, axis=1),
                                              np.concatenate(weight_parts, axis=1))


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """:func:`fastconv.interpolate` on a Dask array chunked along batch and space.

    The source positions and weights are PyTorch's, computed once for the whole array; output
    block j takes the outputs whose first source pixel lies in input block j (plus, in the
    linear modes, a halo of one pixel from block j + 1), and the kernel runs on that block with
    the global tables shifted to it: the result is the in-memory result bit for bit. Output
    chunks follow the input's (a block whose sources all fall elsewhere is empty).

    Examples
    --------
    >>> import numpy as np, dask.array as da, fastconv, fastconv.dask
    >>> x = np.random.rand(1, 2, 9, 7)
    >>> y = fastconv.dask.interpolate(da.from_array(x, chunks=(1, 2, 4, 3)), size=(20, 11),
    ...                               mode="bilinear")
    >>> bool((y.compute() == fastconv.interpolate(x, size=(20, 11), mode="bilinear")).all())
    True
    """
    x = da.asarray(input) if not isinstance(input, da.Array) else input
    dtype = _compute_dtype(x)
    out_size, taps, src, weight = planning.interpolation_tables(
        x.shape, size, scale_factor, mode, align_corners, dtype)
    nd = x.ndim - 2
    x = _dask_input(x, nd, "input")
    halo = 1 if mode != "nearest" else 0
    plans, out_bounds, in_bounds = [], [], []
    starts = np.cumsum([3 - nd] + list(out_size))
    for axis in range(nd):
        first = src[0, starts[axis]:starts[axis + 1]]  # non-decreasing
        chunks = list(x.chunks[2 + axis])
        # a block must hold the halo its left neighbour takes (dask's overlap reaches one)
        while len(chunks) > 1 and min(chunks) < halo:
            j = chunks.index(min(chunks))
            k = j + 1 if j + 1 < len(chunks) else j - 1
            lo, hi = min(j, k), max(j, k)
            chunks[lo:hi + 1] = [chunks[lo] + chunks[hi]]
        bounds = _boundaries(chunks)
        cuts = [0] + [int(np.searchsorted(first, b)) for b in bounds[1:-1]] + [out_size[axis]]
        out_chunks = tuple(b - a for a, b in zip(cuts[:-1], cuts[1:]))
        plans.append(AxisPlan(tuple(chunks), 0, halo, out_chunks))
        out_bounds.append(tuple(cuts))
        in_bounds.append(tuple(bounds))
    blocks = _with_halo(x, plans)
    chunks = blocks.chunks[:2] + tuple(p.out_chunks for p in plans)
    return blocks.map_blocks(_interpolate_block, nd, (src, weight), tuple(plans),
                             tuple(out_bounds), tuple(in_bounds), taps, chunks=chunks,
                             dtype=dtype, meta=np.empty((0,) * (nd + 2), dtype))
