"""FFT convolution (Kernel.CONV_FFT): the transforms by scipy.fft, the channel sums by
fastconv/_kernels/conv_fft.pyx.

Along each axis the input is transformed at a length L of at least its size plus the wider of
its two paddings (fastconv/_plan/tiling.py, fft_shape): a circular cross-correlation of
that length equals the zero-padded one at every output position, the padding on either side
landing in the zeros past the data: the input is only zero-extended to L, never padded in
front. The weights are rolled back by the padding before (shift theorem), so output i is
circular position i * stride. The weights' spectra (conjugated: correlation, not
convolution) are remembered between calls like Winograd's transformed weights
(fastconv/_runtime/weight_cache.py).

FFT rounding errors are spread over the whole plane: an output's error scales with the norms
of its input planes and filters, not with its own few terms (the bound is in README,
"Accuracy"). inf or NaN anywhere in a plane would reach every output of it, so a call with a
non-finite output is recomputed by the caller on an exact kernel.
"""
import threading
from math import prod

import numpy as np
import scipy.fft as sfft

from fastconv._kernels import conv_fft
from fastconv._plan.tiling import fft_shape, spectrum_shape
from fastconv._runtime.weight_cache import cached_transform, scratch

# frequencies per work item of the spectrum mix: a group's input spectra for one block
# (C_g x block complex values) within this many bytes stay in L2 while every output channel
# of the group reads them
_MIX_BLOCK_BYTES = 256 << 10
_MIN_BLOCK = 64
# The mix runs on one thread below this many complex multiply-adds: a parallel region leaves
# OpenMP's worker spinning into the inverse transform, whose own threads then share the cores
# with it (perf, 1024x1024 plane with a 31x31 filter, 2 threads: 23% of the cycles spent
# spinning; with the kept padded input below, 15.1 -> 11.6 ms a call). Above it the mix
# itself is long enough to split.
_PARALLEL_MIX = 1 << 22
# The zero-padded input is kept per thread for the next call of the same shapes up to this
# size: a fresh one costs a page fault per 4 KiB (1276 faults a call for that plane).
_KEEP_PADDED_BYTES = 64 << 20
_padded = threading.local()


def _weight_spectra(problem, w, shape, threads, out):
    """Fill `out` (the real view of a complex array) with the conjugated spectra of the
    weights, dilated and rolled back by the padding before along each axis: then output i
    of the circular correlation is output i of the convolution (shift theorem), and the
    result is read off at i * stride."""
    grid = np.zeros(w.shape[:2] + shape, w.dtype)
    taps = tuple(slice(0, (k - 1) * d + 1, d) for k, d in zip(problem.kernel_size,
                                                              problem.dilation))
    grid[(Ellipsis,) + taps] = w
    grid = np.roll(grid, tuple(-lo for lo, _ in problem.padding), axis=tuple(
        range(2, 2 + problem.ndim)))
    spectra = sfft.rfftn(grid, axes=tuple(range(2, 2 + problem.ndim)), workers=threads,
                         overwrite_x=True)
    np.conjugate(spectra, out=spectra)
    out[:] = spectra.reshape(-1).view(w.dtype)


# The transforms axis by axis on a zero-padded copy, rather than by rfftn/irfftn (whose
# padding and whole-array steps cost more than the transforms): measured on Zen 4 (2 threads,
# a 1024x1024 float32 plane at 1050x1080) the real transform of the rows 3.3-4 -> 1.0 ms, the
# inverse 7.8 -> 2.3-3.0 ms, which also skips the rows no output reads.
def _zero_padded(x, shape):
    """x (N, C, *spatial) in the corner of a zero array (N, C, *shape): this thread's from
    its last call if the shapes are the same (only the corner is ever written)."""
    key = (x.shape, shape, x.dtype.str)
    kept = getattr(_padded, "grid", None)
    if kept is None or kept[0] != key:
        grid = np.zeros(x.shape[:2] + shape, x.dtype)
        kept = (key, grid)
        if grid.nbytes <= _KEEP_PADDED_BYTES:
            _padded.grid = kept
    grid = kept[1]
    grid[tuple(slice(0, k) for k in x.shape)] = x
    return grid


def _forward_transform(x, shape, threads):
    """rfftn of x (N, C, *spatial) zero-padded to `shape`: the real transform along the last
    axis, then in place along the others."""
    if x.shape[2:] != shape:
        x = _zero_padded(x, shape)
    spectra = sfft.rfft(x, axis=-1, workers=threads)
    for axis in range(2, x.ndim - 1):
        spectra = sfft.fft(spectra, axis=axis, workers=threads, overwrite_x=True)
    return spectra


def _inverse_transform(spectra, shape, positions, threads):
    """irfftn of `spectra` at `shape`, at `positions` (one slice per spatial axis) only."""
    for axis in range(2, spectra.ndim - 1):
        spectra = sfft.ifft(spectra, axis=axis, workers=threads, overwrite_x=True)
        spectra = spectra[(slice(None),) * axis + (slice(0, positions[axis - 2].stop),)]
    signal = sfft.irfft(spectra, n=shape[-1], axis=-1, workers=threads)
    return signal[(Ellipsis,) + positions]


def conv_forward(problem, x, w, bias, out, threads, remember_weights):
    """Compute the zero-padded `problem` into `out` (C-contiguous operands of its exact
    shapes) by FFT; returns False if an output is not finite (the caller recomputes)."""
    nd, real = problem.ndim, out.dtype
    shape = fft_shape(problem)
    freqs = prod(spectrum_shape(shape))
    n, c_in, c_out = problem.batch, problem.in_channels, problem.out_channels
    c_group = problem.in_per_group
    size = c_out * c_group * 2 * freqs

    def fill(weight, spectra):
        _weight_spectra(problem, weight, shape, threads, spectra)
    if remember_weights:
        w_spec = cached_transform(("fft", shape, problem.dilation, problem.padding), w, size,
                                  fill)
    else:   # weights made for this call only (not the real scratch: a caller may hold it)
        w_spec = np.empty(size, real)
        fill(w, w_spec)
    x_spec = _forward_transform(x, shape, threads).reshape(n, c_in, freqs)
    y_spec = scratch(n * c_out * freqs, x_spec.dtype).reshape(n, c_out, freqs)
    block = max(_MIN_BLOCK, _MIX_BLOCK_BYTES // (c_group * x_spec.itemsize))
    mix_threads = threads if n * c_out * c_group * freqs >= _PARALLEL_MIX else 1
    conv_fft.mix_spectra(conv_fft.CONV_FFT_ID, x_spec.view(real), w_spec.reshape(
        c_out, c_group, 2 * freqs), y_spec.view(real), problem.groups, block, mix_threads)
    positions = tuple(slice(0, o * s, s) for o, s in zip(problem.out_size, problem.stride))
    signal = _inverse_transform(y_spec.reshape((n, c_out) + spectrum_shape(shape)), shape,
                                positions, threads)
    # the bias added and every output checked in the pass that writes it
    planes = (n * c_out,) + (1,) * (3 - nd)
    target = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    finite = conv_fft.finish_output(conv_fft.CONV_FFT_ID,
                                    signal.reshape(planes + signal.shape[2:]), bias,
                                    target.reshape(planes + out.shape[2:]))
    if target is not out:
        out[...] = target
    return finite

