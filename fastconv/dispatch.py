"""The algorithm dispatcher: an ordered list of rules, each (algorithm, applies-to, why).

``choose_algorithm`` walks the rules and returns the first that applies, with its reason, so
every choice of ``algorithm="auto"`` can be explained and reproduced. The thresholds come from
the benchmark cases (``python -m fastconv bench --algorithms``); README.md records the
measurements behind them.
"""
from collections import namedtuple
from dataclasses import dataclass
from functools import cached_property, lru_cache
from math import prod

import numpy as np

ALGORITHMS = ("direct", "im2col", "gemm1x1", "packed")

Choice = namedtuple("Choice", ["algorithm", "reason"])


@dataclass(frozen=True)
class ConvProblem:
    """A convolution call reduced to plain numbers: what the dispatcher and kernels need."""
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


@dataclass(frozen=True)
class Rule:
    algorithm: str
    applies: object     # ConvProblem -> bool
    why: str


# Measured (README, "Algorithms and what the dispatcher chooses"; 2 threads, Zen 5): up to
# this many output channels per group the direct loops, which keep a whole row of taps in
# registers for blocks of 4 filters, beat the packed GEMM by 1.3-2.8x (lenet_b64, 8-channel
# layers, depthwise); at 12 they tie, and from 16 on the GEMM's 8-channel tiles win.
MAX_DIRECT_OUT_CHANNELS = 8

_AVX512_BLAS_KERNELS = ("skylakex", "cooperlake", "sapphirerapids", "zen4", "zen5")


def blas_runs_full_width():
    """True unless SciPy's OpenBLAS is held to narrower kernels than this CPU has (for example
    OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU): then fastconv's own kernels are faster."""
    global _BLAS_FULL_WIDTH
    if _BLAS_FULL_WIDTH is None:
        from fastconv import _cpu, _parallel
        cpu_has_avx512 = bool(_cpu.cpu_features().get("AVX512F"))
        kernels = [str(d.get("architecture") or "").lower()
                   for d in _parallel.single_threaded_blas.describe()]
        _BLAS_FULL_WIDTH = not (cpu_has_avx512 and kernels
                                and not any(k in _AVX512_BLAS_KERNELS for k in kernels))
    return _BLAS_FULL_WIDTH


_BLAS_FULL_WIDTH = None

# BLAS takes 32-bit sizes and leading dimensions: a GEMM over an image plane (or a K) of 2**31
# elements or more would overflow them, so such problems never go to BLAS; fastconv's own
# kernels index in 64 bits (tests/test_reliability.py, arrays past 2**31 elements).
BLAS_INDEX_LIMIT = 2**31 - 1


def fits_blas(problem):
    """True if every size and leading dimension a BLAS GEMM of `problem` sees fits in int32."""
    return max(prod(problem.in_size), prod(problem.out_size), problem.gemm_depth,
               problem.in_channels, problem.out_channels) <= BLAS_INDEX_LIMIT


# gemm1x1 and im2col are not chosen: measured, they at best tie with packed (2 threads, ms, with
# OPENBLAS_CORETYPE unset so that OpenBLAS runs AVX-512 kernels: bottleneck_1x1 gemm1x1 0.39
# against packed 0.37; resnet_3x3_256 im2col 0.98 against packed 1.07), and lose by 1.5-2x
# when OpenBLAS is held to AVX2; ties go to packed, which is bit-for-bit reproducible.
RULES = (
    Rule("direct", lambda p: p.out_per_group <= MAX_DIRECT_OUT_CHANNELS,
         f"at most {MAX_DIRECT_OUT_CHANNELS} output channels per group (depthwise, "
         "single-filter, thin layers): direct loops keep each row's taps in registers; a "
         "GEMM this thin wastes its tiles"),
    Rule("packed", lambda p: True,
         "im2col straight into the panels of fastconv's register-blocked GEMM micro-kernel "
         "(measured faster than im2col + BLAS on every GEMM-shaped bench case); a batch of "
         "small planes is unfolded through a stride-phase grid (packed_phase_grid), with the "
         "same result"),
)

# The input gradient of a convolution, which is also the transposed convolution: `problem`
# describes the forward convolution (its input is the gradient's shape). The GEMM computes
# col = W_g^T @ grad_out_band ((C_in/groups x taps) x band, summing over C_out/groups), then
# col2im scatters it. Measured (notes/issue4.md): col2im wins even for thin GEMMs (2 or 4
# channels per group, 3-channel images) by 1.5-4x; the direct gathering loops win only when one
# input channel meets one output channel per group (depthwise, single-channel images), where
# the GEMM degenerates into an outer product. The col2im GEMM runs on fastconv's micro-kernel
# unless SciPy's BLAS has full-width kernels (blas_runs_full_width). "subpixel" (the gradient
# as s^d stride-1 phase convolutions on the forward kernels, no scatter) is available forced
# but not chosen: measured slower than col2im with the micro-kernel (2 threads, ms: grad input
# of conv2d_backward_64 8.7-9.6 against 6.7; conv_transpose_4x4_s2 6.2-7.1 against 6.3-6.5;
# conv_transpose_2x2_s2 0.66 against 0.21).
INPUT_GRAD_ALGORITHMS = ("direct", "col2im", "gemm1x1", "subpixel")

