"""fastconv's compiled kernels, one extension module per algorithm family (conv_direct,
conv_channels_last, conv_im2col, conv_packed, conv_phase_grid, conv_subpixel, conv_winograd,
conv_fft, conv_bias, filters, locally_connected, pooling, resample). Each convolution entry point takes a kernel id
(fastconv._core.kernel_ids(), declared once in kernel_ids.pxd) and runs exactly that variant:
the choice of variant is the Python layer's. Code shared between modules lives in .pxd files
as ``cdef inline`` functions and in C headers as ``static inline`` ones (conv_shape.pxd,
packed_gemm.pxd, blas.pxd, sums.pxd; gemm_microkernel.h, direct_rows.h, dot_tiles.h,
filter_rows.h, pair_rows.h, sums.h, winograd.h, workspace.h, openmp.h), so the split into
modules costs no call overhead. Nothing here validates its inputs: the Python layer does.

setup.py compiles every module once per SIMD level into ``fastconv._kernels.<level>``
(baseline, avx2, avx512; or one "native" level). This package binds the modules of the level
fastconv._runtime.cpu chose, so ``from fastconv._kernels import conv_direct`` gives that
level's module, and no other level's code is ever loaded.
"""
import importlib
import sys

from fastconv._runtime.cpu import simd_level

MODULES = ("conv_bias", "conv_channels_last", "conv_direct", "conv_im2col", "conv_packed",
           "conv_phase_grid", "conv_subpixel", "conv_winograd", "conv_fft", "filters",
           "locally_connected", "pooling", "resample")

LEVEL = simd_level()

for _name in MODULES:
    _module = importlib.import_module(f"{__name__}.{LEVEL}.{_name}")
    globals()[_name] = _module
    sys.modules[f"{__name__}.{_name}"] = _module
del _name, _module
