"""The runtime layer: facts about the process that every kernel call depends on.

``threads``: the thread count and the BLAS hold (no oversubscription); ``cpu``: the SIMD check
that refuses a build tuned for another CPU. Nothing here knows about operators or algorithms.
"""
