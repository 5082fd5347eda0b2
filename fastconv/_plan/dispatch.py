"""The dispatcher: one plan per call.

A plan names the kernel that runs (a value of :class:`Kernel`, the enum the compiled modules
take), says why, and carries every number the kernel needs to cut its work. It is made once,
from a checked :class:`~fastconv._plan.problems.ConvProblem`, by walking an ordered list of
rules (algorithm family, applies-to, why) and then choosing the family's variant and its
tiling; nothing below the plan chooses again. ``algorithm=`` forces a family or any single
variant by name. Plans are pure functions of the problem, the dtype, the thread count and
the BLAS in use, and are remembered per problem. The measurements behind the rules and
thresholds are in notes/dispatch.md and notes/phase-grid.md.
"""
from dataclasses import dataclass, replace
from enum import IntEnum
from functools import lru_cache
from math import log2, prod

import numpy as np

from fastconv import _core
from fastconv._plan import tiling
from fastconv._plan.problems import ConvProblem
from fastconv._runtime import autotune as _autotune, cpu, precision as _precision, \
    threads as _threads

# Every kernel fastconv can run, named once; the values are the compiled enum's.
Kernel = IntEnum("Kernel", _core.kernel_ids())
Kernel.__doc__ = """Every kernel a convolution-family call can run (the compiled modules'
enum). Each member's forcing name is its name in lower case without the operation prefix:
``Kernel.CONV_PACKED_PHASE`` is ``conv2d(..., algorithm="packed_phase")``."""

_PREFIXES = {"CONV_": "forward", "INPUT_GRAD_": "input_grad", "WEIGHT_GRAD_": "weight_grad"}


def kernel_operation(kernel):
    """'forward', 'input_grad' or 'weight_grad': which computation `kernel` does."""
    return next(op for prefix, op in _PREFIXES.items() if kernel.name.startswith(prefix))


def variant_name(kernel):
    """The name that forces exactly `kernel` (``Kernel.INPUT_GRAD_PHASE_SCATTER`` ->
    'phase_scatter')."""
    prefix = next(p for p in _PREFIXES if kernel.name.startswith(p))
    return kernel.name[len(prefix):].lower()


# The family each kernel belongs to: what ``Plan.algorithm`` reports and the rules choose.
_FAMILY = {
    Kernel.CONV_DIRECT_ROWS: "direct", Kernel.CONV_IM2COL_BLAS: "im2col",
    Kernel.CONV_GEMM1X1_BLAS: "gemm1x1", Kernel.CONV_PACKED_SEGMENTS: "packed",
    Kernel.CONV_PACKED_PHASE: "packed", Kernel.CONV_WINOGRAD: "winograd",
    Kernel.CONV_FFT: "fft", Kernel.CONV_DIRECT_PLANES: "direct",
    Kernel.CONV_PACKED_STACKED: "packed",
    Kernel.INPUT_GRAD_DIRECT_ROWS: "direct", Kernel.INPUT_GRAD_COL2IM_BLAS: "col2im",
    Kernel.INPUT_GRAD_COL2IM_PACKED: "col2im", Kernel.INPUT_GRAD_GEMM1X1_BLAS: "gemm1x1",
    Kernel.INPUT_GRAD_PHASE_CLASSES: "col2im", Kernel.INPUT_GRAD_PHASE_SCATTER: "col2im",
    Kernel.INPUT_GRAD_SUBPIXEL: "subpixel", Kernel.INPUT_GRAD_WINOGRAD: "winograd",
    Kernel.INPUT_GRAD_GEMM1X1_STACKED: "gemm1x1", Kernel.INPUT_GRAD_DIRECT_PHASES: "direct",
    Kernel.INPUT_GRAD_CHANNELS_LAST_PHASES: "channels_last",
    Kernel.WEIGHT_GRAD_IM2COL_BLAS: "gemm", Kernel.WEIGHT_GRAD_IM2COL_PACKED: "gemm",
    Kernel.WEIGHT_GRAD_GEMM1X1_BLAS: "gemm", Kernel.WEIGHT_GRAD_GEMM1X1_PACKED: "gemm",
    Kernel.WEIGHT_GRAD_PHASE: "phase", Kernel.WEIGHT_GRAD_DEPTHWISE_ROWS: "depthwise",
    Kernel.WEIGHT_GRAD_WINOGRAD: "winograd",
}
_BLAS_KERNELS = frozenset({
    Kernel.CONV_IM2COL_BLAS, Kernel.CONV_GEMM1X1_BLAS, Kernel.INPUT_GRAD_COL2IM_BLAS,
    Kernel.INPUT_GRAD_GEMM1X1_BLAS, Kernel.WEIGHT_GRAD_IM2COL_BLAS,
    Kernel.WEIGHT_GRAD_GEMM1X1_BLAS, Kernel.WEIGHT_GRAD_WINOGRAD})
# The input gradient on the phase grid multiplies the zeros of an extended output gradient by
# every weight, and subpixel and the direct stride phases the zeros padding the output
# gradient: exact only for finite weights (0 * inf is NaN).
FINITE_WEIGHT_KERNELS = frozenset({Kernel.INPUT_GRAD_PHASE_CLASSES,
                                   Kernel.INPUT_GRAD_PHASE_SCATTER,
                                   Kernel.INPUT_GRAD_SUBPIXEL, Kernel.INPUT_GRAD_WINOGRAD,
                                   Kernel.INPUT_GRAD_DIRECT_PHASES})


@dataclass(frozen=True)
class Plan:
    """One call, decided: the kernel, why, and how it cuts its work.

    ``algorithm`` is the kernel's family ('direct', 'packed', 'col2im', ...), ``kernel`` the
    exact variant. A forward call too long to interrupt is run as ``pieces`` (each (images,
    input channels, output channels, problem, plan)); a subpixel input gradient as
    ``phases`` (stride-1 convolutions, each (output index, tap index, gradient index,
    problem, plan)).
    """
    kernel: Kernel
    reason: str
    threads: int = 1
    geometry: tuple = ()        # (stride, padding before, dilation) in 3-d, as kernels take them
    band_rows: int = 0          # im2col/col2im/direct planes: output rows per band
    planes_per_item: int = 1    # direct planes: whole input planes a work item computes
    tile_panels: int = 0        # packed and phase grid: position panels per tile
    per_thread_blocks: bool = False   # winograd: each thread runs whole super-blocks alone
    fused_weights: bool = False   # winograd: weights not kept transformed are, as it goes
    channel_panels: int = 1     # packed: weight panels per block of output channels
    channel_chunks: int = 1     # col2im: chunks of a group's input channels
    tile_shape: int = 0         # packed micro-kernel register tile (0 wide, 1 narrow)
    chunks: int = 1             # weight gradient: partial sums
    images_per_unit: int = 0    # weight gradient: images per unit (phase), per chunk (winograd)
    pieces: tuple = ()
    phases: tuple = ()
    stacked: tuple = ()         # weight gradient: (the problem of the images stacked,)

    @property
    def algorithm(self):
        return _FAMILY[self.kernel]

    def __iter__(self):
        """Unpacks as (algorithm, reason), as fastconv 0.1's Choice did."""
        return iter((self.algorithm, self.reason))

    @property
    def uses_blas(self):
        """True if the kernel calls SciPy's BLAS from its threads (BLAS is held at one)."""
        return self.kernel in _BLAS_KERNELS or any(p.uses_blas for *_, p in self.pieces) \
            or any(p.uses_blas for *_, p in self.phases)

    def explain(self):
        """The plan in words: kernel, reason, threads and work split."""
        defaults = Plan(self.kernel, "")
        split = {k: getattr(self, k) for k in ("band_rows", "planes_per_item", "tile_panels",
                                                "per_thread_blocks", "fused_weights",
                                                "channel_panels",
                                                "channel_chunks", "tile_shape", "chunks",
                                                "images_per_unit")
                 if getattr(self, k) != getattr(defaults, k)}
        text = f"{self.kernel.name} ({self.algorithm}): {self.reason}; threads {self.threads}"
        if split:
            text += "; " + ", ".join(f"{k} {v}" for k, v in split.items())
        if self.pieces:
            text += f"; run in {len(self.pieces)} interruptible pieces"
        if self.phases:
            text += f"; {len(self.phases)} stride-1 phase convolutions"
        if self.stacked:
            text += f"; the images' positions stacked into {self.stacked[0].in_size[0]}"
        return text


@dataclass(frozen=True)
class Rule:
    algorithm: str
    applies: object     # (ConvProblem, itemsize, threads) -> bool
    why: str


# Measured (README, "Algorithms and what the dispatcher chooses"; 2 threads, Zen 5): up to
# this many output channels per group the direct loops, which keep a whole row of taps in
# registers for blocks of 4 filters, beat the packed GEMM by 1.3-2.8x (lenet_b64, 8-channel
# layers, depthwise); at 12 they tie, and from 16 on the GEMM's 8-channel tiles win.
MAX_DIRECT_OUT_CHANNELS = 8

_AVX512_BLAS_KERNELS = ("skylakex", "cooperlake", "sapphirerapids", "zen4", "zen5")
_BLAS_FULL_WIDTH = None


def blas_runs_full_width():
    """True unless SciPy's OpenBLAS is held to narrower kernels than this CPU has (for example
    OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU): then fastconv's own kernels are faster."""
    global _BLAS_FULL_WIDTH
    if _BLAS_FULL_WIDTH is None:
        cpu_has_avx512 = bool(cpu.cpu_features().get("AVX512F"))
        kernels = [str(d.get("architecture") or "").lower()
                   for d in _threads.single_threaded_blas.describe()]
        _BLAS_FULL_WIDTH = not (cpu_has_avx512 and kernels
                                and not any(k in _AVX512_BLAS_KERNELS for k in kernels))
    return _BLAS_FULL_WIDTH


# BLAS takes 32-bit sizes and leading dimensions: a GEMM over an image plane (or a K) of 2**31
# elements or more would overflow them, so such problems never go to BLAS; fastconv's own
# kernels index in 64 bits (tests/test_reliability.py, arrays past 2**31 elements).
BLAS_INDEX_LIMIT = 2**31 - 1


def fits_blas(problem):
    """True if every size and leading dimension a BLAS GEMM of `problem` sees fits in int32."""
    return max(prod(problem.in_size), prod(problem.out_size), problem.gemm_depth,
               problem.in_channels, problem.out_channels) <= BLAS_INDEX_LIMIT


def own_gemm(problem):
    """True if the GEMMs of `problem` should run on fastconv's micro-kernel rather than BLAS."""
    return not blas_runs_full_width() or not fits_blas(problem)


@dataclass(frozen=True)
class ChannelsLastPlan:
    """The plan of a forward 2-d convolution whose input is channels-last (NHWC memory):
    ``algorithm`` 'channels_last_winograd', 'channels_last_gemm' or
    'channels_last_depthwise', and why. Such a call reads the input in place and writes a
    channels-last output; any other algorithm, or a call these kernels do not cover, runs
    channels-first on a copy (the output is laid out channels-last after). ``strided``:
    for 'channels_last_winograd', the channels-first Plan whose kernel reads and writes
    through the arrays' strides."""
    algorithm: str
    reason: str
    threads: int = 1
    strided: Plan = None

    def explain(self):
        text = f"{self.algorithm}: {self.reason}; threads {self.threads}"
        if self.strided is not None:
            text += f"; tile_panels {self.strided.tile_panels}"
        return text

    def __iter__(self):
        return iter((self.algorithm, self.reason))


CHANNELS_LAST_ALGORITHMS = ("channels_last_winograd", "channels_last_gemm",
                            "channels_last_depthwise")


