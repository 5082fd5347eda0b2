"""The algorithm dispatcher: an ordered list of rules, each (algorithm, applies-to, why).

``choose_algorithm`` walks the rules and returns the first that applies, with its reason, so
every choice of ``algorithm="auto"`` can be explained and reproduced. The thresholds come from
the benchmark cases (``python -m fastconv bench --algorithms``); README.md records the
measurements behind them.
"""
from collections import namedtuple
from dataclasses import dataclass
from math import prod

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

    @property
    def out_size(self):
        return tuple((n + p0 + p1 - d * (k - 1) - 1) // s + 1
                     for n, k, s, (p0, p1), d in zip(self.in_size, self.kernel_size, self.stride,
                                                      self.padding, self.dilation))

    @property
    def out_shape(self):
        return (self.batch, self.out_channels) + self.out_size

    @property
    def gemm_depth(self):
        """K of the GEMM: the taps one output sums over."""
        return self.in_per_group * prod(self.kernel_size)

    @property
    def multiply_adds(self):
        return self.batch * self.out_channels * prod(self.out_size) * self.gemm_depth

    @property
    def pointwise(self):
        return (all(k == 1 for k in self.kernel_size) and all(s == 1 for s in self.stride)
                and all(p == (0, 0) for p in self.padding))


@dataclass(frozen=True)
class Rule:
    algorithm: str
    applies: object     # ConvProblem -> bool
    why: str


# Thresholds measured on the bench cases (README, "What the dispatcher chooses"): with fewer
# output channels per group than this, the packed GEMM's register tile (8 or 6 channels)
# would mostly multiply zeros; the direct loops keep a whole row of taps in registers instead.
MIN_PACKED_OUT_CHANNELS = 4

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

RULES = (
    Rule("gemm1x1", lambda p: p.pointwise and blas_runs_full_width(),
         "1x1 kernel, stride 1, no padding: the input already is the GEMM operand, so one "
         "BLAS GEMM per image with no copy"),
    Rule("direct", lambda p: p.out_per_group < MIN_PACKED_OUT_CHANNELS,
         f"fewer than {MIN_PACKED_OUT_CHANNELS} output channels per group (depthwise, "
         "single filter): a GEMM tile would mostly multiply zeros; direct loops keep each "
         "row's taps in registers"),
    Rule("packed", lambda p: True,
         "im2col straight into the panels of fastconv's register-blocked GEMM micro-kernel "
         "(measured faster than im2col + BLAS on every GEMM-shaped bench case)"),
)

# Which algorithms can compute a problem at all (forcing one outside this is a ValueError).
SUPPORTS = {
    "direct": lambda p: True,
    "im2col": lambda p: True,
    "gemm1x1": lambda p: p.pointwise,
    "packed": lambda p: True,
}
REQUIREMENT = {
    "gemm1x1": "a 1x1 kernel with stride 1 and no padding",
}
WHY_FORCED = "forced by the caller"


def select(problem, algorithm="auto"):
    """The Choice for `problem`: the first applicable rule, or the forced `algorithm`."""
    if algorithm == "auto":
        for rule in RULES:
            if rule.applies(problem):
                return Choice(rule.algorithm, rule.why)
        raise AssertionError("the last rule applies to every problem")
    if algorithm not in ALGORITHMS:
        options = ", ".join(repr(a) for a in ("auto",) + ALGORITHMS)
        raise ValueError(f"algorithm must be one of {options}; got {algorithm!r}")
    if not SUPPORTS[algorithm](problem):
        raise ValueError(f"algorithm={algorithm!r} needs {REQUIREMENT[algorithm]}; got kernel "
                         f"{problem.kernel_size}, stride {problem.stride}, padding "
                         f"{problem.padding}")
    return Choice(algorithm, "forced by the caller")


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
