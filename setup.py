"""Build fastconv's Cython extensions with OpenMP, its kernels once per SIMD level.

The kernels (fastconv/_kernels/*.pyx) are compiled from one source several times, once per
instruction-set level, into fastconv/_kernels/<level>/; at import fastconv/_runtime/cpu.py
picks the best level this CPU runs (or the one FASTCONV_SIMD names). The runtime core
(fastconv/_core.pyx) holds no hot loop and is compiled once, for the baseline.

Environment variables read at build time:

FASTCONV_ARCH
    ``dispatch`` (default): the levels ``baseline`` (the architecture's default target: x86-64
    with SSE2, or any other GCC target such as aarch64), ``avx2`` (AVX2 + FMA + F16C) and
    ``avx512`` (AVX-512 F/BW/DQ/VL), each where the compiler has it. One build runs on every
    x86-64 CPU at its best level: this is what a wheel holds.
    ``native``: one level, ``-march=native``, tuned for the CPU that builds. Importing it on a
    CPU without the features it was compiled for raises ImportError instead of crashing.
    ``portable``: the baseline level only.
    Anything else: one level compiled with ``-march=VALUE`` (for example ``x86-64-v3``).
FASTCONV_OPENMP
    ``0`` builds without OpenMP (serial kernels); default: use OpenMP when the compiler has it.
FASTCONV_SANITIZE
    ``1`` builds with AddressSanitizer and UndefinedBehaviorSanitizer (debugging only).
"""
import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools before 70.1: the wheel package's
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).parent
PACKAGE = HERE / "fastconv"
KERNELS = PACKAGE / "_kernels"