def plan_channels_last(problem, dtype=np.float32):
    """The ChannelsLastPlan of `problem` for a channels-last input, or None where the
    channels-last kernels do not compute it (not 2-d, a non-zero padding mode, grouped but
    neither depthwise nor a Winograd layer, empty)."""
    if problem.ndim != 2 or problem.padding_mode != "zeros" or 0 in (
            problem.batch, problem.in_channels, problem.out_channels):
        return None
    return _plan_channels_last(problem, np.dtype(dtype).itemsize,
                               _threads.threads_for(problem.multiply_adds),
                               tiling.INTERRUPT_WORK, _precision.get_precision())


# a pure function of its arguments, asked on every call (10-15 us of Python a layer)
@lru_cache(maxsize=1024)
def _plan_channels_last(problem, itemsize, threads, interrupt_work, precision):
    if winograd_pays(problem):
        strided = _plan_conv(problem, itemsize, "winograd", threads, interrupt_work, precision)
        if not strided.pieces:
            return ChannelsLastPlan(
                "channels_last_winograd", "channels-last input, a 3x3 stride-1 layer Winograd "
                "pays for (as channels-first): its transforms gather the input's tiles and "
                "scatter the output's through the arrays' strides, channel by channel, so "
                "nothing is copied; the output is channels-last", threads, strided)
    if problem.groups == 1:
        return ChannelsLastPlan(
            "channels_last_gemm", "channels-last input, one group: the output's pixels are the "
            "rows of a GEMM on fastconv's micro-kernel whose patch rows, KH*KW runs of the "
            "input's contiguous channels, are packed straight into its panels; the output is "
            "channels-last", threads)
    if problem.groups == problem.in_channels == problem.out_channels:
        return ChannelsLastPlan(
            "channels_last_depthwise", "channels-last input, depthwise: each tap is one "
            "multiply-add over the contiguous channels of a pixel; the output is "
            "channels-last", threads)
    return None


# ---------------------------------------------------------------------------------------------
# Forward convolution

ALGORITHMS = ("direct", "im2col", "gemm1x1", "packed", "winograd", "fft")


def winograd_computes(problem):
    """True if Winograd computes `problem`: F(4x4, 3x3) for a 2-d 3x3 kernel, or a 3-d (KD,
    3, 3) one (KD 2-d kernels over the input's depth slices), stride 1, dilation 1; F(4, 3)
    for a 1-d kernel of 3 taps, stride 1, any dilation; at least one input channel per
    group."""
    if problem.ndim == 1:
        return (problem.kernel_size == (3,) and problem.stride == (1,)
                and problem.in_per_group >= 1)
    return (problem.ndim in (2, 3) and problem.kernel_size[-2:] == (3, 3)
            and all(s == 1 for s in problem.stride) and all(d == 1 for d in problem.dilation)
            and problem.in_per_group >= 1)


# Measured on Zen 4 (2 threads, float32, ms, packed -> winograd; notes/winograd.md): 64 -> 64
# channels 56x56 1.45 -> 0.64 (batch 1), 9.5 -> 5.4 (batch 8); 256 -> 256 on 14x14 1.86 ->
# 1.39; 512 -> 512 on 7x7, batch 8, 13.5 -> 8.3; 32 -> 64 on 32x32, batch 32, 6.7 -> 4.5.
# Below this many channels per group on either side the transforms cost about what the 4x
# fewer multiplications save: 16 -> 16 channels won on 28x28 (0.27 against 0.32 ms) and lost
# on 56x56, batch 8 (0.82 against 0.61); 32 -> 32 on 56x56, batch 8: 1.67 against 2.43.
WINOGRAD_MIN_CHANNELS = 32
# Each call reads all its transformed weights (4x the weight's bytes) for every block of tiles:
# with too few tiles that read is the call. 512 -> 512 on 7x7 (4 tiles an image; ms, Winograd
# against packed): batch 1 4.13 / 3.86, batch 2 4.04 / 5.34, batch 4 4.71 / 8.61. Inside a
# network the transformed weights come from memory (a UNet's 1024 -> 1024 layer on 8x8 has
# 151 MB of them, against 38 MB read by packed): its inference at batch 2 (8 tiles) took
# 216-218 ms with 8 here, 167-184 with 16 (PyTorch 298-307; Zen 4, 2 threads, A/B in one
# process); alone, caches warm, 8 tiles were a tie (2 x 512 on 7x7: 3.9 / 3.0 ms; 2 x 1024 on
# 8x8 13.3 / 14.2) and 16 still Winograd's (4 x 512 on 8x8 4.1 / 7.4; 1 x 256 on 14x14 0.75
# / 1.35).
WINOGRAD_MIN_TILES = 16
# The input gradient transforms its reversed, transposed weights on every call (they change
# with every training step, and a transposed convolution's are never remembered): 5 ms for
# 512 -> 512 channels with 2 threads, so it needs more tiles to pay. Measured on AMD Zen 3
# (EPYC, AVX2), 2 threads, float32, ms, Winograd against col2im (the better of BLAS and
# packed): 4 tiles (512 on 7x7, batch 1) 8.6 / 3.5; 16 tiles: 512 on 14x14, batch 1, 9.3 /
# 12.0, but 256 on 14x14 3.0 / 2.6; 32 tiles: 512 on 7x7, batch 8, 11.5 / 21.6, 512 on
# 14x14, batch 2, 11.4 / 17.1; 49: 256 on 28x28, batch 1, 6.5 / 8.1.
WINOGRAD_MIN_TILES_INPUT_GRAD = 32
# ... unless there are so few tiles that the weights are transformed as the GEMM goes
# (tiling.WINOGRAD_FUSED_MAX_TILES) and channels enough: Intel Xeon, 2 threads, float32, ms,
# 16 tiles, Winograd fused / the rules' choice without it / PyTorch: 256 -> 256 on 14x14,
# batch 1, 1.06-1.09 / 1.19-1.25 (col2im) / 1.04; 512 on 7x7, batch 4, 3.96-4.06 /
# 4.87-4.95 (channels-last phases) / 3.5; 128 on 14x14 0.37 / 0.38 / 0.37; 64 on 14x14
# 0.18 / 0.147 / 0.15.
WINOGRAD_FUSED_INPUT_GRAD_MIN_CHANNELS = 128


def winograd_input_grad_pays(problem):
    """True if `auto` should run the input gradient of `problem` by Winograd: it pays
    forward (winograd_pays), the gradient is one stride-1 convolution, and either tiles
    enough to pay for transforming the reversed weights or few enough to transform them as
    the GEMM goes."""
    tiles = winograd_tiles(problem)
    return (winograd_pays(problem) and tiling.subpixel_plan(problem) is not None
            and (tiles >= WINOGRAD_MIN_TILES_INPUT_GRAD
                 or (problem.ndim > 1 and tiles <= tiling.WINOGRAD_FUSED_MAX_TILES
                     and min(tiling.winograd_depth(problem), problem.out_per_group)
                     >= WINOGRAD_FUSED_INPUT_GRAD_MIN_CHANNELS)))


winograd_tiles = tiling.winograd_tiles


def winograd_pays(problem):
    """True if `auto` should run Winograd: it computes the problem, the precision setting
    allows it, the GEMMs over channels are wide enough to pay for the transforms, and there
    are tiles enough to pay for reading the transformed weights."""
    return (winograd_computes(problem) and _precision.get_precision() == "fast"
            and min(tiling.winograd_depth(problem), problem.out_per_group)
            >= WINOGRAD_MIN_CHANNELS
            and winograd_tiles(problem) >= WINOGRAD_MIN_TILES)


# FFT convolution's cost, in multiply-adds of the direct loops (about 18 ps each on Zen 4, 2
# threads, float32; scipy.fft 1.17). Each plane transformed (input and output channels of each
# image) costs FFT_PLANE_COST plus FFT_POINT_COST x log2(P) per point; each complex
# multiply-add of the spectrum mix FFT_MIX_COST (it reads the weights' spectra, C_out x C_in/g
# whole planes: memory-bound); the GEMM kernels do GEMM_SPEEDUP multiply-adds in the time the
# direct loops do one. FFT is chosen where its estimate is under FFT_MARGIN of the kernel's
# own. The constants are the pessimistic end of what was measured, so that a miss costs a
# missed win, not a slower call (ms, FFT against the kernel auto ran before; estimate ratio in
# brackets): one channel 1024x1024 31x31 10.5 / 18.3 [0.61, chosen]; 63x63 6.1 / 72.6 [0.14,
# chosen]; 512x512 31x31 2.2 / 4.6 [0.77, chosen]; 15x15 7.6 / 4.5 [2.6]; 21x21 5.8 / 8.5
# [1.33, a missed win]; 64 -> 64 channels 56x56 7x7 7.8 / 9.4 [1.77, missed]; 8 x 64 -> 64
# 32x32 5x5 20.8 / 9.3 [>2]; 128 -> 128 14x14 5x5 2.9 / 2.0 [3.8]; 1-d 100000 samples 255
# taps 1.4 / 1.0 [1.8]; 1-d 4 x 16 -> 16 channels, 16000 samples, 101 taps 9.4 / 17.6 [1.29,
# missed]. The opt-in autotuner (fastconv.autotune) finds the missed wins.
FFT_POINT_COST = 13.0
FFT_PLANE_COST = 600.0
FFT_MIX_COST = 40.0
GEMM_SPEEDUP = 3.0
FFT_MARGIN = 0.8
# below this many taps the transforms never pay (a 5x5 kernel)
FFT_MIN_TAPS = 25


def fft_work(problem):
    """The estimated cost of `problem` by FFT, in multiply-adds of the direct loops."""
    shape = tiling.fft_shape(problem)
    points = prod(shape)
    planes = problem.batch * (problem.in_channels + problem.out_channels)
    transforms = planes * (FFT_PLANE_COST + FFT_POINT_COST * points * log2(max(points, 2)))
    mix = problem.batch * problem.out_channels * problem.in_per_group \
        * prod(tiling.spectrum_shape(shape))
    return transforms + FFT_MIX_COST * mix


def fft_pays(problem):
    """True if `auto` should run the FFT convolution: stride 1, a kernel of at least
    FFT_MIN_TAPS taps, precision 'fast', and an estimated cost under FFT_MARGIN times the
    direct loops' (at most MAX_DIRECT_OUT_CHANNELS filters a group) or the GEMM's."""
    if (_precision.get_precision() != "fast" or any(s != 1 for s in problem.stride)
            or prod(problem.kernel_size) < FFT_MIN_TAPS or problem.multiply_adds == 0):
        return False
    own = problem.multiply_adds
    if problem.out_per_group > MAX_DIRECT_OUT_CHANNELS:
        own /= GEMM_SPEEDUP
    return fft_work(problem) < FFT_MARGIN * own


