# cython: language_level=3
"""The kernel ids: the one declaration of the variants the Python layer chooses between.

Every entry point of fastconv/_kernels takes one of these as its first argument and runs
exactly that variant, or raises ValueError for an id it does not implement; no kernel
chooses a variant itself. fastconv._core.kernel_ids() gives Python the same table.
"""

cdef enum KernelId:
    # forward convolution
    CONV_DIRECT_ROWS = 1
    CONV_IM2COL_BLAS = 2
    CONV_GEMM1X1_BLAS = 3
    CONV_PACKED_SEGMENTS = 4
    CONV_PACKED_PHASE = 5
    CONV_WINOGRAD = 6
    CONV_FFT = 7                 # scipy.fft in Python; conv_fft mixes the spectra
    CONV_DIRECT_PLANES = 8
    CONV_PACKED_STACKED = 9
    # input gradient (= transposed convolution)
    INPUT_GRAD_DIRECT_ROWS = 11
    INPUT_GRAD_COL2IM_BLAS = 12
    INPUT_GRAD_COL2IM_PACKED = 13
    INPUT_GRAD_GEMM1X1_BLAS = 14
    INPUT_GRAD_PHASE_CLASSES = 15
    INPUT_GRAD_PHASE_SCATTER = 16
    INPUT_GRAD_SUBPIXEL = 17     # composed in Python from forward kernels: no compiled entry
    INPUT_GRAD_WINOGRAD = 18     # composed in Python: CONV_WINOGRAD on the adjoint weights
    INPUT_GRAD_GEMM1X1_STACKED = 19
    INPUT_GRAD_DIRECT_PHASES = 20
    INPUT_GRAD_CHANNELS_LAST_PHASES = 27   # composed in Python: channels-last GEMMs, transposed
    # weight gradient
    WEIGHT_GRAD_IM2COL_BLAS = 21
    WEIGHT_GRAD_IM2COL_PACKED = 22
    WEIGHT_GRAD_GEMM1X1_BLAS = 23
    WEIGHT_GRAD_GEMM1X1_PACKED = 24
    WEIGHT_GRAD_PHASE = 25
    WEIGHT_GRAD_DEPTHWISE_ROWS = 26
    WEIGHT_GRAD_WINOGRAD = 28
