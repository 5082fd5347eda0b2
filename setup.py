"""Build fastconv's Cython extensions with OpenMP and code generation for this CPU.

Environment variables read at build time:

FASTCONV_ARCH
    ``native`` (default): compile for the CPU that builds (AVX2/AVX-512 where present).
    ``portable``: baseline x86-64 code that runs on any CPU of the architecture.
    Anything else is passed as ``-march=VALUE`` (for example ``x86-64-v3``).
    A native build records the SIMD features it needs; importing it on a CPU without them
    raises ImportError instead of crashing with an illegal instruction.
FASTCONV_OPENMP
    ``0`` builds without OpenMP (serial kernels); default: use OpenMP when the compiler has it.
FASTCONV_SANITIZE
    ``1`` builds with AddressSanitizer and UndefinedBehaviorSanitizer (debugging only).
"""
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
PACKAGE = HERE / "fastconv"


def compiler_accepts(flags, source="int main(void){return 0;}\n"):
    """True if the C compiler compiles and links `source` with `flags`."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text(source)
        cmd = cc.split() + flags + [str(src), "-o", str(Path(tmp, "probe"))]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


def predefined_simd_macros(flags):
    """The SIMD feature macros (__AVX2__, ...) that `flags` make the compiler assume."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    try:
        out = subprocess.run(cc.split() + flags + ["-dM", "-E", "-x", "c", "/dev/null"],
                             capture_output=True, text=True).stdout
    except OSError:
        return []
    names = ("__SSE4_2__", "__AVX__", "__AVX2__", "__FMA__", "__AVX512F__", "__AVX512BW__",
             "__AVX512DQ__", "__AVX512VL__")
    return [n.strip("_") for n in names if f"#define {n} " in out]


def arch_flags():
    arch = os.environ.get("FASTCONV_ARCH", "native")
    if arch == "portable":
        return []
    flag = f"-march={arch}"
    if compiler_accepts([flag]):
        return [flag]
    if arch != "native":
        sys.exit(f"FASTCONV_ARCH={arch!r}: the compiler rejects {flag}")
    return []


def openmp_flags():
    if os.environ.get("FASTCONV_OPENMP", "1") == "0":
        return []
    probe = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    return ["-fopenmp"] if compiler_accepts(["-fopenmp"], probe) else []


ARCH = arch_flags()
OPENMP = openmp_flags()
# -fno-sanitize-recover: undefined behaviour aborts the process, so a test run cannot pass
# over it (.ci/sanitize runs the tests on such a build).
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g"] \
    if os.environ.get("FASTCONV_SANITIZE") == "1" else []
# -O3 for the vectorizer; no -ffast-math: max-pool must see NaN and sums keep IEEE order.
COMPILE_ARGS = ["-O3", "-fno-math-errno", "-Wno-unused-function", "-Wno-unreachable-code"] \
    + ARCH + OPENMP + SANITIZE
LINK_ARGS = OPENMP + SANITIZE


def write_build_info():
    info = {
        "compile_args": COMPILE_ARGS,
        "arch": os.environ.get("FASTCONV_ARCH", "native"),
        "openmp": bool(OPENMP),
        "sanitize": bool(SANITIZE),
        "simd_required": predefined_simd_macros(ARCH),
    }
    lines = ['"""Written by setup.py at build time; do not edit."""']
    lines += [f"{key} = {value!r}" for key, value in info.items()]
    (PACKAGE / "_build_info.py").write_text("\n".join(lines) + "\n")


class BuildExt(build_ext):
    def run(self):
        write_build_info()
        if not OPENMP:
            print("fastconv: building WITHOUT OpenMP; kernels run serially", file=sys.stderr)
        super().run()


def extensions():
    from Cython.Build import cythonize

    # the runtime core (fastconv/_core.pyx) and one module per kernel family
    # (fastconv/_kernels/*.pyx); their shared headers live in fastconv/_kernels
    sources = [PACKAGE / "_core.pyx"] + sorted((PACKAGE / "_kernels").glob("*.pyx"))
    modules = [
        Extension(".".join(pyx.relative_to(HERE).with_suffix("").parts),
                  [str(pyx.relative_to(HERE))],
                  include_dirs=[str(PACKAGE / "_kernels"), str(PACKAGE)],
                  extra_compile_args=COMPILE_ARGS, extra_link_args=LINK_ARGS)
        for pyx in sources
    ]
    directives = {"language_level": 3, "boundscheck": False, "wraparound": False,
                  "cdivision": True, "initializedcheck": False, "embedsignature": True}
    return cythonize(modules, compiler_directives=directives)


write_build_info()
setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