# gemm1x1 and im2col are not chosen: measured, they at best tie with packed (2 threads, ms, with
# OPENBLAS_CORETYPE unset so that OpenBLAS runs AVX-512 kernels: bottleneck_1x1 gemm1x1 0.39
# against packed 0.37; resnet_3x3_256 im2col 0.98 against packed 1.07), and lose by 1.5-2x
# when OpenBLAS is held to AVX2; ties go to packed, which is bit-for-bit reproducible.
RULES = (
    Rule("fft", lambda p, *_: fft_pays(p),
         f"stride 1, at least {FFT_MIN_TAPS} taps, and an estimated cost (transforms of "
         "the padded planes by scipy.fft, the channel sums per frequency) under "
         f"{FFT_MARGIN} of the direct loops' or the GEMM's (precision 'fast'; "
         "set_precision('exact') turns it off)"),
    Rule("direct", lambda p, *_: p.out_per_group <= MAX_DIRECT_OUT_CHANNELS,
         f"at most {MAX_DIRECT_OUT_CHANNELS} output channels per group (depthwise, "
         "single-filter, thin layers): direct loops keep each row's taps in registers; a "
         "GEMM this thin wastes its tiles"),
    Rule("winograd", lambda p, *_: winograd_pays(p),
         f"3x3 (in 3-d, KD x 3 x 3: KD 2-d kernels over depth slices), stride 1, at least {WINOGRAD_MIN_CHANNELS} channels per group and "
         f"{WINOGRAD_MIN_TILES} 4x4 output tiles: Winograd "
         "F(4x4, 3x3) does 36 multiplications per 4x4 outputs instead of 144, as 36 GEMMs "
         "on fastconv's micro-kernel (precision 'fast'; set_precision('exact') turns it "
         "off)"),
    Rule("packed", lambda *_: True,
         "im2col straight into the panels of fastconv's register-blocked GEMM micro-kernel "
         "(measured faster than im2col + BLAS on every GEMM-shaped bench case); a batch of "
         "small planes is unfolded through a stride-phase grid (packed_phase), with the "
         "same result"),
)


def packed_phase_grid(problem, itemsize, num_threads):
    """True if the packed algorithm should unfold through the phase grid: work items are
    whole (image, group) planes, so there must be one per thread, or a strided stem whose
    one plane's tiles are shared out (phase_shared_plane_pays); the copy of a plane must
    stay small, the extended grid must not add much work, and there must be taps to unfold.
    Measured (Zen 5, 2 threads, float32, segments -> phase grid, us): (32,16,28,28)*(32,16,
    3,3) s2 445 -> 296; (64,64,7,7)*(64,64,3,3) 1489 -> 915; (16,3,224,224)*(64,3,7,7) s2
    15267 -> 12060; a 1x1 convolution 622 -> 880. One plane shared (Zen 4, minima, ms):
    (1,3,224,224)*(64,3,7,7) s2 1.71 -> 1.49, *(96,3,11,11) s4 1.50 -> 1.27; but
    *(32,3,3,3) s2 0.23 -> 0.26, and 64-256 channels level (0.77 -> 0.82, 1.59 -> 1.64)."""
    if problem.pointwise:
        return False
    if problem.batch * problem.groups < num_threads and not phase_shared_plane_pays(problem):
        return False
    return tiling.phase_grid_fits(problem, itemsize)


def direct_planes(problem, itemsize):
    """True if the direct loops should run over whole planes (CONV_DIRECT_PLANES): one input
    channel per group (depthwise, 1-channel images), and bands of the plane that fit L1
    (tiling.direct_planes_band). Measured against the row kernel (Zen 4, 2 threads, ms):
    MobileNetV2's depthwise layers at batch 8, 960 channels on 7x7 0.90 -> 0.25, 576 on
    14x14 1.00 -> 0.29 (stride 2: 0.78 -> 0.28), 144 on 56x56 stride 2 0.93 -> 0.49; 240
    channels 5x5 on 28x28 0.19 -> 0.12; a 1024x1024 image, 7x7, in bands: 4.2 -> 5.9 (the
    row kernel's)."""
    return problem.in_per_group == 1 and tiling.direct_planes_fit(problem, itemsize)


# What auto's choice of a variant inside a family adds to the rule's reason.
VARIANT_WHY = {
    Kernel.CONV_PACKED_STACKED: "; a 1x1 layer with at least 192 input channels, or on "
                                "planes that would leave its last panel of positions mostly "
                                "empty: the batch's positions stacked end to end, every panel "
                                "full, the products through a scratch tile",
    Kernel.INPUT_GRAD_GEMM1X1_STACKED: "; at least 192 output channels to sum over, or planes "
                                       "that would leave the last panel of positions mostly "
                                       "empty: the batch's positions stacked end to end on "
                                       "fastconv's micro-kernel, the weights transposed while "
                                       "packed",
    Kernel.CONV_DIRECT_PLANES: "; one input channel per group: whole planes (bands of them "
                               "that fit L1) copied once into zero-padded stride phases, every "
                               "tap one fixed offset of a flat run of outputs",
    Kernel.INPUT_GRAD_DIRECT_PHASES: "; by stride phases: each phase of the input is a "
                                     "stride-1 correlation of the zero-padded output gradient "
                                     "with the taps that reach it (bands that fit L1), the "
                                     "phases interleaved into rows written once",
}


def _forward_kernel(family, problem, itemsize, threads):
    if family == "packed":
        if tiling.packed_stacks_images(problem, tiling.packed_tile(problem, itemsize)[2]):
            return Kernel.CONV_PACKED_STACKED
        return Kernel.CONV_PACKED_PHASE if packed_phase_grid(problem, itemsize, threads) \
            else Kernel.CONV_PACKED_SEGMENTS
    if family == "direct":
        return Kernel.CONV_DIRECT_PLANES if direct_planes(problem, itemsize) \
            else Kernel.CONV_DIRECT_ROWS
    return {"im2col": Kernel.CONV_IM2COL_BLAS,
            "gemm1x1": Kernel.CONV_GEMM1X1_BLAS, "winograd": Kernel.CONV_WINOGRAD,
            "fft": Kernel.CONV_FFT}[family]


def _forward_kernel_plan(kernel, reason, problem, itemsize, threads):
    """The plan of one forward kernel call on the zero-padded `problem`."""
    geometry = tiling.forward_geometry(problem)
    if kernel in (Kernel.CONV_PACKED_SEGMENTS, Kernel.CONV_PACKED_STACKED):
        shape, mr, nr = tiling.packed_tile(problem, itemsize)
        tile_panels, channel_panels = tiling.packed_partition(
            problem, itemsize, mr, nr, threads, stacked=kernel == Kernel.CONV_PACKED_STACKED)
        return Plan(kernel, reason, threads, geometry, tile_panels=tile_panels,
                    channel_panels=channel_panels, tile_shape=shape)
    if kernel == Kernel.CONV_PACKED_PHASE:
        shape, _, nr = tiling.packed_tile(problem, itemsize)
        return Plan(kernel, reason, threads, geometry, tile_panels=tiling.phase_grid_tile(
            problem, itemsize, nr), tile_shape=shape)
    if kernel == Kernel.CONV_WINOGRAD:
        fused_panels = tiling.winograd_fused_panels(problem, itemsize)
        if fused_panels:
            # one super-block of every tile, its weights transformed as it goes
            return Plan(kernel, reason, threads, geometry, tile_panels=fused_panels,
                        fused_weights=True)
        tile_panels, per_thread_blocks = tiling.winograd_blocks(problem, itemsize, threads)
        return Plan(kernel, reason, threads, geometry, tile_panels=tile_panels,
                    per_thread_blocks=per_thread_blocks)
    if kernel == Kernel.CONV_FFT:
        return Plan(kernel, reason, threads, geometry)
    if kernel == Kernel.CONV_DIRECT_PLANES:
        band = tiling.direct_planes_band(problem, itemsize, threads)
        return Plan(kernel, reason, threads, geometry, band_rows=band,
                    planes_per_item=tiling.direct_planes_per_item(problem, itemsize, band,
                                                                  threads))
    return Plan(kernel, reason, threads, geometry,
                band_rows=tiling.gemm_band_rows(problem, itemsize))


def plan_conv(problem, dtype, algorithm="auto"):
    """The Plan of a forward convolution `problem` in `dtype` ('auto', a family of
    ALGORITHMS, or a variant name of a CONV_ kernel). With the autotuner on, 'auto' runs
    the family measured fastest for the problem, if one was."""
    itemsize = np.dtype(dtype).itemsize
    threads = _threads.threads_for(problem.multiply_adds)
    _check_name(algorithm, "forward")
    precision = _precision.get_precision()
    if algorithm == "auto" and _autotune.get_autotune():
        tuned = _autotune.lookup(autotune_key("forward", problem, dtype))
        # a winner read from a file is used only if it still computes the problem
        if tuned is not None and tuned.algorithm in ALGORITHMS \
                and SUPPORTS[tuned.algorithm](problem):
            plan = _plan_conv(problem, itemsize, tuned.algorithm, threads,
                              tiling.INTERRUPT_WORK, precision)
            return replace(plan, reason=tuned.reason())
    return _plan_conv(problem, itemsize, algorithm, threads, tiling.INTERRUPT_WORK, precision)


# Winograd and the FFT round differently from one sum of products (README, "Accuracy"):
# precision 'exact' keeps auto, and the autotuner, off them.
APPROXIMATE = frozenset({"winograd", "fft"})


def autotune_candidates(problem):
    """The forward families the autotuner times for `problem`: every one that computes it,
    less the approximate ones under precision 'exact'."""
    exact = _precision.get_precision() == "exact"
    return tuple(f for f in ALGORITHMS if SUPPORTS[f](problem)
                 and not (exact and f in APPROXIMATE))


@lru_cache(maxsize=1)
def _cpu_name():
    return cpu.cpuinfo_field("model name") or "unknown CPU"


def autotune_key(operation, problem, dtype):
    """What an autotuned winner for `problem` is remembered under (fastconv/_runtime/
    autotune.py): also the thread count, precision, SIMD level, CPU and version."""
    return _autotune.key(operation, problem, np.dtype(dtype).name,
                         _threads.threads_for(problem.multiply_adds),
                         _precision.get_precision(), cpu.simd_level(), _cpu_name())


@lru_cache(maxsize=1024)   # a pure function of its arguments, asked on every call
def _plan_conv(problem, itemsize, algorithm, threads, interrupt_work, precision):
    family, variant, reason = _choose(problem, itemsize, threads, algorithm, RULES, ALGORITHMS,
                                      "forward")
    padded = problem.explicitly_padded
    pieces = tiling.interruptible_pieces(padded, interrupt_work)

    def piece_plan(piece, piece_threads):
        kernel = variant or _forward_kernel(family, piece, itemsize, piece_threads)
        why = reason if variant else reason + VARIANT_WHY.get(kernel, "")
        return _forward_kernel_plan(kernel, why, piece, itemsize, piece_threads)

    if len(pieces) == 1:
        return piece_plan(padded, threads)
    parts = []
    for images, channels in pieces:
        piece = tiling.piece_problem(padded, images, channels)
        parts.append((images, tiling.piece_input_channels(padded, channels), channels, piece,
                      piece_plan(piece, _threads.threads_for(piece.multiply_adds))))
    first = parts[0][-1]
    return Plan(first.kernel, reason, threads, pieces=tuple(parts))