INPUT_GRAD_RULES = (
    Rule("gemm1x1", lambda p: p.pointwise and fits_blas(p),
         "1x1 kernel, stride 1, no padding: the GEMM writes the input gradient directly"),
    Rule("direct", lambda p: p.in_per_group == 1 and p.out_per_group == 1,
         "one input and one output channel per group (depthwise, single-channel): the GEMM "
         "would be an outer product; direct loops gather each gradient row in cache"),
    Rule("col2im", lambda p: True,
         "a GEMM over channels: multiply bands by W^T (fastconv's micro-kernel, or BLAS where "
         "it runs full width) and scatter them back (col2im; through a stride-phase grid for "
         "batches of small planes, see input_grad_phase_grid)"),
)

def _subpixel_fits(problem):
    from fastconv.conv_grad import subpixel_plan
    return subpixel_plan(problem) is not None


# Which algorithms can compute a problem at all (forcing one outside this is a ValueError).
SUPPORTS = {
    "direct": lambda p: True,
    "im2col": lambda p: fits_blas(p),
    "col2im": lambda p: True,
    "subpixel": lambda p: _subpixel_fits(p),
    "gemm1x1": lambda p: p.pointwise and fits_blas(p),
    "packed": lambda p: True,
}
REQUIREMENT = {
    "im2col": "image planes and a GEMM depth under 2**31 elements (BLAS sizes are 32-bit)",
    "gemm1x1": "a 1x1 kernel with stride 1 and no padding, and image planes under 2**31 "
               "elements (BLAS sizes are 32-bit)",
    "subpixel": "stride 1 or dilation 1 along each axis, and phases that fit the gradient",
}
WHY_FORCED = "forced by the caller"


def select(problem, algorithm="auto", rules=RULES, algorithms=ALGORITHMS):
    """The Choice for `problem`: the first applicable rule, or the forced `algorithm`."""
    if algorithm == "auto":
        return _first_rule(problem, rules)
    if algorithm not in algorithms:
        options = ", ".join(repr(a) for a in ("auto",) + algorithms)
        raise ValueError(f"algorithm must be one of {options}; got {algorithm!r}")
    if not SUPPORTS[algorithm](problem):
        raise ValueError(f"algorithm={algorithm!r} needs {REQUIREMENT[algorithm]}; got kernel "
                         f"{problem.kernel_size}, stride {problem.stride}, padding "
                         f"{problem.padding}")
    return Choice(algorithm, "forced by the caller")


@lru_cache(maxsize=1024)   # rules are pure functions of the problem, asked on every call
def _first_rule(problem, rules):
    for rule in rules:
        if rule.applies(problem):
            return Choice(rule.algorithm, rule.why)
    raise AssertionError("the last rule applies to every problem")


