"""Build and runtime configuration: what a bug report about speed needs to say."""
import os
import platform
import sys

from fastconv import _core
from fastconv._runtime import cpu as _cpu, threads as _parallel
from fastconv._version import __version__


def _cpu_model():
    return _cpu.cpuinfo_field("model name") or platform.processor() or platform.machine()


def config_info():
    """The facts :func:`show_config` prints, as a dict."""
    info = _cpu._build_info()
    levels = _cpu.built_levels()
    features = _cpu.cpu_features()
    simd_cpu = [name for name in ("SSE42", "AVX", "AVX2", "FMA3", "F16C", "AVX512F", "AVX512BW",
                                  "AVX512DQ", "AVX512VL", "AVX512_SPR") if features.get(name)]
    blas = [{key: d.get(key) for key in ("internal_api", "version", "threading_layer",
                                          "architecture", "num_threads", "filepath")}
            for d in _parallel.single_threaded_blas.describe()]
    return {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "numpy": __import__("numpy").__version__,
        "scipy": __import__("scipy").__version__,
        "cpu": _cpu_model(),
        "compile_args": list(info.compile_args) if info else None,
        "arch": info.arch if info else None,
        "simd_level": _cpu.simd_level(),
        "simd_levels_built": list(levels),
        "simd_levels_runnable": _cpu.runnable_levels(levels),
        "simd_level_flags": list(levels[_cpu.simd_level()][0]),
        "simd_forced": os.environ.get(_cpu.SIMD_ENV) or None,
        "simd_cpu": simd_cpu,
        "openmp": _core.openmp_enabled(),
        "openmp_version": _core.openmp_version(),
        "num_threads": _parallel.get_num_threads(),
        "blas": blas,
    }


def show_config():
    """Print fastconv's version, build flags, OpenMP and thread count, BLAS and SIMD.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.show_config()  # doctest: +SKIP
    fastconv 0.1.0 ...
    """
    c = config_info()
    lines = [
        f"fastconv {c['fastconv']}  (python {c['python']}, numpy {c['numpy']}, scipy {c['scipy']})",
        f"cpu:            {c['cpu']}",
        f"simd (cpu):     {' '.join(c['simd_cpu']) or 'unknown'}",
        f"simd level:     {c['simd_level']}  "
        f"({'forced by ' + _cpu.SIMD_ENV if c['simd_forced'] else 'the best this CPU runs'}; "
        f"built: {' '.join(c['simd_levels_built'])}; this CPU runs: "
        f"{' '.join(c['simd_levels_runnable'])}; FASTCONV_ARCH={c['arch']} at build)",
        f"compile args:   {' '.join((c['compile_args'] or []) + c['simd_level_flags'])}",
        f"openmp:         {'yes, _OPENMP=%d' % c['openmp_version'] if c['openmp'] else 'NO (serial kernels)'}",
        f"threads:        {c['num_threads']}  (set_num_threads / FASTCONV_NUM_THREADS / OMP_NUM_THREADS)",
    ]
    if not c["blas"]:
        lines.append("blas:           unknown (threadpoolctl could not inspect SciPy's BLAS)")
    for b in c["blas"]:
        lines.append(f"blas:           {b['internal_api']} {b['version']} ({b['threading_layer']}, "
                     f"kernels: {b['architecture']}); held at 1 thread inside fastconv calls, "
                     f"{b['num_threads']} outside")
        lines.append(f"                {b['filepath']}")
    print("\n".join(lines))