# ---------------------------------------------------------------------------------------------
# Input gradient (also the transposed convolution): `problem` describes the forward convolution
# (its input is the gradient's shape). The GEMM computes col = W_g^T @ grad_out_band
# ((C_in/groups x taps) x band, summing over C_out/groups), then col2im scatters it. Measured
# (notes/dispatch.md): col2im wins even for thin GEMMs (2 or 4 channels per group, 3-channel
# images) by 1.5-4x. The col2im GEMM runs on fastconv's micro-kernel unless SciPy's BLAS has
# full-width kernels (blas_runs_full_width).
# One input and one output channel per group (depthwise, single-channel images), where the
# GEMM degenerates into an outer product: at stride 1 the gradient is one forward convolution
# of the output gradient with the reversed kernel ("subpixel" with a single phase), on the
# direct forward kernel; measured 1.8-8x faster than the direct gathering loops on 2-d, 3-d
# and single-channel layers, a tie in 1-d (Zen 3, 2 threads, notes/dispatch.md). With a
# stride the direct kernel by stride phases runs (every phase of the input a stride-1
# correlation of the output gradient, interleaved into rows written once): against col2im on
# the phase grid, Zen 4, 2 threads, float32, batch 8, ms: 144 channels 3x3 s2 on 56x56
# 2.9-3.3 -> 1.3-1.7; 96 on 112x112 8.7-10.0 -> 5.5-5.7; 576 on 14x14 1.06-1.09 -> 0.57-0.63;
# 5x5 s2, 240 on 28x28 1.9 -> 0.64-0.67; 3-d 3x3x3 s2 0.66 -> 0.25-0.32; 1-d 0.22-0.27 ->
# 0.11-0.12. At stride 1 it ties with subpixel (2.1-2.6 against 2.5-2.8 on 56x56 and
# 112x112, 0.44 against 0.38 on 7x7), which stays.
# subpixel pads the gradient with zeros and multiplies them by every weight: exact only for
# finite weights (FINITE_WEIGHT_KERNELS); with an inf or NaN weight the direct loops run.
# "subpixel" with strides (s^d phases) is available forced but not chosen: measured slower
# than col2im with the micro-kernel (2 threads, ms: grad input of conv2d_backward_64 8.7-9.6
# against 6.7; conv_transpose_4x4_s2 6.2-7.1 against 6.3-6.5; conv_transpose_2x2_s2 0.66
# against 0.21).
INPUT_GRAD_ALGORITHMS = ("direct", "col2im", "gemm1x1", "subpixel", "winograd",
                         "channels_last")


def _one_to_one(p):
    return p.in_per_group == 1 and p.out_per_group == 1


# The input gradient of a strided layer by its stride phases on the channels-last GEMM pays for
# its two transposes where the input is small. Zen 4, 2 threads, float32, ms, col2im ->
# channels-last phases (the layers of ResNet-50, 3x3 stride 2, batch 8): 512 channels on
# 14x14 16.7 -> 11.0, 256 on 28x28 14.5 -> 13.2, 128 on 56x56 16.0 -> 20.4 (12.8 MB each
# way); batch 1: 2.60 -> 2.19, 1.71 -> 1.55, 1.68 -> 1.60. A phase of one tap is a 1x1 GEMM
# (2x2 stride-2 transposed convolutions, 1x1 stride-2 layers), left to the other rules.
CHANNELS_LAST_PHASES_MAX_PLANE = 32 * 32
CHANNELS_LAST_PHASES_MAX_BYTES = 4 << 20
# A stride-1 layer is one phase of all its taps, and the same GEMM beats col2im's scatter where
# Winograd's rule does not take the layer (too few tiles). Zen 4, 2 threads, float32, ms,
# col2im -> channels-last, 3x3 but where said: 512 channels on 7x7, batch 1 2.5-3.0 -> 1.8-2.0,
# batch 2 7.7-8.7 -> 3.2, batch 4 9.9-12.5 -> 6.3 (PyTorch 1.3-1.7, 2.6-3.3, 5.4); 1024 on
# 8x8, batch 2 (a UNet's) 26.5 -> 16.5-19.0; 5x5 64 on 32x32, batch 4, 6.8-11.9 -> 4.3; 16
# on 28x28, batch 8, 0.48 -> 0.38-0.41. Fewer input channels than a vector waste the GEMM's
# columns: 3 on 32x32 0.04-0.05 -> 0.10-0.18. With a stride they still win on a 3x3 kernel but
# lose on larger ones, where col2im's rows (channels x taps) fill its tiles (Zen 4, 2 threads,
# 2026-12-06, a channels-last output gradient, ms, col2im / channels-last phases / PyTorch):
# 3x3 stride 2, 3 -> 32 channels on 224x224 (MobileNetV2's stem), batch 8, 9.1 / 7.8 / 5.7;
# 8 -> 32 on 56x56 0.81 / 0.61 / 0.50; 12 -> 64 1.31 / 0.84 / 0.67; 5x5 stride 2, 3 -> 32 on
# 112x112 2.5 / 4.0 / 3.3; 4 -> 64 on 64x64 1.7 / 3.0 / 2.2; ResNet's 7x7 stride-2 stem (3 ->
# 64 on 224x224), batch 1, 3.5 / 7.0 / 6.1, batch 8 28 / 60 / 49.
CHANNELS_LAST_PHASES_MIN_CHANNELS = 16
CHANNELS_LAST_PHASES_FEW_CHANNELS_MAX_TAPS = 9


def channels_last_phases_fill_columns(problem):
    """True if the channels-last phases' GEMM (columns: the input channels) is worth running
    for `problem`'s channel count: at least CHANNELS_LAST_PHASES_MIN_CHANNELS, or a strided
    kernel of at most CHANNELS_LAST_PHASES_FEW_CHANNELS_MAX_TAPS taps."""
    return (problem.in_channels >= CHANNELS_LAST_PHASES_MIN_CHANNELS
            or (any(s > 1 for s in problem.stride)
                and prod(problem.kernel_size) <= CHANNELS_LAST_PHASES_FEW_CHANNELS_MAX_TAPS))


def channels_last_phases_compute(problem):
    """True if the channels-last stride phases compute the input gradient of `problem`: 2-d,
    one group, dilation 1, zero padding within what each phase's taps reach (stride 1: one
    phase of every tap)."""
    return (problem.ndim == 2 and problem.groups == 1
            and all(d == 1 for d in problem.dilation)
            and tiling.stride_phase_geometry(problem.kernel_size, problem.stride,
                                             problem.padding, problem.in_size,
                                             problem.out_size) is not None)


def channels_last_phases_pay(problem, itemsize):
    """True if the input gradient of `problem` should run as channels-last stride phases."""
    strided = any(s > 1 for s in problem.stride)
    return (channels_last_phases_compute(problem)
            and all(k > s for k, s in zip(problem.kernel_size, problem.stride) if s > 1)
            and channels_last_phases_fill_columns(problem)
            and (strided or prod(problem.kernel_size) > 1)
            and (prod(problem.in_size) <= CHANNELS_LAST_PHASES_MAX_PLANE
                 or prod(problem.in_shape) * itemsize <= CHANNELS_LAST_PHASES_MAX_BYTES))


# At one or two images col2im on the micro-kernel beats the channels-last phases wherever those
# would run: each image's GEMMs stream the weights once, read in place where a chunk of input
# channels is whole panels (tiling.col2im_weight_in_place), packed once otherwise, where the
# phases pack the adjoint weight and transpose twice. Zen 4, 2 threads, float32, ms, the weights
# changed before every call as in training, col2im on the micro-kernel / channels-last phases /
# PyTorch: 3x3 stride 1, batch 1, 512 on 7x7 4.8 / 7.9 / 4.5, 256 on 14x14 2.1 / 3.0 / 2.1,
# 1024 on 8x8 15.9 / 21.1 / 28.9; batch 2, 512 on 7x7 8.1 / 8.5 / 4.7, 1024 on 8x8 15.5 / 21.8
# / 30.3; 3x3 stride 2, batch 1, 512 from 14x14 4.4 / 8.1 / 4.7, 256 from 28x28 2.3 / 3.7 /
# 2.8, 128 from 56x56 1.7-2.7 / 1.6-2.7 / 4.4; batch 2, 512 from 14x14 6.7 / 7.7 / 6.0; few
# channels (packed, not in place), us: 3 -> 32 from 224x224 432 / 1149, 8 -> 32 from 56x56
# 78 / 201, 24 -> 24 164 / 215, batch 2, 3 -> 8 from 30x30 47 / 212, 12 -> 64 from 56x56
# 233 / 382, 20 -> 20 on 31x31 197 / 203. At batch 4 the phases win (512 on 7x7 11.9 / 10.7 /
# 8.7): their one GEMM over every image's positions streams the weights once.
COL2IM_FEW_IMAGES = 2


def col2im_few_images(problem, itemsize):
    """True if the input gradient of `problem` should run as col2im on the micro-kernel where
    the channels-last phases would: at most COL2IM_FEW_IMAGES images x groups."""
    return (problem.batch * problem.groups <= COL2IM_FEW_IMAGES
            and channels_last_phases_pay(problem, itemsize))


# A channels-last output gradient: the channels-last kernels read it where it lies and write
# the input gradient channels-last, so col2im (channels-first) costs two layout copies more;
# at one or two images it still wins where packing the adjoint weight outweighs them, weights
# of at least this many times the input gradient's elements. Zen 4, 2 threads, float32, ms,
# weights changed every call, batch 1, col2im with the copies / channels-last / PyTorch: 512
# on 7x7 (weights 94 times the input) 2.5 / 3.1 / 5.4, 512 from 14x14 stride 2 (23 times)
# 2.7 / 4.2 / 5.2; 256 from 28x28 stride 2 (3 times) 2.0 / 2.0 / 1.9, 256 on 14x14 (12 times)
# 1.6 / 1.4 / 1.7, 128 from 56x56 stride 2 2.2 / 1.6 / 1.4, 128 on 28x28 (Winograd) 1.6 / 0.8
# / 1.3.
CHANNELS_LAST_COL2IM_MIN_WEIGHT_RATIO = 16


def channels_last_col2im_pays(problem, itemsize):
    """True if the input gradient of `problem` from a channels-last output gradient should
    run as col2im channels-first (col2im_few_images), its weights at least
    CHANNELS_LAST_COL2IM_MIN_WEIGHT_RATIO times the input's elements."""
    weights = problem.out_channels * problem.gemm_depth
    return (col2im_few_images(problem, itemsize)
            and weights >= CHANNELS_LAST_COL2IM_MIN_WEIGHT_RATIO * prod(problem.in_shape))


INPUT_GRAD_RULES = (
    Rule("gemm1x1", lambda p, *_: p.pointwise and fits_blas(p),
         "1x1 kernel, stride 1, no padding: the GEMM writes the input gradient directly"),
    Rule("winograd", lambda p, *_: winograd_input_grad_pays(p),
         f"3x3, stride 1, at least {WINOGRAD_MIN_CHANNELS} channels per group and "
         f"{WINOGRAD_MIN_TILES_INPUT_GRAD} tiles (or {WINOGRAD_MIN_TILES} to "
         f"{tiling.WINOGRAD_FUSED_MAX_TILES} in 2-d and 3-d with "
         f"{WINOGRAD_FUSED_INPUT_GRAD_MIN_CHANNELS} channels, the weights transformed as "
         "the GEMM goes): the gradient "
         "is a stride-1 convolution of the output gradient with the reversed, transposed "
         "weights, run by Winograd F(4x4, 3x3) (precision 'fast')"),
    Rule("subpixel", lambda p, *_: _one_to_one(p) and all(s == 1 for s in p.stride)
         and tiling.subpixel_plan(p) is not None,
         "one input and one output channel per group (depthwise, single-channel), stride 1: "
         "the gradient is a forward convolution of the output gradient with the reversed "
         "kernel, on the direct forward kernel"),
    Rule("direct", lambda p, *_: _one_to_one(p),
         "one input and one output channel per group (depthwise, single-channel images) with "
         "a stride, or weights that are not all finite: the GEMM would be an outer product; "
         "direct loops gather each gradient row in cache"),
    Rule("col2im", lambda p, itemsize, _: col2im_few_images(p, itemsize),
         f"at most {COL2IM_FEW_IMAGES} images x groups where the channels-last phases would "
         "run: each image's GEMMs on fastconv's micro-kernel stream the weights once, read "
         "where they lie when a chunk of input channels is whole panels of the tile"),
    Rule("channels_last", lambda p, itemsize, _: channels_last_phases_pay(p, itemsize),
         f"one group, at least {CHANNELS_LAST_PHASES_MIN_CHANNELS} input channels (strided "
         f"kernels of at most {CHANNELS_LAST_PHASES_FEW_CHANNELS_MAX_TAPS} taps: any), a "
         "kernel wider than its stride along each strided axis (stride 1: more than one tap), "
         "and "
         f"a small input (planes of at most {CHANNELS_LAST_PHASES_MAX_PLANE} pixels, or "
         f"{CHANNELS_LAST_PHASES_MAX_BYTES >> 20} MiB): each stride phase is a stride-1 "
         "convolution of the output gradient, run as a channels-last GEMM between two layout "
         "transposes (no scatter, no zeros multiplied)"),
    Rule("col2im", lambda *_: True,
         "a GEMM over channels: multiply bands by W^T (fastconv's micro-kernel, or BLAS where "
         "it runs full width) and scatter them back (col2im; through a stride-phase grid for "
         "batches of small planes, see input_grad_phase_grid)"),
)


