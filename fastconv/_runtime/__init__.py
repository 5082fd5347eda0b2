"""The runtime layer: facts about the process that every kernel call depends on.

``threads``: the thread count and the BLAS hold (no oversubscription); ``cpu``: the SIMD level
whose compiled kernels this CPU runs (FASTCONV_SIMD forces one; a level the CPU lacks is refused).
Nothing here knows about operators or algorithms.
"""
