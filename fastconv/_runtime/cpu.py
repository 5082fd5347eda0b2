"""Refuse to load a build tuned for a CPU this one is not (instead of dying on SIGILL).

setup.py records the SIMD extensions the compiler was told it may use (-march=native by
default); here they are compared with what this CPU offers, before any compiled module loads.
"""


def _build_info():
    try:
        from fastconv import _build_info
    except ImportError:  # running from a source tree that was never built
        return None
    return _build_info


def cpu_features():
    """The SIMD features of this CPU as NumPy detected them ({} if NumPy cannot say)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def check_cpu_supports_build():
    info = _build_info()
    if info is None:
        return
    features = cpu_features()
    if not features:
        return
    aliases = {"SSE4_2": "SSE42"}
    missing = [f for f in info.simd_required
               if not features.get(aliases.get(f, f), True)]
    if missing:
        raise ImportError(
            f"fastconv was compiled for a CPU with {', '.join(missing)}, which this CPU lacks "
            f"(build flags {' '.join(info.compile_args)}). Rebuild it on this machine: "
            f"pip install --force-reinstall --no-cache-dir --no-binary fastconv fastconv, or "
            f"build a portable one with FASTCONV_ARCH=portable.")