# The input gradient through the phase grid sums each input pixel's contributions in another
# order than col2im by row segments, so the choice must not depend on the thread count (the
# result would): it needs this many (image, group) planes whatever the threads, enough to keep
# 16 busy. Measured on Zen 5, 2 threads, float32 (col2im by segments -> phase grid, us, the
# forward problem named): (32,16,28,28)*(32,16,3,3) s2 442 -> 283; (32,32,14,14)*(32,32,3,3)
# s2 277 -> 220; the same at stride 1 1105 -> 701; (64,64,7,7)*(64,64,3,3) 1352 -> 1094;
# (16,64,56,56)*(64,64,3,3) 12016 -> 8895.
PHASE_GRID_MIN_PLANES_INPUT_GRAD = 16


def input_grad_phase_grid(problem, itemsize):
    """True if the col2im input gradient should go through the phase grid (for finite
    weights: see FINITE_WEIGHT_KERNELS)."""
    return (problem.batch * problem.groups >= PHASE_GRID_MIN_PLANES_INPUT_GRAD
            and tiling.phase_grid_fits(problem, itemsize))


def _phase_input_grad_kernel(problem, itemsize):
    # a group of fewer input channels than a register tile has rows would waste most of
    # each tile as one product per stride class: scatter a col buffer instead
    mr, _ = tiling.wide_tile(itemsize)
    return Kernel.INPUT_GRAD_PHASE_SCATTER if problem.in_per_group < mr \
        else Kernel.INPUT_GRAD_PHASE_CLASSES


def adjoint_pointwise(problem):
    """The input gradient of a pointwise `problem` as the forward 1x1 convolution it is: of the
    output gradient (C_out channels) into C_in."""
    nd = problem.ndim
    return ConvProblem(problem.batch, problem.out_channels, problem.in_channels,
                       problem.groups, problem.out_size, (1,) * nd, (1,) * nd,
                       ((0, 0),) * nd, (1,) * nd)


# A batch of small output planes makes each image's GEMM of the col2im input gradient a
# narrow one (49 positions on 7x7), where BLAS spends its time in per-call packing; fastconv's
# micro-kernel packs W^T once per call. Measured on AMD Zen 3 (EPYC, AVX2), 2 threads, float32,
# batch 8, ms (BLAS -> packed): 512 -> 512 3x3 stride 2 from 14x14 28.8 -> 21.0; 256 -> 256
# from 28x28 20.0 -> 16.9; on larger planes even (128 from 56x56 19.2 -> 17.8) or worse (a
# 5x5 on 28x28 13.7 -> 15.6; 1x1 stride 2 from 28x28 14.5 -> 16.0), and at batch 1 BLAS won
# (512 on 7x7 3.4 against 4.8) while W^T was packed on one thread. Read where it lies
# (tiling.col2im_weight_in_place) the micro-kernel wins at batch 1 too (Zen 4, 2 threads, ms,
# BLAS -> in place, weights changed every call: 512 on 7x7 5.5 -> 4.8, 256 on 14x14 2.3 ->
# 2.1, 512 from 14x14 stride 2 4.8 -> 4.4, 256 from 28x28 2.5 -> 2.3, 128 from 56x56 1.9 ->
# 1.7), so it runs wherever it reads them in place.
PACKED_COL2IM_MAX_PLANE = 256


def packed_col2im_pays(problem):
    """True if the col2im input gradient of `problem` should multiply on fastconv's
    micro-kernel although BLAS runs full width: more than one image, a kernel of more than one
    tap, output planes of at most PACKED_COL2IM_MAX_PLANE positions."""
    return (problem.batch >= 2 and prod(problem.kernel_size) > 1
            and prod(problem.out_size) <= PACKED_COL2IM_MAX_PLANE)


def _input_grad_kernel(family, problem, itemsize, threads, finite_weights):
    if family == "gemm1x1":
        adjoint = adjoint_pointwise(problem)
        if tiling.packed_stacks_images(adjoint, tiling.packed_tile(adjoint, itemsize)[2]):
            return Kernel.INPUT_GRAD_GEMM1X1_STACKED
        return Kernel.INPUT_GRAD_GEMM1X1_BLAS
    if family == "col2im":
        if finite_weights and input_grad_phase_grid(problem, itemsize):
            return _phase_input_grad_kernel(problem, itemsize)
        return Kernel.INPUT_GRAD_COL2IM_PACKED if own_gemm(problem) \
            or packed_col2im_pays(problem) or col2im_few_images(problem, itemsize) \
            or tiling.col2im_weight_in_place(problem, itemsize, threads) \
            else Kernel.INPUT_GRAD_COL2IM_BLAS
    if family == "direct" and finite_weights and _one_to_one(problem):
        return Kernel.INPUT_GRAD_DIRECT_PHASES
    return {"direct": Kernel.INPUT_GRAD_DIRECT_ROWS, "subpixel": Kernel.INPUT_GRAD_SUBPIXEL,
            "winograd": Kernel.INPUT_GRAD_WINOGRAD,
            "channels_last": Kernel.INPUT_GRAD_CHANNELS_LAST_PHASES}[family]


def plan_input_grad(problem, dtype, algorithm="auto", weight=None):
    """The Plan of the input gradient of `problem` (or the transposed convolution it
    describes) in `dtype`. `weight`, if given, is checked for finiteness only when the plan
    would run a kernel that needs finite weights."""
    itemsize = np.dtype(dtype).itemsize
    threads = _threads.threads_for(problem.explicitly_padded.multiply_adds)
    _check_name(algorithm, "input_grad")
    key = (problem, itemsize, algorithm, threads, blas_runs_full_width(),
           _precision.get_precision())
    plan = _plan_input_grad(*key, True)
    if plan.kernel in FINITE_WEIGHT_KERNELS and weight is not None \
            and not _all_finite(weight):
        plan = _plan_input_grad(*key, False)
    return plan


def _all_finite(weight):
    # a finite sum means finite weights (an inf or NaN makes it inf or NaN; a sum that
    # overflows only costs the faster path), without a boolean temporary
    return bool(np.isfinite(np.add.reduce(weight, axis=None)))


@lru_cache(maxsize=1024)
def _plan_input_grad(problem, itemsize, algorithm, threads, full_width_blas, precision,
                     finite_weights):
    padded = problem.explicitly_padded
    family, variant, reason = _choose(padded, itemsize, threads, algorithm, INPUT_GRAD_RULES,
                                      INPUT_GRAD_ALGORITHMS, "input_grad")
    if family in ("subpixel", "winograd") and algorithm == "auto" and not finite_weights:
        family, reason = "direct", WHY_NOT_FINITE
    kernel = variant or _input_grad_kernel(family, padded, itemsize, threads, finite_weights)
    if not variant:
        reason += VARIANT_WHY.get(kernel, "")
    if kernel in FINITE_WEIGHT_KERNELS and not finite_weights:
        raise ValueError(f"algorithm={algorithm!r} needs finite weights (it multiplies "
                         f"padding zeros by every weight); got a weight with inf or NaN")
    if kernel == Kernel.INPUT_GRAD_SUBPIXEL:
        return Plan(kernel, reason, threads, phases=_subpixel_phases(padded, itemsize))
    if kernel == Kernel.INPUT_GRAD_WINOGRAD:
        if tiling.subpixel_plan(padded) is None:
            raise ValueError("algorithm='winograd' computes the input gradient as one stride-1 "
                             "convolution of the output gradient, which needs padding at "
                             f"most 2 past an output of this size; got padding "
                             f"{problem.padding} with output {problem.out_size}")
        return Plan(kernel, reason, threads,
                    phases=_subpixel_phases(padded, itemsize, "winograd"))
    geometry = tiling.kernel_geometry(padded)
    if kernel == Kernel.INPUT_GRAD_GEMM1X1_STACKED:
        adjoint = adjoint_pointwise(padded)
        shape, mr, nr = tiling.packed_tile(adjoint, itemsize)
        tile_panels, channel_panels = tiling.packed_partition(adjoint, itemsize, mr, nr,
                                                              threads, stacked=True)
        return Plan(kernel, reason, threads, geometry, tile_panels=tile_panels,
                    channel_panels=channel_panels, tile_shape=shape)
    if kernel == Kernel.INPUT_GRAD_DIRECT_PHASES:
        return Plan(kernel, reason, threads, geometry,
                    band_rows=tiling.direct_phases_band(padded, itemsize, threads))
    if kernel in FINITE_WEIGHT_KERNELS:
        _, nr = tiling.wide_tile(itemsize)
        return Plan(kernel, reason, threads, geometry,
                    tile_panels=tiling.phase_grid_tile(padded, itemsize, nr))
    band, chunks = tiling.input_grad_work_split(padded, itemsize, threads)
    return Plan(kernel, reason, threads, geometry, band_rows=band, channel_chunks=chunks)


def _subpixel_phases(problem, itemsize, phase_algorithm="auto"):
    """The stride-1 forward convolutions of a subpixel input gradient, each with its plan
    (by `phase_algorithm`)."""
    phases = []
    for out_index, taps_index, g_index, padding, dilation in tiling.subpixel_plan(problem):
        taps = tuple(len(range(k)[t]) for k, t in zip(problem.kernel_size, taps_index))
        size = tuple(len(range(n)[g]) for n, g in zip(problem.out_size, g_index))
        phase = ConvProblem(problem.batch, problem.out_channels, problem.in_channels,
                            problem.groups, size, taps, (1,) * problem.ndim, tuple(padding),
                            tuple(dilation))
        threads = _threads.threads_for(phase.multiply_adds)
        phases.append((out_index, taps_index, g_index, phase,
                       _plan_conv(phase, itemsize, phase_algorithm, threads,
                                  tiling.INTERRUPT_WORK, _precision.get_precision())))
    return tuple(phases)


# ---------------------------------------------------------------------------------------------
# Weight gradient

WEIGHT_GRAD_ALGORITHMS = ("depthwise", "gemm", "phase", "winograd")