@lru_cache(maxsize=1024)   # a pure function of its arguments, asked on every call
def gemm_band_rows(problem, itemsize):
    """Output rows per im2col band: the unfolded band (K x rows*OW) should stay in L2 (about
    512 KiB), and there should be enough bands to keep up to 16 threads busy, as long as each
    GEMM keeps at least 256 columns. The band never depends on the thread count, so results
    are bit-for-bit the same whatever the number of threads."""
    out_w = problem.out_size[-1]
    rows = prod(problem.out_size[:-1])
    target_bytes = 512 * 1024
    band = max(1, target_bytes // max(1, problem.gemm_depth * out_w * itemsize))
    if problem.pointwise:
        band = max(1, 4096 // out_w)   # no copy: bands only split the work, keep GEMMs wide
    work_items = problem.batch * problem.groups
    while band > 1 and work_items * -(-rows // band) < 16 and (band // 2) * out_w >= 256:
        band = (band + 1) // 2
    return int(min(band, rows))


def packed_partition(problem, itemsize, mr, nr):
    """How the packed algorithm splits one call into work items: (position panels per tile,
    weight panels per channel block). A tile's unfolded input (K x panels * nr) should stay in
    about half of L2; then tiles and channel blocks are split until there are enough work
    items to keep up to 16 threads busy. Every output is computed the same way whatever the
    split, so results do not depend on it (nor on the thread count)."""
    positions = prod(problem.out_size)
    per_panel = problem.gemm_depth * nr * itemsize
    tile_panels = max(1, min((512 * 1024) // per_panel, -(-positions // nr)))
    channel_panels = -(-problem.out_per_group // mr)
    base_items = problem.batch * problem.groups

    def items():
        return (base_items * -(-positions // (tile_panels * nr))
                * -(-(-(-problem.out_per_group // mr)) // channel_panels))
    while items() < 16 and (tile_panels > 1 or channel_panels > 1):
        # halve whichever keeps each GEMM squarer: positions first while the tile is wide
        if tile_panels >= channel_panels and tile_panels > 1:
            tile_panels = (tile_panels + 1) // 2
        else:
            channel_panels = (channel_panels + 1) // 2
    return int(tile_panels), int(channel_panels)


# The packed algorithm unfolds its input one of two ways (bit-for-bit the same result):
# row segment by row segment into each panel, or through a stride-phase grid (_conv.pyx,
# conv_packed_phase: one zero-padded, stride-phase-split copy of each (image, group), from
# which every panel row is one vector copy, at the price of computing Q_W - OW extra columns
# per output row). Measured on Zen 5, 2 threads, float32 (segments -> phase grid, us):
# (32,16,28,28)*(32,16,3,3) s2 445 -> 296; (32,32,14,14)*(32,32,3,3) s2 303 -> 215;
# (64,64,7,7)*(64,64,3,3) 1489 -> 915; (64,128,4,4)*(128,128,3,3) 2155 -> 1582 (38% extra
# columns); (2,16,256,256)*(16,16,3,3) 2389 -> 2207; (16,3,224,224)*(64,3,7,7) s2 15267 ->
# 12060; a 1x1 convolution 622 -> 880 (nothing to unfold: the copy is pure cost).
PHASE_GRID_MAX_BYTES = 8 << 20     # the per-thread copy of one (image, group)
PHASE_GRID_MAX_EXTRA = 1.5         # extended positions per output position


def forward_kernel_stride(problem):
    """The forward kernels' 3-d stride (they see every problem as 3-d). Along an axis with one
    output the stride is never applied: they get 1, so that no index product (stride x row
    length) can approach 2**63 for a huge, legal stride."""
    return (1,) * (3 - problem.ndim) + tuple(1 if m == 1 else s for m, s in
                                             zip(problem.out_size, problem.stride))


@lru_cache(maxsize=1024)   # a pure function of its arguments, asked on every call
def _phase_grid_shape(problem):
    """(extended positions, buffer elements) of the phase grid, from the kernel's own code."""
    from fastconv import _conv
    unit = (1,) * (3 - problem.ndim)
    return _conv.phase_grid_shape(
        (problem.batch, problem.in_channels) + unit + problem.in_size,
        (problem.out_channels, problem.in_per_group) + unit + problem.kernel_size,
        (problem.batch, problem.out_channels) + unit + problem.out_size,
        forward_kernel_stride(problem), (0,) * 3, unit + problem.dilation, problem.groups)


def packed_phase_grid(problem, itemsize, num_threads):
    """True if the packed algorithm should unfold through the phase grid: work items are
    whole (image, group) planes, so there must be one per thread; the copy of a plane must
    stay small, the extended grid must not add much work, and there must be taps to unfold."""
    if problem.pointwise or problem.batch * problem.groups < num_threads:
        return False
    positions, elements = _phase_grid_shape(problem)
    return (elements * itemsize <= PHASE_GRID_MAX_BYTES
            and positions <= PHASE_GRID_MAX_EXTRA * prod(problem.out_size))


# The input gradient through the phase grid sums each input pixel's contributions in another
# order than col2im by row segments, so the choice must not depend on the thread count (the
# result would): it needs this many (image, group) planes whatever the threads, enough to keep
# 16 busy. Measured on Zen 5, 2 threads, float32 (col2im by segments -> phase grid, us, the
# forward problem named): (32,16,28,28)*(32,16,3,3) s2 442 -> 283; (32,32,14,14)*(32,32,3,3)
# s2 277 -> 220; the same at stride 1 1105 -> 701; (64,64,7,7)*(64,64,3,3) 1352 -> 1094;
# (16,64,56,56)*(64,64,3,3) 12016 -> 8895.
PHASE_GRID_MIN_PLANES_INPUT_GRAD = 16


def input_grad_phase_grid(problem, itemsize, weight):
    """True if the col2im input gradient should go through the phase grid, one stride class
    at a time (see packed_phase_grid); the zeros of the extended output gradient contribute
    exact zeros only for finite weights."""
    if problem.pointwise or problem.batch * problem.groups < PHASE_GRID_MIN_PLANES_INPUT_GRAD:
        return False
    positions, elements = _phase_grid_shape(problem)
    return (elements * itemsize <= PHASE_GRID_MAX_BYTES
            and positions <= PHASE_GRID_MAX_EXTRA * prod(problem.out_size)
            # a finite sum means finite weights (an inf or NaN makes it inf or NaN; a sum
            # that overflows only costs the faster path), without a boolean temporary
            and bool(np.isfinite(np.add.reduce(weight, axis=None))))


# The weight gradient as dot products on the phase grid (no unfolding, no transposition).
# Measured on Zen 5, 2 threads, float32 (im2col + GEMM -> phase grid, us): (32,1,28,28) with
# 16 3x3 filters 221 -> 109; (32,16,28,28)*(32,16,3,3) s2 460 -> 321, s1 1247 -> 702;
# (32,32,14,14)*(32,32,3,3) s2 318 -> 245; (64,64,7,7)*(64,64,3,3) 1443 -> 1120;
# (16,64,56,56)*(64,64,3,3) 13292 -> 9103. Each chunk of work keeps a partial gradient:
# bounded here.
PHASE_GRID_MAX_WEIGHT_GRAD = 1 << 16     # C_out x C_in/groups x taps


@lru_cache(maxsize=1024)   # a pure function of its arguments, asked on every call
def weight_grad_phase_grid(problem, itemsize, num_threads):
    """Images per work unit if the weight gradient should be dot products on the phase grid
    (see packed_phase_grid), else 0. A unit's images sit side by side in one grid, enough of
    them for dot products of about 1024 positions (shorter ones pay for reducing their
    register tiles; longer ones only spill the grid out of L2), at most 512 KiB of grid, and
    at least two units per thread. Measured on the small CNN's weight gradients (Zen 5, 2
    threads, us, 1/2/4/8/16 images per unit): 28x28 planes 74/76/83/102/145, 15x15 (stride 2)
    396/317/359/350/308, 8x8 493/343/262/215/200."""
    if problem.pointwise or problem.out_channels * problem.gemm_depth \
            > PHASE_GRID_MAX_WEIGHT_GRAD:
        return 0
    positions, elements = _phase_grid_shape(problem)
    if (elements * itemsize > PHASE_GRID_MAX_BYTES
            or positions > PHASE_GRID_MAX_EXTRA * prod(problem.out_size)):
        return 0
    images = max(1, min(-(-1024 // positions), problem.batch // (2 * num_threads),
                        (512 * 1024) // (elements * itemsize)))
    # as many units as a multiple of the threads, so that no thread waits for a last one
    units = num_threads * -(-problem.batch // (images * num_threads))
    return int(-(-problem.batch // units))


def phase_grid_tile(problem, itemsize, nr):
    """Position panels per tile of the phase-grid path: the tile's panels (K x tile) in about
    half of L2, as for the segment path."""
    positions = _phase_grid_shape(problem)[0]
    per_panel = problem.gemm_depth * nr * itemsize
    return int(max(1, min((512 * 1024) // per_panel, -(-positions // nr))))


def select_input_grad(problem, algorithm="auto"):
    """The Choice for the input gradient (or transposed convolution) of `problem`."""
    return select(problem, algorithm, INPUT_GRAD_RULES, INPUT_GRAD_ALGORITHMS)


@lru_cache(maxsize=1024)   # a pure function of its arguments, asked on every call
def input_grad_work_split(problem, itemsize, num_threads):
    """(band_rows, channel_chunks) for the col2im path.

    A work item owns whole input channels of one (image, group) so that the col2im scatter never
    races; when images x groups are fewer than the threads (batch 1), each group's input
    channels are split into chunks, one per thread: smaller chunks make thinner GEMMs (measured
    on conv_transpose_2x2_s2 with 2 threads: 2 chunks 0.32 ms, 4 chunks 0.35 ms, 8 0.42 ms).
    Bands keep the unfolded columns of a chunk in L2."""
    items = problem.batch * problem.groups
    chunks = 1
    if items < num_threads:
        chunks = min(problem.in_per_group, -(-num_threads // items))
    chunk_depth = -(-problem.in_per_group // chunks) * prod(problem.kernel_size)
    out_w = problem.out_size[-1]
    rows = prod(problem.out_size[:-1])
    band = max(1, 512 * 1024 // max(1, chunk_depth * out_w * itemsize))
    if problem.pointwise:
        band = max(1, 4096 // out_w)
    return int(min(band, rows)), int(chunks)


@lru_cache(maxsize=1024)   # a pure function of its arguments, asked on every call
def weight_grad_chunks(problem, num_threads, band_rows):
    """Partial sums for the weight gradient: about four per thread so that dynamic scheduling
    can balance a busy core, no more than the work items, and at most 64 MiB of buffers."""
    bands = -(-prod(problem.out_size[:-1]) // band_rows)
    items = problem.batch * problem.groups * bands
    weight_bytes = 8 * problem.out_channels * problem.gemm_depth
    by_memory = max(1, (64 << 20) // weight_bytes)
    return int(max(1, min(items, 4 * num_threads, by_memory)))
