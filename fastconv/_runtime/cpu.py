"""Which compiled kernels this CPU runs: the SIMD level, chosen once, before any kernel loads.

setup.py compiles the kernels once per instruction-set level (fastconv/_kernels/<level>/) and
records, for each level, the SIMD features its code assumes. At import the best level whose
features this CPU has is chosen; ``FASTCONV_SIMD=baseline|avx2|avx512`` (or the one level of a
``FASTCONV_ARCH=native`` build) forces one. A level the CPU cannot run is refused with an
ImportError that says what is missing: never an illegal instruction.
"""
import os

# The dispatch levels, lowest first (setup.py's DISPATCH_LEVELS); single-level builds name
# theirs "native" (-march=native) or "custom" (another -march value).
DISPATCH_LEVELS = ("baseline", "avx2", "avx512")
SIMD_ENV = "FASTCONV_SIMD"

# compiler macro (setup.py's predefined_simd_macros) -> NumPy's name for the CPU feature
_NUMPY_NAMES = {"SSE4_2": "SSE42", "FMA": "FMA3"}
# compiler macro -> the flag /proc/cpuinfo shows, when NumPy cannot say
_CPUINFO_NAMES = {"SSE4_2": "sse4_2", "AVX": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c",
                  "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512DQ": "avx512dq",
                  "AVX512VL": "avx512vl"}


def _build_info():
    try:
        from fastconv import _build_info
    except ImportError:  # running from a source tree that was never built
        return None
    return _build_info


def cpu_features():
    """The SIMD features of this CPU as NumPy detected them ({} if NumPy cannot say).

    NumPy also checks that the operating system saves the wide registers, which the
    /proc/cpuinfo fallback cannot."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def cpuinfo_field(name):
    """The value of the first `name` line of /proc/cpuinfo (None where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpuinfo_flags():
    flags = cpuinfo_field("flags")
    return None if flags is None else set(flags.split())


def missing_features(required, features=None):
    """The compiler macros in `required` (e.g. ``["AVX2", "FMA"]``) this CPU lacks."""
    features = cpu_features() if features is None else features
    if features:
        return [f for f in required if not features.get(_NUMPY_NAMES.get(f, f), False)]
    flags = _cpuinfo_flags()
    if flags is None:   # nothing can tell: only code with no SIMD assumption is safe
        return list(required)
    return [f for f in required if _CPUINFO_NAMES.get(f, f.lower()) not in flags]


def built_levels():
    """{level: (compiler flags, SIMD features assumed)} of this build, lowest level first."""
    info = _build_info()
    if info is None:
        return {}
    if not hasattr(info, "levels"):   # built by fastconv 0.2's setup.py: kernels not per level
        raise ImportError("this fastconv tree was built by an older setup.py (no SIMD levels): "
                          "rebuild it (pip install -e . or python setup.py build_ext --inplace)")
    return dict(info.levels)


def choose_simd_level(levels=None, forced=None, features=None):
    """The kernel level to load: `forced` (default: $FASTCONV_SIMD) if given, else the best
    level of `levels` (default: this build's) whose features the CPU has.

    Raises ImportError naming the level and what is missing when none can run, or when the
    forced level is unknown, not built, or needs features the CPU lacks."""
    levels = built_levels() if levels is None else levels
    if forced is None:
        forced = os.environ.get(SIMD_ENV) or None
    if not levels:
        raise ImportError("fastconv's kernels were never built in this tree: run "
                          "pip install -e . (or python setup.py build_ext --inplace)")
    if forced is not None:
        if forced not in levels:
            known = sorted(set(DISPATCH_LEVELS) | set(levels), key=_level_order)
            what = "is not a SIMD level" if forced not in known else "was not built"
            raise ImportError(
                f"{SIMD_ENV}={forced!r} {what}: expected one of {', '.join(levels)} "
                f"(the levels this build has; known levels: {', '.join(known)})")
        lacking = missing_features(levels[forced][1], features)
        if lacking:
            raise ImportError(
                f"{SIMD_ENV}={forced!r} needs {', '.join(lacking)}, which this CPU lacks; "
                f"levels this CPU runs: {', '.join(runnable_levels(levels, features)) or 'none'}")
        return forced
    runnable = runnable_levels(levels, features)
    if runnable:
        return runnable[-1]
    lowest = min(levels, key=_level_order)
    level_flags, required = levels[lowest]
    raise ImportError(
        f"fastconv was compiled for a CPU with {', '.join(missing_features(required, features))}, "
        f"which this CPU lacks (level {lowest!r}, flags {' '.join(level_flags)}). Rebuild it on "
        f"this machine: pip install --force-reinstall --no-cache-dir --no-binary fastconv "
        f"fastconv, or build the dispatching default (FASTCONV_ARCH unset).")


def runnable_levels(levels, features=None):
    """The levels of `levels` this CPU runs, lowest first."""
    return [name for name, (_, required) in sorted(levels.items(), key=lambda kv: _level_order(kv[0]))
            if not missing_features(required, features)]


def _level_order(name):
    return DISPATCH_LEVELS.index(name) if name in DISPATCH_LEVELS else len(DISPATCH_LEVELS)


_selected = None


def simd_level():
    """The level whose kernels this process runs (chosen on first call, then fixed)."""
    global _selected
    if _selected is None:
        _selected = choose_simd_level()
    return _selected