# The weight gradient as dot products on the phase grid (no unfolding, no transposition).
# Measured on Zen 5, 2 threads, float32 (im2col + GEMM -> phase grid, us): (32,1,28,28) with
# 16 3x3 filters 221 -> 109; (32,16,28,28)*(32,16,3,3) s2 460 -> 321, s1 1247 -> 702;
# (32,32,14,14)*(32,32,3,3) s2 318 -> 245; (64,64,7,7)*(64,64,3,3) 1443 -> 1120;
# (16,64,56,56)*(64,64,3,3) 13292 -> 9103. Each chunk of work keeps a partial gradient:
# bounded here. Zen 4, 2 threads, float32, ms, gemm -> phase grid, for gradients of 2^16 to
# 2^18 elements: 128 -> 128 3x3 s2 on 56x56, batch 8, 17.3 -> 13.5, batch 2 4.0 -> 3.5; 64 ->
# 128 on 64x64, batch 4, 16.4 -> 13.6; 96 -> 96 on 28x28, batch 8, 7.3 -> 6.3; 128 -> 192
# s2 9.3 -> 8.5; 128 on 32x32 s2, batch 4, 2.35 / 2.40 (a tie). In 3-d the larger ones lost
# (64 -> 128 3x3x3 on 8x16x16, batch 2, 12.2 -> 13.5; 96 -> 96 19.9 -> 21.8), and so did
# strided 1x1 layers, whose GEMM reads the sampled pixels unfolded by nothing (256 -> 512 s2
# on 56x56, batch 8, 10.8 -> 11.1; 128 -> 520 on 14x14 0.25 -> 0.54), and small planes,
# where the GEMM stacks the images' positions (128 -> 128 on 7x7, batch 8, 1.2 -> 2.1; on
# 14x14 s2 1.05 -> 1.65; 32 -> 260 on 6x5 0.15 -> 0.55): those keep 2^16.
PHASE_GRID_MAX_WEIGHT_GRAD = 1 << 18     # C_out x C_in/groups x taps
PHASE_GRID_MAX_WEIGHT_GRAD_SMALL = 1 << 16


# With fewer (image, group) planes than threads (batch 1), the phase grid's weight gradient
# shares each plane's dot products out among the threads (and the forward its tiles of
# positions, packed_phase_grid). It pays for a strided stem: the
# GEMM's im2col of a few-channel input gathers each tap's row one strided element at a time,
# while the grid copies the input once; with more taps than output channels, the extended
# copy of the output gradient that the dot products read costs less than that im2col. Zen 4,
# 2 threads, float32, batch 1, ms, phase / gemm (PyTorch): 3 -> 64 7x7 stride 2 on 224x224
# 1.68 / 2.65 (1.36), in one process without PyTorch (minima) 2.67 / 3.41 in a slow hour;
# 3 -> 96 11x11 stride 4 1.44 / 1.65; 3 -> 24 7x7 stride 2 on 112x112 0.26 / 0.40; 3 -> 64
# 5x5 stride 2 1.08 / 1.27 (medians 2.28 / 1.52). Not at stride 1 nor with few taps: 3 -> 64
# 3x3 on 128x128 2.08 / 0.62 (0.90), 3 -> 32 3x3 stride 2 1.35 / 0.58, 1 -> 16 5x5 on 256x256
# 1.28 / 0.84; nor for more channels: 64 -> 64 3x3 on 56x56 1.55 / 1.52, 32 on 112x112 2.83 /
# 1.75, 16 on 64x64 0.39 / 0.26.
PHASE_SHARED_PLANE_MAX_CHANNELS = 4


