# cython: language_level=3
"""Per-thread scratch buffers that outlive a call (workspace.h). Each kernel module numbers
its own slots (a `cdef enum` of WS_... names) and has its own buffers."""

cdef extern from "workspace.h":
    void* fc_workspace(int slot, size_t bytes) noexcept nogil
    void fc_workspace_trim() noexcept nogil