def compiler():
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def compiler_accepts(flags, source="int main(void){return 0;}\n"):
    """True if the C compiler compiles and links `source` with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text(source)
        cmd = compiler() + flags + [str(src), "-o", str(Path(tmp, "probe"))]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


@functools.lru_cache(maxsize=None)
def _predefined_macros(flags):
    try:
        return subprocess.run(compiler() + list(flags) + ["-dM", "-E", "-x", "c", "/dev/null"],
                              capture_output=True, text=True).stdout
    except OSError:
        return ""


def predefined_simd_macros(flags):
    """The SIMD feature macros (__AVX2__, ...) that `flags` make the compiler assume."""
    out = _predefined_macros(tuple(flags))
    names = ("__SSE4_2__", "__AVX__", "__AVX2__", "__FMA__", "__F16C__", "__AVX512F__",
             "__AVX512BW__", "__AVX512DQ__", "__AVX512VL__")
    return [n.strip("_") for n in names if f"#define {n} " in out]


# The dispatch levels, lowest first. Feature flags rather than -march=x86-64-v3/v4: the CPU
# check at import (fastconv/_runtime/cpu.py) can then test exactly what the code assumes.
DISPATCH_LEVELS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512dq",
               "-mavx512vl"],
}


def simd_levels():
    """{level name: compiler flags} for the kernels this build compiles."""
    arch = os.environ.get("FASTCONV_ARCH", "dispatch")
    if arch == "dispatch":
        levels = {name: flags for name, flags in DISPATCH_LEVELS.items()
                  if not flags or compiler_accepts(flags)}
    elif arch == "portable":
        levels = {"baseline": []}
    elif compiler_accepts([f"-march={arch}"]):
        levels = {"native" if arch == "native" else "custom": [f"-march={arch}"]}
    elif arch != "native":
        sys.exit(f"FASTCONV_ARCH={arch!r}: the compiler rejects -march={arch}")
    else:
        levels = {"baseline": []}
    return {name: flags + whole_vector_moves(flags) for name, flags in levels.items()}


def whole_vector_moves(flags):
    """Flags that let GCC move a whole vector register at once.

    The kernels load and store vectors with memcpy (no alignment or aliasing assumption), and
    GCC 12+ expands a memcpy in pieces of at most -mmove-max/-mstore-max bits: 128 under the
    generic and the AMD tunings, so every 256- or 512-bit load became two or four 128-bit ones
    plus inserts (the direct kernel ran 2x slower on AMD Zen 3, -march=native included)."""
    macros = predefined_simd_macros(flags)
    bits = 512 if "AVX512F" in macros else 256 if "AVX" in macros else None
    if bits is None:
        return []
    extra = [f"-mmove-max={bits}", f"-mstore-max={bits}"]
    return extra if compiler_accepts(flags + extra) else []


def openmp_flags():
    if os.environ.get("FASTCONV_OPENMP", "1") == "0":
        return []
    probe = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    return ["-fopenmp"] if compiler_accepts(["-fopenmp"], probe) else []


LEVELS = simd_levels()
OPENMP = openmp_flags()
# -fno-sanitize-recover: undefined behaviour aborts the process, so a test run cannot pass
# over it (.ci/sanitize runs the tests on such a build).
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g"] \
    if os.environ.get("FASTCONV_SANITIZE") == "1" else []
# -O3 for the vectorizer; no -ffast-math: max-pool must see NaN and sums keep IEEE order.
# an undeclared C function is an error: it would link, then fail to load (undefined symbol)
# on the one SIMD level whose header branch lacks it
BASE_ARGS = ["-O3", "-fno-math-errno", "-Wno-unused-function", "-Wno-unreachable-code",
             "-Werror=implicit-function-declaration"]
COMPILE_ARGS = BASE_ARGS + OPENMP + SANITIZE
# The wheel carries libgomp.so.1 in fastconv/_libs (see BdistWheel); the extensions look
# there after the libraries already loaded, so a PyTorch imported first lends its own.
RUNPATH = {"core": "$ORIGIN/_libs", "kernels": "$ORIGIN/../../_libs"}
LINK_ARGS = OPENMP + SANITIZE


def write_build_info():
    info = {
        "compile_args": COMPILE_ARGS,
        "arch": os.environ.get("FASTCONV_ARCH", "dispatch"),
        "openmp": bool(OPENMP),
        "sanitize": bool(SANITIZE),
        # level -> (its compiler flags, the SIMD features its code assumes)
        "levels": {name: (flags, predefined_simd_macros(flags)) for name, flags in LEVELS.items()},
    }
    lines = ['"""Written by setup.py at build time; do not edit."""']
    lines += [f"{key} = {value!r}" for key, value in info.items()]
    (PACKAGE / "_build_info.py").write_text("\n".join(lines) + "\n")


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:   # pip passes no -j: the three levels' modules in parallel
            self.parallel = os.cpu_count() or 1

    def run(self):
        write_build_info()
        if self.inplace:   # the level folders hold only compiled modules: make them here
            for level in LEVELS:
                (KERNELS / level).mkdir(exist_ok=True)
        if not OPENMP:
            print("fastconv: building WITHOUT OpenMP; kernels run serially", file=sys.stderr)
        super().run()


class BdistWheel(bdist_wheel):
    """A wheel that runs where no compiler (and no libgomp) is installed: it carries the
    compiler's libgomp.so.1 under that same name. The dynamic loader matches libraries by
    name, so one libgomp serves the whole process: PyTorch's when it was imported first
    (it also loads a libgomp.so.1), else this one, which a later PyTorch then reuses."""

    def run(self):
        self.run_command("build_ext")
        if OPENMP:
            libgomp = subprocess.run(compiler() + ["-print-file-name=libgomp.so.1"],
                                     capture_output=True, text=True).stdout.strip()
            if not os.path.isabs(libgomp):
                sys.exit("fastconv: cannot find the compiler's libgomp.so.1 for the wheel")
            target = Path(self.get_finalized_command("build").build_lib, "fastconv", "_libs")
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(libgomp), target / "libgomp.so.1")
        super().run()


def extensions():
    from Cython.Build import cythonize

    directives = {"language_level": 3, "boundscheck": False, "wraparound": False,
                  "cdivision": True, "initializedcheck": False, "embedsignature": True}
    include_dirs = [str(KERNELS), str(PACKAGE)]
    # the C headers the kernels include: an edited one recompiles them (build_ext compares times)
    headers = [str(h.relative_to(HERE)) for h in sorted(KERNELS.glob("*.h"))]

    def extension(name, source, flags=(), runpath=None):
        rpath = [f"-Wl,-rpath,{runpath}"] if runpath else []
        return Extension(name, [str(source)], include_dirs=include_dirs, depends=headers,
                         extra_compile_args=COMPILE_ARGS + list(flags),
                         extra_link_args=LINK_ARGS + rpath)

    # Each kernel module is translated to C once, under the name fastconv._kernels.<module>
    # (what fastconv/_kernels/__init__.py binds to the chosen level's copy); that C is then
    # compiled once per level, into fastconv._kernels.<level>.<module>, with the level's flags.
    core = extension("fastconv._core", "fastconv/_core.pyx", runpath=RUNPATH["core"])
    # the core alone uses NumPy's C API (its memory handler: fastconv/_runtime/memory_pool.h)
    import numpy
    core.include_dirs = include_dirs + [numpy.get_include()]
    core.depends = headers + ["fastconv/_runtime/memory_pool.h"]
    core.define_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION")]
    kernels = [extension(f"fastconv._kernels.{pyx.stem}", pyx.relative_to(HERE))
               for pyx in sorted(KERNELS.glob("*.pyx"))]
    core, *kernels = cythonize([core] + kernels, compiler_directives=directives,
                               build_dir="build/cython", nthreads=os.cpu_count() or 1)
    modules = [core]
    for level, flags in LEVELS.items():
        for translated in kernels:
            c_file = Path(translated.sources[0])
            # a copy per level: build_ext names the object files after their sources
            copy = Path("build", "cython", "levels", level, c_file.name)
            copy.parent.mkdir(parents=True, exist_ok=True)
            if not copy.exists() or copy.read_bytes() != c_file.read_bytes():
                shutil.copyfile(c_file, copy)
            module = translated.name.rsplit(".", 1)[1]
            modules.append(extension(f"fastconv._kernels.{level}.{module}", copy, flags,
                                     RUNPATH["kernels"]))
    return modules


write_build_info()
setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt, "bdist_wheel": BdistWheel})