def phase_shared_plane_pays(problem):
    """True if the phase grid should share one plane among the threads for `problem` (a
    strided stem): its weight gradient takes the phase kernel with one plane's dot products
    split among them, and at batch 1 its forward the shared-grid kernel (see above)."""
    return (problem.in_per_group <= PHASE_SHARED_PLANE_MAX_CHANNELS
            and any(s > 1 for s in problem.stride)
            and problem.gemm_depth >= problem.out_channels // problem.groups)


def phase_weight_grad_limit(problem, itemsize):
    """The largest weight gradient (elements) that auto computes on the phase grid."""
    if problem.ndim == 3 or prod(problem.kernel_size) == 1 \
            or stacked_problem(problem, itemsize) is not None:
        return PHASE_GRID_MAX_WEIGHT_GRAD_SMALL
    return PHASE_GRID_MAX_WEIGHT_GRAD

# The depthwise weight gradient by rows (WEIGHT_GRAD_DEPTHWISE_ROWS): each channel's sums stay
# in registers over the whole batch, work items blocks of adjacent channels (image outer,
# channel inner: x and g read in long runs), so it needs channels to share out. At stride 1
# it beats the phase grid on every plane measured; with a stride, each input row's phase
# split costs more than it saves on small planes. Zen 4 (AVX-512), 2 threads, float32,
# (batch, channels, plane) kernel, weight gradient alone (phase grid -> rows, ms): stride 1
# (8,144,28) 3x3 0.41-0.44 -> 0.21-0.22, (8,576,14) 0.54 -> 0.28, (8,960,7) 0.51 -> 0.30,
# (8,960,4) 0.35-0.45 -> 0.20-0.24, (1,576,14) 0.118 -> 0.073, (2,64,8) 0.042 -> 0.030, 5x5
# (8,672,14) 1.61 -> 0.65, 1-d (8,64,4000) k5 0.86-0.89 -> 0.35-0.36, 3-d (2,32,8x28x28)
# 0.56 -> 0.20; stride 2 (8,144,56) 3x3 0.85-0.97 -> 0.70-0.81, (8,96,112) 3.0-3.2 ->
# 2.3-2.4, but (8,576,14) 0.35 -> 0.46, 5x5 0.68 -> 0.71-0.73, (4,32,30) 0.050 both.
DEPTHWISE_ROWS_MIN_CHANNELS_PER_THREAD = 4
DEPTHWISE_ROWS_MIN_STRIDED_PRODUCTS = 4096      # output positions x taps of one plane


def depthwise_rows_pays(problem, threads):
    """True if the depthwise weight gradient should run by rows (see above)."""
    return (_one_to_one(problem)
            and problem.groups >= DEPTHWISE_ROWS_MIN_CHANNELS_PER_THREAD * threads
            and (all(s == 1 for s in problem.stride)
                 or prod(problem.out_size) * prod(problem.kernel_size)
                 >= DEPTHWISE_ROWS_MIN_STRIDED_PRODUCTS))

# The weight gradient of a 3x3, stride-1 layer by Winograd F(2x2, 3x3) (WEIGHT_GRAD_WINOGRAD:
# 16 GEMMs over the 2x2 tiles of the whole batch instead of one over the pixels with 9 taps
# each): its transforms write and read 4 values per pixel and channel, so it pays where the
# GEMMs are wide (channels) and deep (tiles). Zen 4, 2 threads, float32, ms (im2col or phase
# grid -> winograd, caches warm, four interleaved rounds): batch 8, 128 -> 128 on 28x28
# 11.5-11.8 -> 8.9-9.2 (PyTorch 8.8-9.3), 256 on 14x14 11.0-11.2 -> 7.1-7.3, 512 on 7x7
# 11.0-13.7 -> 9.5-11.5; batch 2, 128 on 64x64 15.1-16.1 -> 12.6-13.6; batch 1, 128 on 28x28
# 1.39-1.54 -> 1.24-1.28; but 64 -> 64 channels lose (batch 8, 56x56: 9.6 -> 14.4; 32x32:
# 3.5-4.2 -> 4.4-4.9). On a later Zen 4 VM (2026-12-07, copy 32-48 GB/s) 64 channels were
# mixed: batch 8, 64 -> 64 on 56x56 10.2-10.6 -> 8.7-9.3 (PyTorch 10.4-11.3), 64 -> 128
# there 19.0-21.0 -> 13.5-16.3, 32x32 a tie, but batch 2 on 128x128 13.3-13.7 -> 15.9-16.4
# and batch 1 on 56x56 1.50-1.70 -> 1.57-1.84; and 64 inside the ResNet-50, UNet and VGG-11
# training steps (bench/compare_rules.py, 6 rounds) moved none of them (PyTorch / fastconv
# 1.14 -> 1.12, 1.48 -> 1.49, 1.51 -> 1.51): kept at 128.
WINOGRAD_GRAD_MIN_CHANNELS = 128
WINOGRAD_GRAD_MIN_TILES = 128
# In 3-d (F(2x2, 3x3) over each depth tap, the input's tiles transformed once for the KD
# taps, each tap's GEMMs over just the gradient slices whose input depth is inside the
# input) on Zen 4, 2 threads, float32, ms, gemm or phase -> winograd (PyTorch), batch 2
# unless said: 128 -> 256 on 4x8x8 5.7 -> 3.2 (6.3); batch 8 24.1 -> 10.4 (14.6); 64 -> 128
# on 8x16x16 11.0 -> 6.6 (8.0); 64 -> 64 on 4x8x8 1.03 -> 0.54 (0.50), batch 4 on 4x14x14
# 5.6 -> 4.9 (3.1), batch 4 on 8x28x28 38.7 -> 20.3 (25.6), batch 1 on 16x32x32 22.6 -> 16.7
# (19.5), batch 1 on 2x8x8 (32 tiles) 0.66 -> 0.54; 32 channels tie or lose (32 -> 64 on
# 16x32x32 21.3-21.5 -> 19.3-24.7; 64 -> 32 there 23.9 -> 27.6; 32 -> 32 on 16x32x32 11.3
# -> 12.5, on 8x16x16 1.73 -> 1.07), and so do the fewest tiles (128 -> 128 on 1 x 2x4x4, 8
# tiles: 0.64 -> 1.23; 256 on 2 x 2x4x4, 16 tiles: 1.70 -> 1.62).
WINOGRAD_GRAD_MIN_CHANNELS_3D = 64
WINOGRAD_GRAD_MIN_TILES_3D = 32
# Images per chunk: their transformed tiles, both operands, about this many bytes (they are
# written, then read by the GEMMs: 4 images of 28x28 with 128 channels beat 1 and 8 by 3-9%).
WINOGRAD_GRAD_CHUNK_BYTES = 12 << 20
WINOGRAD_GRAD_ELEMENTS = 16     # transformed values per 2x2 tile (conv_winograd's 4x4)


def winograd_grad_computes(problem):
    """True if the Winograd weight gradient computes `problem`: a 2-d 3x3 kernel or a 3-d
    (KD, 3, 3) one, stride 1, dilation 1."""
    return (problem.ndim in (2, 3) and problem.kernel_size[-2:] == (3, 3)
            and all(s == 1 for s in problem.stride) and all(d == 1 for d in problem.dilation))


def winograd_grad_tiles(problem):
    """The 2x2 tiles of the output gradient over the whole batch (each depth slice's)."""
    *depth, oh, ow = problem.out_size
    return problem.batch * prod(depth) * -(-oh // 2) * -(-ow // 2)


def winograd_grad_image_bytes(problem, itemsize):
    """The transformed tiles of one image (both operands): in 3-d over max(D, D_out) depth
    slices (conv_winograd.weight_grad)."""
    *depth, oh, ow = problem.out_size
    slices = max(depth[0], problem.in_size[0]) if depth else 1
    return ((problem.in_channels + problem.out_channels) * WINOGRAD_GRAD_ELEMENTS * itemsize
            * slices * -(-oh // 2) * -(-ow // 2))


# The same in blocks of tile rows (conv_winograd.weight_grad_blocks; 2-d, one group): where the
# 16 products C_out x C_in fit a core's cache, each work unit (a few rows of 2x2 tiles of one
# image) is laid out channels-last, transformed and multiplied on fastconv's micro-kernel while
# its tiles are in cache, instead of the batch's transformed tiles going to memory and back
# through BLAS's packing. Intel Xeon (AVX-512), 2 threads, float32, ms, auto before (phase grid,
# or winograd from 128 channels) -> blocks (PyTorch): batch 8, 64 -> 64 on 56x56 9.9 -> 4.4
# (10.7); 64 -> 128 there 19.3 -> 8.6-9.2 (15.2); 128 -> 128 on 28x28 6.2 -> 4.3 (6.7), on
# 56x56 22.5 -> 16.2 (33.3); 32 -> 32 on 112x112 9.4 -> 5.1 (13.8); 16 -> 16 there 2.7 -> 1.8
# (2.7); batch 2, 64 on 128x128 12.4 -> 6.1 (14.8); batch 1, 64 on 56x56 1.21 -> 0.71 (1.04), on
# 7x7 0.09 -> 0.06 (0.05); 128 on 28x28 0.96 -> 0.74 (0.87). Products of 2 MiB (128 -> 256)
# still gain: batch 2 on 32x32 3.56 -> 2.95 ms, batch 8 on 28x28 10.3 -> 8.8, and inside the
# UNet and VGG-11 training steps (bench/compare_rules.py, 1 MiB -> 2 MiB) 564 -> 545 and 199.7
# -> 197.3 ms; 4 MiB (256 -> 256) gains nothing more (on 14x14, batch 8, 4.80 -> 4.66, and
# 17.8 against 16.8 on 28x28): each chunk's copy of the products leaves the cache. With few
# channels the transforms' vectors and the GEMM's columns are mostly empty: 3 -> 64 on 224x224
# 15.0 -> 28.3, 8 -> 8 on 64x64 0.32 -> 0.47.
# In 3-d each depth tap runs as such a 2-d gradient over the gradient's planes whose input
# plane lies inside the input (every image's planes the units' "images"; from 32 tiles, as the
# batch-wide path). Intel Xeon, 2 threads, float32, ms, auto before (phase grid, or batch-wide
# winograd from 64 channels) -> blocks (PyTorch): batch 2, 32 -> 64 on 16x32x32 21.3 -> 9.3
# (13.0); 64 -> 128 on 8x16x16 5.0 -> 4.3 (5.5); 128 -> 256 on 4x8x8 2.7 -> 3.0 (3.0); batch
# 8 there 17.5 -> 7.4 (9.9); 16 -> 32 on 16x64x64 24.0 -> 12.7 (15.6); batch 4, 64 -> 64 on
# 4x14x14 4.5 -> 1.8 (2.0); batch 1, 32 -> 32 on 4x8x8 0.25 -> 0.14 (0.21), 128 -> 128 on 2x4x4
# (8 tiles) 0.31 -> 0.53 (0.23): below 32 tiles the exact kernels stay.
WINOGRAD_GRAD_BLOCKS_MIN_CHANNELS = 16
WINOGRAD_GRAD_BLOCKS_MAX_PRODUCT_BYTES = 2 << 20
# A unit's transformed tiles, both operands, about this many bytes (rows of tiles: 64 -> 64 on
# 56x56, batch 8: 2 rows 4.6 ms, 4 rows (0.9 MB) 4.4, 8 rows 5.1; 64 on 128x128 batch 2: 2 rows
# (1 MB) 6.1, 4 rows 6.8).
WINOGRAD_GRAD_BLOCK_BYTES = 1 << 20
# Units go to at most this many chunks (or one a thread, with more threads), each summing its
# own products, and at least this many tiles a chunk (its products cost about as much to
# clear and add up as to multiply over ~100 tiles), but two (both threads of these machines
# busy): up to 8 threads a number that depends on the problem only, so the sums do not
# depend on the thread count; past 8, a fixed number would leave threads idle.
WINOGRAD_GRAD_BLOCK_CHUNKS = 8
WINOGRAD_GRAD_BLOCK_CHUNK_TILES = 256


def winograd_grad_blocks_apply(problem, itemsize):
    """True if the Winograd weight gradient of `problem` runs in blocks of tile rows (in 3-d,
    those of each depth tap's planes)."""
    return (problem.ndim in (2, 3) and problem.groups == 1
            and min(problem.in_channels, problem.out_channels)
            >= WINOGRAD_GRAD_BLOCKS_MIN_CHANNELS
            and WINOGRAD_GRAD_ELEMENTS * problem.in_channels * problem.out_channels * itemsize
            <= WINOGRAD_GRAD_BLOCKS_MAX_PRODUCT_BYTES)


def winograd_grad_blocks(problem, itemsize, threads=1):
    """(rows of 2x2 tiles, planes, chunks) of the blocked Winograd weight gradient's work
    units on `threads` threads: rows of one plane, or several whole planes (images; in 3-d
    the depth slices of the images, a depth tap at a time), about WINOGRAD_GRAD_BLOCK_BYTES
    of transformed tiles."""
    *depth, oh, ow = problem.out_size
    tiles_h, tiles_w = -(-oh // 2), -(-ow // 2)
    planes = problem.batch * prod(depth)
    per_row = (WINOGRAD_GRAD_ELEMENTS * tiles_w * (problem.in_channels + problem.out_channels)
               * itemsize)
    rows = int(max(1, min(tiles_h, WINOGRAD_GRAD_BLOCK_BYTES // per_row)))
    images = int(max(1, min(planes, WINOGRAD_GRAD_BLOCK_BYTES // (per_row * tiles_h))))
    units = -(-planes // images) * -(-tiles_h // rows)
    chunks = min(max(WINOGRAD_GRAD_BLOCK_CHUNKS, threads), units,
                 max(2, planes * tiles_h * tiles_w // WINOGRAD_GRAD_BLOCK_CHUNK_TILES))
    return rows, images, chunks


def winograd_grad_pays(problem, itemsize=4):
    """True if `auto` should take the Winograd weight gradient (precision "fast")."""
    min_channels, min_tiles = (
        (WINOGRAD_GRAD_MIN_CHANNELS_3D, WINOGRAD_GRAD_MIN_TILES_3D) if problem.ndim == 3
        else (WINOGRAD_GRAD_MIN_CHANNELS, WINOGRAD_GRAD_MIN_TILES))
    if not (winograd_grad_computes(problem) and _precision.get_precision() == "fast"):
        return False
    tiles = winograd_grad_tiles(problem)
    return (winograd_grad_blocks_apply(problem, itemsize)
            and (problem.ndim == 2 or tiles >= min_tiles)
            or min(problem.in_per_group, problem.out_per_group) >= min_channels
            and tiles >= min_tiles)


WEIGHT_GRAD_RULES = (
    Rule("winograd", lambda p, itemsize=4, *_: winograd_grad_pays(p, itemsize),
         f"3x3 (in 3-d, KD x 3 x 3), stride 1, at least {WINOGRAD_GRAD_MIN_CHANNELS} channels "
         f"per group each way and {WINOGRAD_GRAD_MIN_TILES} 2x2 tiles of output gradient "
         f"(in 3-d {WINOGRAD_GRAD_MIN_CHANNELS_3D} and {WINOGRAD_GRAD_MIN_TILES_3D}), or "
         f"with one group at least {WINOGRAD_GRAD_BLOCKS_MIN_CHANNELS} channels each way "
         f"and products of at most {WINOGRAD_GRAD_BLOCKS_MAX_PRODUCT_BYTES >> 10} KiB (in "
         f"3-d with {WINOGRAD_GRAD_MIN_TILES_3D} tiles): "
         "Winograd F(2x2, 3x3), 16 GEMMs (per depth tap) over the tiles (precision 'fast')"),
    Rule("depthwise", lambda p, itemsize=4, threads=1, *_: depthwise_rows_pays(p, threads),
         "one input and one output channel per group (depthwise), at least "
         f"{DEPTHWISE_ROWS_MIN_CHANNELS_PER_THREAD} channels a thread, stride 1 or planes of "
         f"at least {DEPTHWISE_ROWS_MIN_STRIDED_PRODUCTS} positions x taps: each channel's "
         "sums over the whole batch in registers (no partial buffers), blocks of adjacent "
         "channels a work item, from zero-padded copies of its input rows"),
    Rule("phase", lambda p, itemsize=4, threads=1, *_: (
        p.out_channels * p.gemm_depth <= phase_weight_grad_limit(p, itemsize)
        and (p.batch * p.groups >= threads or phase_shared_plane_pays(p))
        and tiling.phase_grid_fits(p, itemsize)),
         "dot products of the output gradient with the stride-phase grid of the input (no "
         "unfolding, no transposition; the bias gradient summed on the way), one (image, "
         "group) plane or more per thread, or with fewer planes than threads a strided stem's "
         f"(at most {PHASE_SHARED_PLANE_MAX_CHANNELS} input channels, more taps than output "
         "channels), each plane's dot products shared out"),
    Rule("gemm", lambda *_: True,
         "im2col bands (or the input itself for a 1x1 kernel) times the output gradient, on "
         "fastconv's micro-kernel, summed in fixed partial sums (small planes: the images' "
         "positions stacked, on BLAS where it runs full width)"),
)


# The weight gradient over small planes: per image the GEMM's depth is one plane (49 positions
# on 7x7), and every such product reads and writes the whole gradient (2048 x 512 in
# ResNet-50's last stage, 512 x 4608 in VGG's) into per-chunk buffers. With all the images'
# positions as one deep sum (the operand: for a 1x1 kernel without padding the input's
# sampled pixels, at stride 1 the input itself; else every image's im2col; the output
# gradient read in place), each block of output channels is one thread's GEMMs, one per image,
# accumulated in image order. Measured on Zen 4, 2 threads, float32, ResNet-50's and VGG-11's
# layers (ms, per image -> stacked; notes/winograd.md). The images were first copied end to
# end, channels first (single-threaded numpy copies of both operands): reading them in place
# took MobileNetV2's 1x1 weight gradients at batch 8 from 0.5x PyTorch to 0.9-1.0x (ms: 96 ->
# 576 on 14x14 2.42 -> 1.00, 160 -> 960 on 7x7 1.56 -> 0.77, 320 -> 1280 2.93 -> 1.71).
STACK_IMAGES_MAX_PLANE = 256
STACK_IMAGES_MAX_BYTES = 64 << 20      # the images' im2col
# Blocks per group (of output channels, or of input channels x taps where those are more):
# each GEMM packs the whole of the other operand again, so few; a fixed count, so the split
# never depends on the thread count.
STACKED_BLOCKS = 4
# Larger planes too while all the images' positions are few: one image or two of 28x28 is a
# GEMM of depth 784-1568, split in blocks rather than in partial sums per band (ms, per band
# -> stacked: batch 1, 128 -> 128 3x3 2.0 -> 1.6; 512 -> 128 1x1 0.83 -> 0.62; batch 2,
# 128 -> 128 3x3 3.6 -> 3.2; but batch 8 11.6 -> 13.1). At batch 1 the plane limit alone
# left the 7x7 and 14x14 layers on per-band partial sums of the whole gradient: stacked, 512
# -> 512 3x3 on 7x7 3.5 -> 1.7 ms, 2048 -> 512 1x1 1.8 -> 0.67 (PyTorch 2.9 and 2.3).
STACK_IMAGES_MAX_POSITIONS = 2048


def sampled_pointwise(problem):
    """True if `problem`'s taps read each input pixel at most once (1x1 kernel, no padding):
    its stacked operand is a copy of the sampled pixels, not an im2col."""
    return all(k == 1 for k in problem.kernel_size) and all(p == (0, 0) for p in problem.padding)


def stacked_problem(problem, itemsize):
    """The 1-d pointwise problem (batch 1) whose weight gradient is `problem`'s with the
    images' positions stacked end to end and the taps as input channels, or None where
    stacking does not apply (large planes and many positions in all, a stacked im2col too
    big)."""
    positions = problem.batch * prod(problem.out_size)
    taps = prod(problem.kernel_size)
    plane = prod(problem.out_size)
    if (plane > STACK_IMAGES_MAX_PLANE and positions > STACK_IMAGES_MAX_POSITIONS
            or not sampled_pointwise(problem)
            and problem.in_channels * taps * positions * itemsize > STACK_IMAGES_MAX_BYTES):
        return None
    return ConvProblem(1, problem.in_channels * taps, problem.out_channels, problem.groups,
                       (positions,), (1,), (1,), ((0, 0),), (1,))


# The weight gradient's GEMMs over one image's positions (a plane too large to stack) run on
# fastconv's micro-kernel even where BLAS runs full width. Zen 4, 2 threads, float32, ms, BLAS
# -> micro-kernel: 3x3 64 -> 64 on 56x56, batch 1 1.56-1.67 -> 1.34-1.37 (PyTorch 1.25-1.27);
# 128 -> 128 stride 2 from 56x56, batch 8 13.4-13.8 -> 12.2-12.3; 64 -> 64 on 128x128, batch
# 2 16.2-16.6 -> 13.8-15.3; 32 -> 32 stride 2 from 112x112, batch 8 6.4 -> 5.6; the 7x7
# stride-2 stem, batch 1 2.06 -> 1.92; 1x1 256 -> 64 on 56x56, batch 1 0.79-0.81 -> 0.61-0.62,
# batch 8 5.98-6.00 -> 5.07-5.14; 64 -> 256 batch 8 5.33-5.45 -> 4.99-5.01.
def _weight_grad_kernel(family, problem):
    if family == "winograd":
        return Kernel.WEIGHT_GRAD_WINOGRAD
    if family == "phase":
        return Kernel.WEIGHT_GRAD_PHASE
    if family == "depthwise":
        return Kernel.WEIGHT_GRAD_DEPTHWISE_ROWS
    return Kernel.WEIGHT_GRAD_GEMM1X1_PACKED if problem.pointwise and fits_blas(problem) \
        else Kernel.WEIGHT_GRAD_IM2COL_PACKED


def plan_weight_grad(problem, dtype, algorithm="auto"):
    """The Plan of the weight gradient of `problem` in `dtype`."""
    itemsize = np.dtype(dtype).itemsize
    threads = _threads.threads_for(problem.explicitly_padded.multiply_adds)
    _check_name(algorithm, "weight_grad")
    return _plan_weight_grad(problem, itemsize, algorithm, threads, blas_runs_full_width(),
                             _precision.get_precision())


@lru_cache(maxsize=1024)
def _plan_weight_grad(problem, itemsize, algorithm, threads, full_width_blas, precision):
    padded = problem.explicitly_padded
    family, variant, reason = _choose(padded, itemsize, threads, algorithm, WEIGHT_GRAD_RULES,
                                      WEIGHT_GRAD_ALGORITHMS, "weight_grad")
    if family == "winograd" and winograd_grad_blocks_apply(padded, itemsize):
        rows, images, chunks = winograd_grad_blocks(padded, itemsize, threads)
        return Plan(Kernel.WEIGHT_GRAD_WINOGRAD, reason + f"; in units of {rows} rows of tiles "
                    f"of {images} plane(s) (images; in 3-d, each depth tap's gradient "
                    f"slices), each transformed channels-last and multiplied while in cache, "
                    f"summed in {chunks} chunks", threads,
                    tiling.kernel_geometry(padded), per_thread_blocks=True, band_rows=rows,
                    images_per_unit=images, chunks=max(1, chunks))
    if family == "winograd":
        per_image = winograd_grad_image_bytes(padded, itemsize)
        most = max(1, min(padded.batch, WINOGRAD_GRAD_CHUNK_BYTES // max(per_image, 1)))
        # chunks of equal size: 8 images as 4 + 4, not 7 + 1 (a last chunk of one image
        # pays its GEMMs' fixed costs for a fraction of the tiles)
        chunks = -(-padded.batch // most)
        return Plan(Kernel.WEIGHT_GRAD_WINOGRAD, reason, threads,
                    tiling.kernel_geometry(padded),
                    images_per_unit=max(1, -(-padded.batch // max(chunks, 1))))
    stacked = stacked_problem(padded, itemsize) if family == "gemm" and variant is None \
        else None
    if stacked is not None and not own_gemm(stacked):
        return Plan(Kernel.WEIGHT_GRAD_GEMM1X1_BLAS, reason + "; small planes: the images' "
                    "positions stacked end to end, blocks of output channels as GEMMs over "
                    "all of them", threads, tiling.kernel_geometry(padded), chunks=STACKED_BLOCKS,
                    stacked=(stacked,))
    kernel = variant or _weight_grad_kernel(family, padded)
    geometry = tiling.kernel_geometry(padded)
    if kernel == Kernel.WEIGHT_GRAD_PHASE:
        images = tiling.weight_grad_phase_images(padded, itemsize, threads)
        return Plan(kernel, reason, threads, geometry, images_per_unit=images,
                    chunks=tiling.weight_grad_phase_chunks(padded, images, threads))
    band = tiling.gemm_band_rows(padded, itemsize)
    return Plan(kernel, reason, threads, geometry, band_rows=band,
                chunks=tiling.weight_grad_chunks(padded, threads, band))


def forget_plans():
    """Drop every remembered plan (tests that change the tiling arithmetic call it)."""
    for cache in (_plan_conv, _plan_input_grad, _plan_weight_grad, _plan_channels_last):
        cache.cache_clear()


# ---------------------------------------------------------------------------------------------
# Choosing and forcing

# Which families and variants can compute a problem at all (forcing one outside this is a
# ValueError). The phase-grid variants compute any problem, but a grid copy per (image,
# group) and an extended grid: that is the dispatcher's reason not to choose them for large
# planes, not a limit.
SUPPORTS = {
    "direct": lambda p: True,
    "direct_rows": lambda p: True,
    "direct_planes": lambda p: p.in_per_group == 1,
    "direct_phases": _one_to_one,
    "im2col": lambda p: fits_blas(p),
    "im2col_blas": lambda p: fits_blas(p),
    "gemm1x1": lambda p: p.pointwise and fits_blas(p),
    "gemm1x1_blas": lambda p: p.pointwise and fits_blas(p),
    "gemm1x1_packed": lambda p: p.pointwise and fits_blas(p),
    "packed": lambda p: True,
    "packed_segments": lambda p: True,
    "packed_phase": lambda p: True,
    "packed_stacked": lambda p: p.pointwise,
    "gemm1x1_stacked": lambda p: p.pointwise,
    "col2im": lambda p: True,
    "col2im_blas": lambda p: fits_blas(p),
    "col2im_packed": lambda p: True,
    "phase_classes": lambda p: True,
    "phase_scatter": lambda p: True,
    "subpixel": lambda p: tiling.subpixel_plan(p) is not None,
    "gemm": lambda p: True,
    "im2col_packed": lambda p: True,
    "phase": lambda p: True,
    "depthwise": _one_to_one,
    "depthwise_rows": _one_to_one,
    "winograd": winograd_computes,
    "fft": lambda p: True,
    "channels_last": channels_last_phases_compute,
    "channels_last_phases": channels_last_phases_compute,
}
REQUIREMENT = {
    "im2col": "image planes and a GEMM depth under 2**31 elements (BLAS sizes are 32-bit)",
    "gemm1x1": "a 1x1 kernel with stride 1 and no padding, and image planes under 2**31 "
               "elements (BLAS sizes are 32-bit)",
    "col2im_blas": "image planes and a GEMM depth under 2**31 elements (BLAS sizes are 32-bit)",
    "subpixel": "stride 1 or dilation 1 along each axis, and phases that fit the gradient",
    "direct_planes": "one input channel per group (depthwise, or 1-channel images)",
    "direct_phases": "one input and one output channel per group (depthwise, or 1-channel "
                     "images)",
    "depthwise": "one input and one output channel per group (depthwise, or 1-channel "
                 "images)",
    "depthwise_rows": "one input and one output channel per group (depthwise, or 1-channel "
                      "images)",
    "packed_stacked": "a 1x1 kernel with stride 1 and no padding",
    "gemm1x1_stacked": "a 1x1 kernel with stride 1 and no padding",
    "winograd": "a 2-d 3x3 kernel or a 3-d (KD, 3, 3) one, with stride 1 and dilation 1 "
                "(Winograd F(4x4, 3x3)), or a 1-d kernel of 3 taps with stride 1 (F(4, 3))",
    "channels_last": "a 2-d layer of one group with dilation 1 and padding within what "
                     "each stride phase's taps reach",
}
REQUIREMENT["channels_last_phases"] = REQUIREMENT["channels_last"]
# names that reach other problems in one operation than in the others (Winograd's weight
# gradient is F(2x2, 3x3), 2-d and 3-d only)
_SUPPORTS_IN = {("weight_grad", "winograd"): winograd_grad_computes}
_REQUIREMENT_IN = {("weight_grad", "winograd"): "a 2-d 3x3 kernel or a 3-d (KD, 3, 3) one, "
                                                "with stride 1 and dilation 1 (Winograd "
                                                "F(2x2, 3x3))"}


def supports(operation, name, problem):
    """True if the family or kernel variant `name` computes `operation` ('forward',
    'input_grad' or 'weight_grad') of `problem` (forcing it elsewhere is a ValueError)."""
    return _SUPPORTS_IN.get((operation, name), SUPPORTS[name])(problem)
for _name in ("im2col_blas",):
    REQUIREMENT[_name] = REQUIREMENT["im2col"]
for _name in ("gemm1x1_blas", "gemm1x1_packed"):
    REQUIREMENT[_name] = REQUIREMENT["gemm1x1"]
WHY_FORCED = "forced by the caller"
WHY_NOT_FINITE = ("a weight is inf or NaN: the direct loops, which never multiply padding by "
                  "a weight")


def variants(operation):
    """{forcing name: Kernel} of the kernels that compute `operation` ('forward',
    'input_grad' or 'weight_grad')."""
    return {variant_name(k): k for k in Kernel if kernel_operation(k) == operation}


def algorithm_names(operation):
    """Every name `algorithm=` accepts for `operation`: 'auto', the families, the variants."""
    families = {"forward": ALGORITHMS, "input_grad": INPUT_GRAD_ALGORITHMS,
                "weight_grad": WEIGHT_GRAD_ALGORITHMS}[operation]
    return ("auto",) + families + tuple(v for v in variants(operation) if v not in families)


def _check_name(algorithm, operation):
    # before the plan caches see it: an unhashable name must fail as a bad name
    if type(algorithm) is not str:
        options = ", ".join(repr(a) for a in algorithm_names(operation))
        raise ValueError(f"algorithm must be one of {options}; got {algorithm!r}")


def _choose(problem, itemsize, threads, algorithm, rules, families, operation):
    """(family, variant kernel or None, reason): the first applicable rule, or the family or
    variant the caller forced."""
    if algorithm == "auto":
        for rule in rules:
            if rule.applies(problem, itemsize, threads):
                return rule.algorithm, None, rule.why
        raise AssertionError("the last rule applies to every problem")
    kinds = variants(operation)
    if not isinstance(algorithm, str) or (algorithm not in families and algorithm not in kinds):
        options = ", ".join(repr(a) for a in algorithm_names(operation))
        raise ValueError(f"algorithm must be one of {options}; got {algorithm!r}")
    if not supports(operation, algorithm, problem):
        needs = _REQUIREMENT_IN.get((operation, algorithm), REQUIREMENT[algorithm])
        raise ValueError(f"algorithm={algorithm!r} needs {needs}; got kernel "
                         f"{problem.kernel_size}, stride {problem.stride}, dilation "
                         f"{problem.dilation}, padding {problem.padding}")
    if algorithm in families:
        return algorithm, None, WHY_FORCED
    return _FAMILY[kinds[algorithm]], kinds[algorithm], WHY_FORCED
