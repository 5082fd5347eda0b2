"""fastconv's compiled kernels, one extension module per algorithm family (conv_direct,
conv_im2col, conv_packed, conv_phase_grid, conv_subpixel, conv_bias, locally_connected,
pooling, resample). Each entry point takes a kernel id (fastconv._core.kernel_ids(), declared
once in kernel_ids.pxd) and runs exactly that variant: the choice of variant is the Python
layer's. Code shared between modules lives in .pxd files as ``cdef inline`` functions and in
C headers as ``static inline`` ones (conv_shape.pxd, packed_gemm.pxd, blas.pxd, sums.pxd;
gemm_microkernel.h, direct_rows.h, dot_tiles.h, pair_rows.h, sums.h, workspace.h, openmp.h),
so the split into modules costs no call overhead. Nothing here validates its inputs: the
Python layer does.
"""
