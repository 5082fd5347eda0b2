# cython: language_level=3
"""Everything on the stride-phase grid: the packed forward that unfolds through it
(CONV_PACKED_PHASE), the input gradient by stride classes (INPUT_GRAD_PHASE_CLASSES) or by
scattering a col buffer (INPUT_GRAD_PHASE_SCATTER), and the weight gradient as dot products
(WEIGHT_GRAD_PHASE, with an optional fused bias gradient); grid_shape gives the Python layer
the grid's size.

Every problem is described by the forward convolution's ConvShape (conv_shape.pxd):
x (n, c_in, D, H, W) is the convolution's input, w (c_out, c_in_g, KD, KH, KW) its weight and
g (n, c_out, OD, OH, OW) the gradient of its output. The Python layer validates everything;
these kernels trust their inputs.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

from fastconv._kernels.conv_shape cimport ConvShape, make_shape, output_range, decode_tap, \
    shape5
from fastconv._kernels.kernel_ids cimport CONV_PACKED_PHASE, INPUT_GRAD_PHASE_CLASSES, \
    INPUT_GRAD_PHASE_SCATTER, WEIGHT_GRAD_PHASE
from fastconv._kernels.packed_gemm cimport TILE_WIDE, TILE_NARROW, tile_mr, tile_nr, \
    choose_tile, vector_width, group_panels, pack_a_panels, prepacked_pointer, multiply_tile, \
    PackedGeometry, packed_geometry
from fastconv._kernels.sums cimport plane_sum
from fastconv._kernels.pair_rows cimport fc_copy_rows, fc_zero_short, split_pairs_rows, \
    merge_pairs_rows
from fastconv._kernels.workspace cimport fc_workspace, fc_workspace_trim

cdef extern from "dot_tiles.h":
    int FC_DOT_M, FC_DOT_K, FC_DOT_ROW_K
    void fc_dot_tile_f32(const float* g, Py_ssize_t g_stride, const float* grid,
                         const Py_ssize_t* offsets, const int* mask, Py_ssize_t length,
                         float* acc, Py_ssize_t acc_stride) noexcept nogil
    void fc_dot_tile_f64(const double* g, Py_ssize_t g_stride, const double* grid,
                         const Py_ssize_t* offsets, const long long* mask, Py_ssize_t length,
                         double* acc, Py_ssize_t acc_stride) noexcept nogil
    void fc_dot_row_f32(const float* g, Py_ssize_t g_stride, const float* grid,
                        const Py_ssize_t* offsets, const int* mask, Py_ssize_t length,
                        float* acc, Py_ssize_t acc_stride) noexcept nogil
    void fc_dot_row_f64(const double* g, Py_ssize_t g_stride, const double* grid,
                        const Py_ssize_t* offsets, const long long* mask, Py_ssize_t length,
                        double* acc, Py_ssize_t acc_stride) noexcept nogil

cdef extern from "openmp.h":
    void fc_team_barrier() noexcept nogil

# Slots of the per-thread workspace (workspace.h): buffers reused from call to call.
cdef enum:
    WS_PHASE, WS_PHASE_OUT, WS_PHASE_OFFSETS, WS_W_PACKED, WS_G_EXTENDED, WS_COL, WS_PARTIAL,
    WS_MASK


# The stride-phase grid: one (image, group) of the input (or a batch of them side by side),
# zero-padded and split by stride phase along every axis, so that the input read by tap k at
# output (od, oh, ow) is buffer[offset[k] + (od * q[1] + oh) * q[2] + ow]
ctypedef struct PhaseGrid:
    Py_ssize_t q[3]          # phase length along each axis: ceil(padded length / stride)
    Py_ssize_t plane         # q[0] * q[1] * q[2]: one phase of one input channel
    Py_ssize_t phase_stride  # from one phase plane to the next: `batch` planes, one per image
    Py_ssize_t positions     # extended positions covering every output
    Py_ssize_t slack         # zeroed elements past the last plane, for reads past the end
    Py_ssize_t size          # elements of the buffer, slack included

ctypedef struct PhaseRun:
    Py_ssize_t grid          # the run's first row in the phase grid (its phase r2 = 0 row)
    Py_ssize_t image         # its first input row in the image's (c_in_g, D, H, W) planes
    Py_ssize_t rows          # rows: s1 * W apart in the image, Q2 apart in the grid


# ---------------------------------------------------------------------------------------------
# packed, phase-grid unfolding: for planes of few positions per row the segment-by-segment
# im2col (conv_packed.pyx) costs more than the GEMM (a 14-wide row is a loop of its own per
# tap). Instead each (image, group) is first copied once into a zero-padded buffer split by
# stride phase along every axis. In that buffer the input read by tap k at output
# (od, oh, ow) sits at offset[k] + (od * Q1 + oh) * Q2 + ow, where Q are the phase lengths:
# on this "extended" grid (rows of Q2 >= OW positions, planes of Q1 >= OH rows) every tap's
# operand is one contiguous run, which the micro-kernel reads in place (no B panels). The
# positions past OW (OH) are computed and dropped. Each output is the same sum in the same
# order as by row segments: the result is bit-for-bit that of conv_packed.pyx
# (CONV_PACKED_SEGMENTS).

cdef void phase_grid(const ConvShape* s, Py_ssize_t slack, Py_ssize_t batch,
                     PhaseGrid* pg) noexcept nogil:
    """The phase grid of `s` (PhaseGrid above) for `batch` images side by side in each
    phase plane (image j's plane at j * plane), `slack` elements after the last plane."""
    cdef Py_ssize_t a, used
    for a in range(3):
        # the padded length the valid windows read
        used = (s.out_size[a] - 1) * s.stride[a] + s.dilation[a] * (s.kernel[a] - 1) + 1
        pg.q[a] = (used + s.stride[a] - 1) // s.stride[a]
    pg.plane = pg.q[0] * pg.q[1] * pg.q[2]
    pg.positions = ((s.out_size[0] - 1) * pg.q[1] + s.out_size[1] - 1) * pg.q[2] + s.out_size[2]
    pg.phase_stride = batch * pg.plane
    pg.slack = slack
    pg.size = s.c_in_g * s.stride[0] * s.stride[1] * s.stride[2] * pg.phase_stride + slack


cdef void phase_offsets(const ConvShape* s, const PhaseGrid* pg,
                        Py_ssize_t* offsets) noexcept nogil:
    """offsets[k]: where tap k = (c, kd, kh, kw) reads extended position 0 in the buffer."""
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t k, c, kd, kh, kw, t0, t1, t2, phase
    for k in range(K):
        decode_tap(k, s, &c, &kd, &kh, &kw)
        t0 = kd * s.dilation[0]
        t1 = kh * s.dilation[1]
        t2 = kw * s.dilation[2]
        phase = ((c * s.stride[0] + t0 % s.stride[0]) * s.stride[1]
                 + t1 % s.stride[1]) * s.stride[2] + t2 % s.stride[2]
        offsets[k] = phase * pg.phase_stride + ((t0 // s.stride[0]) * pg.q[1]
                                         + t1 // s.stride[1]) * pg.q[2] + t2 // s.stride[2]


cdef void clear_phase_grid(const PhaseGrid* pg, floating* buf) noexcept nogil:
    """Zero the whole buffer, slack included: fill_phase_grid writes only the positions that
    read the input, so the padding positions keep these zeros for every image of a call."""
    memset(buf, 0, pg.size * sizeof(floating))


cdef inline void fill_phase_rows(const floating* x_row, Py_ssize_t x_stride, floating* row,
                                 Py_ssize_t rows, Py_ssize_t W, Py_ssize_t s2, Py_ssize_t p2,
                                 Py_ssize_t Q2, Py_ssize_t phase_stride) noexcept nogil:
    """`rows` input rows (x_stride apart) into their s2 phase rows each (Q2 apart, phase r2's
    at + r2 * phase_stride): row_r2[i] = x_row[i * s2 + r2 - p2] where that is inside the
    row. Scalars, not the shape structs (with them, every store made the compiler reload
    them), and rows in batches (the vector masks of a row length are made once)."""
    cdef Py_ssize_t r2, lo, hi, i, n, r
    if s2 == 2:
        # element j goes to phase (j + p2) % 2 at (j + p2) // 2: pairs (x[2m], x[2m + 1]) to
        # two phase rows at once, by vector shuffles
        n = W if W < 2 * Q2 - p2 else 2 * Q2 - p2
        if n <= 0:
            return
        split_pairs_rows(x_row, x_stride, row + (p2 % 2) * phase_stride + p2 // 2,
                         row + ((p2 + 1) % 2) * phase_stride + (p2 + 1) // 2, Q2, n // 2, rows)
        if n % 2:
            for r in range(rows):
                row[r * Q2 + (p2 % 2) * phase_stride + (n - 1 + p2) // 2] = \
                    x_row[r * x_stride + n - 1]
        return
    for r2 in range(s2):
        output_range(r2 - p2, s2, W, Q2, &lo, &hi)
        if s2 == 1:
            fc_copy_rows(row + lo, Q2 * sizeof(floating), x_row + lo - p2,
                         x_stride * sizeof(floating), (hi - lo) * sizeof(floating), rows)
            return
        for r in range(rows):
            for i in range(lo, hi):
                row[r * Q2 + r2 * phase_stride + i] = x_row[r * x_stride + i * s2 + r2 - p2]


cdef bint phase_run(const ConvShape* s, const PhaseGrid* pg, Py_ssize_t k,
                    PhaseRun* run) noexcept nogil:
    """Run k < phase_runs(s, pg), k = ((c * s0 + r0) * s1 + r1) * Q0 + i0: the input rows of
    channel c at depth i0 * s0 + r0 - pad0 whose row phase is r1 (False if that depth is
    padding or no such row lies inside the input)."""
    cdef Py_ssize_t i0 = k % pg.q[0], r1 = (k // pg.q[0]) % s.stride[1]
    cdef Py_ssize_t r0 = (k // (pg.q[0] * s.stride[1])) % s.stride[0]
    cdef Py_ssize_t c = k // (pg.q[0] * s.stride[1] * s.stride[0])
    cdef Py_ssize_t d = i0 * s.stride[0] + r0 - s.pad[0]
    cdef Py_ssize_t lo, hi
    if d < 0 or d >= s.in_size[0]:
        return False
    output_range(r1 - s.pad[1], s.stride[1], s.in_size[1], pg.q[1], &lo, &hi)
    if hi <= lo:
        return False
    run.grid = ((c * s.stride[0] + r0) * s.stride[1] + r1) * s.stride[2] * pg.phase_stride \
        + (i0 * pg.q[1] + lo) * pg.q[2]
    run.image = ((c * s.in_size[0] + d) * s.in_size[1] + lo * s.stride[1] + r1 - s.pad[1]) \
        * s.in_size[2]
    run.rows = hi - lo
    return True


cdef Py_ssize_t phase_runs(const ConvShape* s, const PhaseGrid* pg) noexcept nogil:
    """How many runs phase_run numbers (some of them empty)."""
    return s.c_in_g * s.stride[0] * s.stride[1] * pg.q[0]


cdef void fill_phase_grid(const floating* x_g, const ConvShape* s, const PhaseGrid* pg,
                          floating* buf) noexcept nogil:
    """buf[phase (c, r0, r1, r2) * phase_stride + (i0 * Q1 + i1) * Q2 + i2] = padded input
    of channel c at (i0 * s0 + r0, i1 * s1 + r1, i2 * s2 + r2), for the positions inside the
    input only: the others are padding, zero since clear_phase_grid (one image: pass
    buf + j * plane for image j of a batched grid)."""
    cdef PhaseRun run
    cdef Py_ssize_t k
    for k in range(phase_runs(s, pg)):
        if phase_run(s, pg, k, &run):
            fill_phase_rows(x_g + run.image, s.stride[1] * s.in_size[2], buf + run.grid,
                            run.rows, s.in_size[2], s.stride[2], s.pad[2], pg.q[2],
                            pg.phase_stride)


cdef void scatter_extended(const floating* tile_out, Py_ssize_t ld, Py_ssize_t channels,
                           Py_ssize_t p_begin, Py_ssize_t count, const ConvShape* s,
                           const PhaseGrid* pg, floating* out, Py_ssize_t out_plane) noexcept nogil:
    """out[c, position of extended p] = tile_out[c, p - p_begin] for the valid positions of
    [p_begin, p_begin + count): row runs of the extended grid, cut at OW, rows past OH dropped."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2], Q1 = pg.q[1], Q2 = pg.q[2]
    cdef Py_ssize_t p = p_begin, end = p_begin + count, r, ow, run, dst, n
    while p < end:
        r = p // Q2
        ow = p - r * Q2
        run = Q2 - ow if Q2 - ow < end - p else end - p
        if ow < OW and r % Q1 < OH:
            dst = ((r // Q1) * OH + r % Q1) * OW + ow
            n = run if run < OW - ow else OW - ow
            # the run in every channel: rows out_plane apart in out, ld apart in the tile
            fc_copy_rows(out + dst, out_plane * sizeof(floating), tile_out + (p - p_begin),
                         ld * sizeof(floating), n * sizeof(floating), channels)
        p += run


cdef int packed_phase_shared_grid(const floating* x, const floating* a, Py_ssize_t a_stride,
                                  const floating* bias, floating* out, const ConvShape* s,
                                  const PhaseGrid* pg, const Py_ssize_t* offsets,
                                  Py_ssize_t tile_panels, int shape,
                                  int num_threads) noexcept nogil:
    """conv_packed_phase for fewer (image, group) planes than threads: each plane's grid
    filled once by the calling thread, its tiles of positions shared out among the threads
    (each multiplied into a thread's scratch tile and scattered to its outputs)."""
    cdef PackedGeometry geo = packed_geometry(s, shape, tile_panels, <floating*> NULL)
    # as many tiles as a multiple of the threads (no thread waits for a last one), each of
    # whole panels and at most the planned tile (the grid's slack and the scratch tile's size)
    cdef Py_ssize_t tiles = ((pg.positions + geo.tile - 1) // geo.tile + num_threads - 1) \
        // num_threads * num_threads
    cdef Py_ssize_t tile = ((pg.positions + tiles - 1) // tiles + geo.NR - 1) // geo.NR * geo.NR
    cdef Py_ssize_t item, n, g, t, p_begin, count
    cdef floating* grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
    cdef floating* tile_out = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if grid == NULL:
        return 1
    tiles = (pg.positions + tile - 1) // tile
    clear_phase_grid(pg, grid)
    for item in range(s.n * s.groups):
        n = item // s.groups
        g = item % s.groups
        fill_phase_grid(x + (n * s.c_in + g * s.c_in_g) * geo.in_plane, s, pg, grid)
        with parallel(num_threads=num_threads):
            tile_out = <floating*> fc_workspace(WS_PHASE_OUT,
                                                s.c_out_g * tile * sizeof(floating))
            if tile_out == NULL:
                failed_flag[0] = 1
            for t in prange(tiles, schedule='dynamic'):
                if tile_out == NULL:
                    continue
                p_begin = t * tile
                count = pg.positions - p_begin if pg.positions - p_begin < tile else tile
                multiply_tile(geo.K, geo.m_panels, s.c_out_g, count, geo.NR,
                              group_panels(a, a_stride, s, shape, g, 0), grid + p_begin,
                              tile_out, tile, bias + g * s.c_out_g if bias != NULL else NULL,
                              False, shape, offsets, a_stride)
                scatter_extended(tile_out, tile, s.c_out_g, p_begin, count, s, pg,
                                 out + (n * s.c_out + g * s.c_out_g) * geo.out_plane,
                                 geo.out_plane)
        if failed:
            break
    return failed


cdef int conv_packed_phase(const floating* x, const floating* w, const floating* bias,
                           floating* out, const ConvShape* s, Py_ssize_t tile_panels, int shape,
                           const floating* prepacked, int num_threads) noexcept nogil:
    """conv_packed with phase-grid unfolding; work items are whole (image, group) planes,
    or with fewer planes than threads (one image), the tiles of each plane in turn, its grid
    filled once and shared (the same products, tile by tile: the same bits).
    `prepacked`: w already packed (pack_weights' layout), or NULL to read w (C-contiguous)
    where it lies."""
    cdef PackedGeometry geo = packed_geometry(s, shape, tile_panels, <floating*> NULL)
    cdef Py_ssize_t MR = geo.MR, NR = geo.NR, K = geo.K, out_plane = geo.out_plane
    cdef Py_ssize_t in_plane = geo.in_plane, m_panels = geo.m_panels, tile = geo.tile
    cdef PhaseGrid pg
    cdef Py_ssize_t item, n, g, p_begin, count
    cdef Py_ssize_t a_stride = K if prepacked == NULL else 0
    cdef const floating* a = prepacked if prepacked != NULL else w
    cdef Py_ssize_t* offsets = <Py_ssize_t*> fc_workspace(WS_PHASE_OFFSETS,
                                                          K * sizeof(Py_ssize_t))
    cdef floating* grid = NULL
    cdef floating* tile_out = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if a == NULL or offsets == NULL:
        return 1
    phase_grid(s, tile, 1, &pg)
    phase_offsets(s, &pg, offsets)
    if s.n * s.groups < num_threads:
        failed = packed_phase_shared_grid(x, a, a_stride, bias, out, s, &pg, offsets,
                                          tile_panels, shape, num_threads)
        fc_workspace_trim()
        return failed
    with parallel(num_threads=num_threads):
        grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
        tile_out = <floating*> fc_workspace(WS_PHASE_OUT, s.c_out_g * tile * sizeof(floating))
        if grid == NULL or tile_out == NULL:
            failed_flag[0] = 1
        else:
            clear_phase_grid(&pg, grid)
        for item in prange(s.n * s.groups, schedule='dynamic'):
            if grid == NULL or tile_out == NULL:
                continue
            n = item // s.groups
            g = item % s.groups
            fill_phase_grid(x + (n * s.c_in + g * s.c_in_g) * in_plane, s, &pg, grid)
            p_begin = 0
            while p_begin < pg.positions:
                count = pg.positions - p_begin if pg.positions - p_begin < tile else tile
                multiply_tile(K, m_panels, s.c_out_g, count, NR,
                              group_panels(a, a_stride, s, shape, g, 0), grid + p_begin,
                              tile_out, tile, bias + g * s.c_out_g if bias != NULL else NULL,
                              False, shape, offsets, a_stride)
                scatter_extended(tile_out, tile, s.c_out_g, p_begin, count, s, &pg,
                                 out + (n * s.c_out + g * s.c_out_g) * out_plane, out_plane)
                p_begin = p_begin + tile
    fc_workspace_trim()
    return failed



# ---------------------------------------------------------------------------------------------
# The input gradient through the phase grid (the adjoint of conv_packed_phase):
# the output gradient of one (image, group) is laid out on the extended grid (zeros past OW
# and OH, and before its first row), each stride class of the grid is computed as a product
# on the micro-kernel (input_grad_phase), and the grid is read back into dx. The zeros of the
# extended gradient contribute exact zeros only if the weights are finite (0 * inf is NaN):
# the Python layer checks.

cdef void extend_rows(const floating* g_plane, const ConvShape* s, const PhaseGrid* pg,
                      floating* g_ext) noexcept nogil:
    """g_ext[(od * Q1 + oh) * Q2 + ow] = g_plane[(od * OH + oh) * OW + ow]; the rest is zero."""
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t od
    for od in range(OD):
        fc_copy_rows(g_ext + od * pg.q[1] * pg.q[2], pg.q[2] * sizeof(floating),
                     g_plane + od * OH * OW, OW * sizeof(floating), OW * sizeof(floating), OH)


cdef void extend_row_of_images(const floating* g_plane, Py_ssize_t image_stride,
                               Py_ssize_t count, const ConvShape* s, const PhaseGrid* pg,
                               floating* g_ext, Py_ssize_t row_length) noexcept nogil:
    """One channel of `count` images (planes image_stride apart) on the extended grid, side
    by side in the row g_ext[0:row_length] (image b at b * pg.plane), every element written:
    the zeros past OW, OH and OD and after the last image too, so that the row needs no
    clearing first (a memset of every row for every unit was a fifth of a batch-1 stem's
    weight gradient)."""
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t Q1 = pg.q[1], Q2 = pg.q[2]
    cdef Py_ssize_t b, od, oh
    cdef floating* depth
    for b in range(count):
        extend_rows(g_plane + b * image_stride, s, pg, g_ext + b * pg.plane)
        for od in range(OD):
            depth = g_ext + b * pg.plane + od * Q1 * Q2
            if Q2 > OW:
                for oh in range(OH):
                    fc_zero_short(depth + oh * Q2 + OW, (Q2 - OW) * sizeof(floating))
            memset(depth + OH * Q2, 0, (Q1 - OH) * Q2 * sizeof(floating))
        memset(g_ext + b * pg.plane + OD * Q1 * Q2, 0,
               (pg.plane - OD * Q1 * Q2) * sizeof(floating))
    memset(g_ext + count * pg.plane, 0, (row_length - count * pg.plane) * sizeof(floating))


cdef void extend_gradient(const floating* g_block, const ConvShape* s, const PhaseGrid* pg,
                          floating* g_ext, Py_ssize_t row_length, Py_ssize_t lead) noexcept nogil:
    """Row co of g_ext (row_length apart): `lead` zeros, then channel co of the group's output
    gradient g_block on the extended grid (extend_rows), zeros elsewhere."""
    cdef Py_ssize_t out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t co
    memset(g_ext, 0, s.c_out_g * row_length * sizeof(floating))
    for co in range(s.c_out_g):
        extend_rows(g_block + co * out_plane, s, pg, g_ext + co * row_length + lead)


cdef inline Py_ssize_t phase_reach(Py_ssize_t q, Py_ssize_t stride, Py_ssize_t pad,
                                   Py_ssize_t size) noexcept nogil:
    """Input positions [0, reach) along an axis lie on the grid; those past it are read by
    no window."""
    cdef Py_ssize_t reach = q * stride - pad
    return 0 if reach < 0 else (size if reach > size else reach)


cdef inline void read_phase_rows(const floating* row, floating* dx_row, Py_ssize_t dx_stride,
                                 Py_ssize_t rows, Py_ssize_t W, Py_ssize_t s2, Py_ssize_t p2,
                                 Py_ssize_t reach, Py_ssize_t Q2,
                                 Py_ssize_t phase_stride) noexcept nogil:
    """For `rows` rows (grid rows Q2 apart, dx rows dx_stride apart): dx_row[x] = phase row
    (x + p2) % s2 (at row + r2 * phase_stride) at (x + p2) // s2, zero past the grid's reach
    (scalars and batches of rows: see fill_phase_rows)."""
    cdef Py_ssize_t r2, first, x, r
    cdef const floating* phase_row
    if reach < W:
        for r in range(rows):
            memset(dx_row + r * dx_stride + reach, 0, (W - reach) * sizeof(floating))
    if s2 == 1:
        fc_copy_rows(dx_row, dx_stride * sizeof(floating), row + p2, Q2 * sizeof(floating),
                     reach * sizeof(floating), rows)
    elif s2 == 2:   # interleave the two phase rows by vector shuffles
        merge_pairs_rows(row + (p2 % 2) * phase_stride + p2 // 2,
                         row + ((p2 + 1) % 2) * phase_stride + (p2 + 1) // 2, Q2, dx_row,
                         dx_stride, reach // 2, rows)
        if reach % 2:
            for r in range(rows):
                dx_row[r * dx_stride + reach - 1] = \
                    row[r * Q2 + (p2 % 2) * phase_stride + (reach - 1 + p2) // 2]
    else:
        for r in range(rows):
            for r2 in range(s2):
                # columns x with (x + p2) % s2 == r2, from `first` on, step s2
                first = ((r2 - p2) % s2 + s2) % s2
                phase_row = row + r * Q2 + r2 * phase_stride + (first + p2) // s2
                for x in range((reach - first + s2 - 1) // s2 if first < reach else 0):
                    dx_row[r * dx_stride + first + x * s2] = phase_row[x]


cdef void read_phase_grid(const floating* grid, const ConvShape* s, const PhaseGrid* pg,
                          floating* dx_g) noexcept nogil:
    """dx_g[c, d, h, w] = the grid at padded position (d + pad0, h + pad1, w + pad2), zero
    where the grid does not reach (no window reads that input)."""
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t reach0 = phase_reach(pg.q[0], s.stride[0], s.pad[0], D)
    cdef Py_ssize_t reach1 = phase_reach(pg.q[1], s.stride[1], s.pad[1], H)
    cdef Py_ssize_t reach2 = phase_reach(pg.q[2], s.stride[2], s.pad[2], W)
    cdef Py_ssize_t c, d, k
    cdef PhaseRun run
    for c in range(s.c_in_g):
        # planes and rows past the reach: no window reads them
        memset(dx_g + (c * D + reach0) * H * W, 0, (D - reach0) * H * W * sizeof(floating))
        for d in range(reach0):
            memset(dx_g + ((c * D + d) * H + reach1) * W, 0,
                   (H - reach1) * W * sizeof(floating))
    # the same runs of rows as the fill (fill_phase_grid), read back
    for k in range(phase_runs(s, pg)):
        if phase_run(s, pg, k, &run):
            read_phase_rows(grid + run.grid, dx_g + run.image, s.stride[1] * W, run.rows, W,
                            s.stride[2], s.pad[2], reach2, pg.q[2], pg.phase_stride)


cdef int input_grad_phase_scatter(const floating* g, const floating* w, floating* dx,
                          const ConvShape* s, Py_ssize_t tile_panels,
                          int num_threads) noexcept nogil:
    """dx := conv^T(g) through the phase grid for groups of few input channels (the stride
    classes of input_grad_phase would waste most of each register tile): col = W^T @ g_ext
    tile by tile, each tap's row of col added as one contiguous run into the grid."""
    cdef Py_ssize_t out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t M = s.c_out_g
    cdef int shape = choose_tile(K, <floating*> NULL)
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t tile = tile_panels * NR
    cdef Py_ssize_t m_panels = (K + MR - 1) // MR
    cdef PhaseGrid pg
    cdef Py_ssize_t extended, item, n, g_idx, p_begin, count, k, j
    cdef floating* w_packed = <floating*> fc_workspace(
        WS_W_PACKED, s.groups * m_panels * M * MR * sizeof(floating))
    cdef Py_ssize_t* offsets = <Py_ssize_t*> fc_workspace(WS_PHASE_OFFSETS,
                                                          (K + M) * sizeof(Py_ssize_t))
    cdef Py_ssize_t* g_rows = offsets + K   # B = g_ext read in place: row j at j * extended
    cdef floating* grid = NULL
    cdef floating* g_ext = NULL
    cdef floating* col = NULL
    cdef floating* target
    cdef const floating* source
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if w_packed == NULL or offsets == NULL:
        return 1
    phase_grid(s, tile, 1, &pg)
    phase_offsets(s, &pg, offsets)
    extended = (pg.positions + tile - 1) // tile * tile
    for j in range(M):
        g_rows[j] = j * extended
    for g_idx in range(s.groups):
        # A = W_g^T: rows are the taps (c, kd, kh, kw), columns the group's output channels
        pack_a_panels(w + g_idx * M * K, 1, K, K, M, w_packed + g_idx * m_panels * M * MR,
                      shape)
    with parallel(num_threads=num_threads):
        grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
        g_ext = <floating*> fc_workspace(WS_G_EXTENDED, M * extended * sizeof(floating))
        col = <floating*> fc_workspace(WS_COL, K * tile * sizeof(floating))
        if grid == NULL or g_ext == NULL or col == NULL:
            failed_flag[0] = 1
        for item in prange(s.n * s.groups, schedule='dynamic'):
            if grid == NULL or g_ext == NULL or col == NULL:
                continue
            n = item // s.groups
            g_idx = item % s.groups
            extend_gradient(g + (n * s.c_out + g_idx * M) * out_plane, s, &pg, g_ext, extended,
                            0)
            memset(grid, 0, pg.size * sizeof(floating))
            p_begin = 0
            while p_begin < pg.positions:
                count = pg.positions - p_begin if pg.positions - p_begin < tile else tile
                multiply_tile(M, m_panels, K, count, NR, w_packed + g_idx * m_panels * M * MR,
                              g_ext + p_begin, col, tile, NULL, False, shape, g_rows)
                for k in range(K):
                    target = grid + offsets[k] + p_begin
                    source = col + k * tile
                    for j in range(count):
                        target[j] += source[j]
                p_begin = p_begin + tile
            read_phase_grid(grid, s, &pg, dx + (n * s.c_in + g_idx * s.c_in_g) * in_plane)
    fc_workspace_trim()
    return failed


cdef int input_grad_phase(const floating* g, const floating* w, floating* dx,
                          const ConvShape* s, Py_ssize_t tile_panels,
                          int num_threads) noexcept nogil:
    """dx := conv^T(g) through the phase grid, one stride class at a time; work items are
    (image, group) planes. The inputs of one class (padded position = j * stride + r along
    every axis) receive exactly the taps whose offset is r modulo the stride, each from the
    output gradient shifted by the tap's offset divided by the stride: so each class's plane
    of the grid is a plain product W_class^T @ g_ext, written by the micro-kernel reading
    g_ext in place at one shift per tap (no scatter), and the grid is then read into dx."""
    cdef Py_ssize_t out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t taps = s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t C = s.c_in_g, M = s.c_out_g
    cdef Py_ssize_t phases = s.stride[0] * s.stride[1] * s.stride[2]
    cdef int shape = choose_tile(C, <floating*> NULL)
    cdef Py_ssize_t MR = tile_mr(shape), NR = tile_nr(shape, <floating*> NULL)
    cdef Py_ssize_t tile = tile_panels * NR
    cdef Py_ssize_t c_panels = (C + MR - 1) // MR
    cdef Py_ssize_t per_group = c_panels * M * taps * MR
    cdef PhaseGrid pg
    cdef Py_ssize_t lead, row_length, item, n, g_idx, p_begin, count, t, e, r, co, c, m, p
    cdef Py_ssize_t kd, kh, kw, t0, t1, t2, k_class, base
    cdef Py_ssize_t* tap_class = <Py_ssize_t*> malloc((3 * taps + phases + 1 + M * taps)
                                                      * sizeof(Py_ssize_t))
    cdef Py_ssize_t* tap_shift = tap_class + taps
    cdef Py_ssize_t* order = tap_shift + taps              # taps sorted by class
    cdef Py_ssize_t* class_start = order + taps            # class r: order[start[r]:start[r+1]]
    cdef Py_ssize_t* b_offsets = class_start + phases + 1  # per class, tap-major: (tap, co)
    cdef floating* a_packed = <floating*> malloc(s.groups * per_group * sizeof(floating))
    cdef floating* grid = NULL
    cdef floating* g_ext = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if tap_class == NULL or a_packed == NULL:
        free(tap_class)
        free(a_packed)
        return 1
    phase_grid(s, tile, 1, &pg)
    # each tap's class (its offset modulo the stride) and shift on the extended grid
    for t in range(taps):
        kd = t // (s.kernel[1] * s.kernel[2])
        kh = (t // s.kernel[2]) % s.kernel[1]
        kw = t % s.kernel[2]
        t0 = kd * s.dilation[0]
        t1 = kh * s.dilation[1]
        t2 = kw * s.dilation[2]
        tap_class[t] = ((t0 % s.stride[0]) * s.stride[1] + t1 % s.stride[1]) * s.stride[2] \
            + t2 % s.stride[2]
        tap_shift[t] = ((t0 // s.stride[0]) * pg.q[1] + t1 // s.stride[1]) * pg.q[2] \
            + t2 // s.stride[2]
    lead = tap_shift[taps - 1]            # the largest shift: zeros before g_ext's rows
    row_length = lead + pg.plane + NR     # reads reach one panel past the plane
    e = 0
    for r in range(phases):
        class_start[r] = e
        for t in range(taps):
            if tap_class[t] == r:
                order[e] = t
                e = e + 1
    class_start[phases] = e
    # B rows (tap, co) of each class: g_ext's row co, shifted back by the tap's shift
    for e in range(taps):
        for co in range(M):
            b_offsets[e * M + co] = co * row_length + lead - tap_shift[order[e]]
    # A = W_class^T per group and class: rows (tap, co) of the class, columns the input
    # channels of the group in panels of MR (zero past C)
    for g_idx in range(s.groups):
        for r in range(phases):
            k_class = (class_start[r + 1] - class_start[r]) * M
            base = g_idx * per_group + class_start[r] * M * c_panels * MR
            for p in range(c_panels):
                for e in range(class_start[r], class_start[r + 1]):
                    for co in range(M):
                        for m in range(MR):
                            c = p * MR + m
                            a_packed[base + (p * k_class + (e - class_start[r]) * M + co) * MR
                                     + m] = w[((g_idx * M + co) * C + c) * taps + order[e]] \
                                if c < C else 0
    with parallel(num_threads=num_threads):
        grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
        g_ext = <floating*> fc_workspace(WS_G_EXTENDED, M * row_length * sizeof(floating))
        if grid == NULL or g_ext == NULL:
            failed_flag[0] = 1
        for item in prange(s.n * s.groups, schedule='dynamic'):
            if grid == NULL or g_ext == NULL:
                continue
            n = item // s.groups
            g_idx = item % s.groups
            extend_gradient(g + (n * s.c_out + g_idx * M) * out_plane, s, &pg, g_ext,
                            row_length, lead)
            for r in range(phases):
                k_class = (class_start[r + 1] - class_start[r]) * M
                if k_class == 0:   # no tap lands on this class: its inputs get nothing
                    for c in range(C):
                        memset(grid + (c * phases + r) * pg.phase_stride, 0,
                               pg.plane * sizeof(floating))
                    continue
                p_begin = 0
                while p_begin < pg.plane:
                    count = pg.plane - p_begin if pg.plane - p_begin < tile else tile
                    multiply_tile(k_class, c_panels, C, count, NR,
                                  a_packed + g_idx * per_group
                                  + class_start[r] * M * c_panels * MR,
                                  g_ext + p_begin, grid + r * pg.phase_stride + p_begin,
                                  phases * pg.phase_stride, NULL, False, shape,
                                  b_offsets + class_start[r] * M)
                    p_begin = p_begin + tile
            read_phase_grid(grid, s, &pg, dx + (n * s.c_in + g_idx * s.c_in_g) * in_plane)
    free(tap_class)
    free(a_packed)
    fc_workspace_trim()
    return failed



# ---------------------------------------------------------------------------------------------
# weight gradient on the phase grid: dW_g[m, k] = sum over (image, extended position p) of
# g_ext[m, p] * grid[offset[k] + p], the extended positions masked out. Both operands are read
# as contiguous rows (no unfolding, no transposition): register tiles of FC_DOT_M channels x
# FC_DOT_K taps accumulate unreduced vectors, summed per fixed chunk of work items and then
# across chunks and lanes in a fixed order.

cdef inline void dot_tile(const floating* g, Py_ssize_t g_stride, const floating* grid,
                          const Py_ssize_t* offsets, const void* mask, Py_ssize_t length,
                          floating* acc, Py_ssize_t acc_stride, bint one_row) noexcept nogil:
    """A register tile of FC_DOT_M channels x FC_DOT_K taps, or (one_row) of one channel x
    FC_DOT_ROW_K taps."""
    if floating is float:
        if one_row:
            fc_dot_row_f32(g, g_stride, grid, offsets, <const int*> mask, length, acc,
                           acc_stride)
        else:
            fc_dot_tile_f32(g, g_stride, grid, offsets, <const int*> mask, length, acc,
                            acc_stride)
    else:
        if one_row:
            fc_dot_row_f64(g, g_stride, grid, offsets, <const long long*> mask, length, acc,
                           acc_stride)
        else:
            fc_dot_tile_f64(g, g_stride, grid, offsets, <const long long*> mask, length, acc,
                            acc_stride)


cdef void valid_mask(const ConvShape* s, const PhaseGrid* pg, Py_ssize_t length,
                     floating* dummy, void* mask) noexcept nogil:
    """mask[p] = all ones where position p of a batched grid's planes is an output (within
    its image's plane: p % plane < positions, ow < OW, oh < OH), else 0, in the integer type
    as wide as `floating`."""
    cdef Py_ssize_t p, q, keep
    cdef int* mask32 = <int*> mask
    cdef long long* mask64 = <long long*> mask
    for p in range(length):
        q = p % pg.plane
        keep = p < pg.phase_stride and q < pg.positions and q % pg.q[2] < s.out_size[2] \
            and (q // pg.q[2]) % pg.q[1] < s.out_size[1]
        if floating is float:
            mask32[p] = -1 if keep else 0
        else:
            mask64[p] = -1 if keep else 0


ctypedef struct DotTiles:
    # the weight gradient's (output channels) x (taps) of a group in register tiles of
    # dot products, both padded to whole tiles
    Py_ssize_t M, K, tile_m, tile_k, M_pad, K_pad
    bint one_row             # one output channel a group: tiles of one row


cdef inline DotTiles dot_tiles(const ConvShape* s) noexcept nogil:
    cdef DotTiles dt
    dt.M = s.c_out_g
    dt.K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    dt.one_row = dt.M == 1
    dt.tile_m = 1 if dt.one_row else FC_DOT_M
    dt.tile_k = FC_DOT_ROW_K if dt.one_row else FC_DOT_K
    dt.M_pad = (dt.M + dt.tile_m - 1) // dt.tile_m * dt.tile_m
    dt.K_pad = (dt.K + dt.tile_k - 1) // dt.tile_k * dt.tile_k
    return dt


cdef Py_ssize_t fill_unit_grid(const floating* x, const ConvShape* s, const PhaseGrid* pg,
                               Py_ssize_t unit, Py_ssize_t B, floating* grid) noexcept nogil:
    """The phase grids of work unit `unit` (a block of B images of one group) side by side in
    `grid`, cleared before (its padding positions stay zero); returns the block's images. A
    short last block's empty image slots are zeroed: the mask keeps their positions (g_ext is
    zero there), so they must hold zeros, not an earlier unit's planes (zero times inf is
    NaN)."""
    cdef Py_ssize_t g_idx = unit % s.groups
    cdef Py_ssize_t first = (unit // s.groups) * B
    cdef Py_ssize_t count = s.n - first if s.n - first < B else B
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t j, b
    if count < B:
        for j in range(s.c_in_g * s.stride[0] * s.stride[1] * s.stride[2]):
            memset(grid + j * pg.phase_stride + count * pg.plane, 0,
                   (B - count) * pg.plane * sizeof(floating))
    for b in range(count):
        fill_phase_grid(x + ((first + b) * s.c_in + g_idx * s.c_in_g) * in_plane, s, pg,
                        grid + b * pg.plane)
    return count


cdef void extend_unit_row(const floating* g, const ConvShape* s, const PhaseGrid* pg,
                          Py_ssize_t unit, Py_ssize_t B, Py_ssize_t j, floating* g_ext_row,
                          Py_ssize_t row_length, double* plane_sums) noexcept nogil:
    """Row j of work unit `unit`'s extended output gradient (output channel j of its group,
    the block's images side by side); with `plane_sums`, also each image's sum of that
    plane (as bias_grad sums it), taken while the plane is read anyway."""
    cdef Py_ssize_t channel = (unit % s.groups) * s.c_out_g + j
    cdef Py_ssize_t first = (unit // s.groups) * B
    cdef Py_ssize_t count = s.n - first if s.n - first < B else B
    cdef Py_ssize_t out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    cdef Py_ssize_t b
    extend_row_of_images(g + (first * s.c_out + channel) * out_plane, s.c_out * out_plane,
                         count, s, pg, g_ext_row, row_length)
    if plane_sums != NULL:
        for b in range(count):
            plane_sums[(first + b) * s.c_out + channel] = plane_sum(
                g + ((first + b) * s.c_out + channel) * out_plane, out_plane)


cdef int weight_grad_phase_tiles(const floating* x, const floating* g, floating* dw,
                                 const ConvShape* s, const PhaseGrid* pg,
                                 const Py_ssize_t* offsets, void* mask, Py_ssize_t row_length,
                                 Py_ssize_t B, floating* sums, int num_threads,
                                 double* plane_sums) noexcept nogil:
    """weight_grad_phase for fewer work units than threads (one image of one group): the
    units in turn, each one's grid filled once and its extended gradient row by row among
    the threads, then its dot-product tiles shared out among them. Each tile adds the units'
    sums in unit order, as chunks of one unit each would add them: the same bits as
    weight_grad_phase's chunks. sums: the group x M_pad x K_pad accumulators."""
    cdef DotTiles dt = dot_tiles(s)
    cdef Py_ssize_t M = dt.M, K_pad = dt.K_pad, M_pad = dt.M_pad
    cdef Py_ssize_t k_tiles = K_pad // dt.tile_k
    cdef Py_ssize_t tiles = M_pad // dt.tile_m * k_tiles
    cdef Py_ssize_t V = vector_width(<floating*> NULL)
    cdef Py_ssize_t units = (s.n + B - 1) // B * s.groups
    cdef Py_ssize_t unit, g_idx, count, j, tile, m0, k0, length, i
    cdef floating* grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
    cdef floating* g_ext = <floating*> fc_workspace(WS_G_EXTENDED,
                                                    M_pad * row_length * sizeof(floating))
    if grid == NULL or g_ext == NULL:
        return 1
    clear_phase_grid(pg, grid)
    memset(sums, 0, s.groups * M_pad * K_pad * sizeof(floating))
    # the padding rows of g stay zero; the others are rewritten for each unit
    memset(g_ext + M * row_length, 0, (M_pad - M) * row_length * sizeof(floating))
    for unit in range(units):
        g_idx = unit % s.groups
        count = fill_unit_grid(x, s, pg, unit, B, grid)
        for j in prange(M, num_threads=num_threads, schedule='static'):
            extend_unit_row(g, s, pg, unit, B, j, g_ext + j * row_length, row_length,
                            plane_sums)
        length = (count * pg.plane + V - 1) // V * V
        for tile in prange(tiles, num_threads=num_threads, schedule='dynamic'):
            m0 = tile // k_tiles * dt.tile_m
            k0 = tile % k_tiles * dt.tile_k
            dot_tile(g_ext + m0 * row_length, row_length, grid, offsets + k0, mask, length,
                     sums + (g_idx * M_pad + m0) * K_pad + k0, K_pad, dt.one_row)
    for i in prange(s.c_out, num_threads=num_threads, schedule='static'):
        memcpy(dw + i * dt.K, sums + ((i // M) * M_pad + i % M) * K_pad,
               dt.K * sizeof(floating))
    return 0


cdef int weight_grad_phase(const floating* x, const floating* g, floating* dw,
                           const ConvShape* s, Py_ssize_t images_per_unit, Py_ssize_t chunks,
                           int num_threads, double* plane_sums=NULL) noexcept nogil:
    """With `plane_sums` (not NULL), also plane_sums[n * c_out + c] = the sum of g[n, c] (as
    bias_grad sums it), taken while each plane is copied anyway.
    Work units are (block of `images_per_unit` images, group): the block's phase grids sit
    side by side in each phase plane, so one run of dot products covers all of its images.
    Channels and taps are padded to whole register tiles (zero rows of g, repeated taps)
    whose extra sums are dropped; one output channel per group takes tiles of one row (the
    tiles' shape changes no sum)."""
    cdef Py_ssize_t V = vector_width(<floating*> NULL)
    cdef Py_ssize_t B = images_per_unit
    cdef DotTiles dt = dot_tiles(s)
    cdef Py_ssize_t K = dt.K, M = dt.M, K_pad = dt.K_pad, M_pad = dt.M_pad
    cdef Py_ssize_t tile_m = dt.tile_m, tile_k = dt.tile_k
    cdef bint one_row = dt.one_row
    cdef Py_ssize_t blocks = (s.n + B - 1) // B
    cdef Py_ssize_t units = blocks * s.groups
    cdef Py_ssize_t size = s.groups * M_pad * K_pad
    cdef PhaseGrid pg
    cdef Py_ssize_t row_length, length, chunk, unit, count, g_idx, m0, k0, i, t, j
    cdef Py_ssize_t* offsets = <Py_ssize_t*> fc_workspace(WS_PHASE_OFFSETS,
                                                          K_pad * sizeof(Py_ssize_t))
    cdef floating* partial = NULL
    cdef void* mask = NULL
    cdef floating* grid = NULL
    cdef floating* g_ext = NULL
    cdef floating* mine
    cdef floating total
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if offsets == NULL:
        return 1
    phase_grid(s, 1, B, &pg)
    # a row of g_ext: the block's planes, rounded up to whole vectors; reads at masked
    # positions may run one plane plus a vector past the last image, into the slack
    row_length = (B * pg.plane + V - 1) // V * V
    phase_grid(s, pg.plane + 2 * V, B, &pg)
    phase_offsets(s, &pg, offsets)
    for k0 in range(K, K_pad):
        offsets[k0] = offsets[0]
    # the calling thread's buffers, reused from call to call (calloc'ed ones came as fresh
    # pages to fault in on every call)
    partial = <floating*> fc_workspace(WS_PARTIAL, chunks * size * sizeof(floating))
    mask = fc_workspace(WS_MASK, row_length * sizeof(floating))
    if partial == NULL or mask == NULL:
        return 1
    valid_mask(s, &pg, row_length, <floating*> NULL, mask)
    if units < num_threads:
        failed = weight_grad_phase_tiles(x, g, dw, s, &pg, offsets, mask, row_length, B,
                                         partial, num_threads, plane_sums)
        fc_workspace_trim()
        return failed
    # one parallel region: the chunks, then (after a barrier) their reduction
    with parallel(num_threads=num_threads):
        grid = <floating*> fc_workspace(WS_PHASE, pg.size * sizeof(floating))
        g_ext = <floating*> fc_workspace(WS_G_EXTENDED, M_pad * row_length * sizeof(floating))
        if grid == NULL or g_ext == NULL:
            failed_flag[0] = 1
        else:
            # padding positions are never written by the fill (zero for every image), and
            # the slack is read at masked positions only: nothing uninitialized is read
            clear_phase_grid(&pg, grid)
        for chunk in prange(chunks, schedule='dynamic'):
            if grid == NULL or g_ext == NULL:
                continue
            mine = partial + chunk * size
            memset(mine, 0, size * sizeof(floating))
            for unit in range(units * chunk // chunks, units * (chunk + 1) // chunks):
                g_idx = unit % s.groups
                # the padding rows of g: zero (the others are written whole below)
                memset(g_ext + M * row_length, 0, (M_pad - M) * row_length * sizeof(floating))
                count = fill_unit_grid(x, s, &pg, unit, B, grid)
                for j in range(M):
                    extend_unit_row(g, s, &pg, unit, B, j, g_ext + j * row_length,
                                    row_length, plane_sums)
                length = (count * pg.plane + V - 1) // V * V
                m0 = 0
                while m0 < M_pad:
                    k0 = 0
                    while k0 < K_pad:
                        dot_tile(g_ext + m0 * row_length, row_length, grid, offsets + k0, mask,
                                 length, mine + (g_idx * M_pad + m0) * K_pad + k0, K_pad,
                                 one_row)
                        k0 = k0 + tile_k
                    m0 = m0 + tile_m
        # the chunks' partial sums, once every chunk is done, added in chunk order (row by
        # row: no index divisions per element, which cost more than the additions)
        fc_team_barrier()
        for i in prange(s.c_out, schedule='static'):
            if failed_flag[0] != 0:
                continue
            j = ((i // M) * M_pad + i % M) * K_pad
            for k0 in range(K):
                total = 0
                for t in range(chunks):
                    total = total + partial[t * size + j + k0]
                dw[i * K + k0] = total
    fc_workspace_trim()
    return failed



# ---------------------------------------------------------------------------------------------
# Entry points from Python: 5-d C-contiguous arrays (1d and 2d problems with unit leading
# spatial axes), already validated by the Python layer.

def grid_shape(tuple x_shape, tuple w_shape, tuple out_shape, tuple stride, tuple pad,
               tuple dilation, Py_ssize_t groups):
    """(extended positions, buffer elements without slack) of the phase grid of one image."""
    cdef ConvShape s = make_shape(x_shape, w_shape, out_shape, stride, pad, dilation, groups)
    cdef PhaseGrid pg
    phase_grid(&s, 0, 1, &pg)
    return pg.positions, pg.size


def conv_forward(int kernel, const floating[:, :, :, :, ::1] x,
                 const floating[:, :, :, :, ::1] w, const floating[::1] bias,
                 floating[:, :, :, :, ::1] out, tuple stride, tuple pad, tuple dilation,
                 Py_ssize_t groups, Py_ssize_t tile_panels, int tile_shape, int num_threads,
                 object packed_weights=None):
    """out := conv(x, w) + bias (bias: empty for none) with zero padding `pad` before each
    axis, on the packed micro-kernel (register tile `tile_shape`, tiles of `tile_panels`
    panels) reading the phase grid of each (image, group) in place. `kernel`:
    CONV_PACKED_PHASE (bit-for-bit the result of conv_packed's CONV_PACKED_SEGMENTS).
    `packed_weights`: conv_packed.pack_layer_weights(w, groups, tile_shape, False, ...)'s
    result, or None to read w where it lies."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(w.shape), shape5(out.shape),
                                  stride, pad, dilation, groups)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef const floating* prepacked = prepacked_pointer(packed_weights, &s, tile_shape,
                                                       &w[0, 0, 0, 0, 0])
    cdef int status = 0
    if kernel != CONV_PACKED_PHASE:
        raise ValueError(f"conv_phase_grid.conv_forward does not run kernel {kernel}")
    if tile_shape != TILE_WIDE and tile_shape != TILE_NARROW:
        raise ValueError(f"conv_phase_grid.conv_forward: no register tile shape {tile_shape}")
    if out.shape[0] == 0:
        return
    with nogil:
        status = conv_packed_phase(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                   &out[0, 0, 0, 0, 0], &s, tile_panels, tile_shape,
                                   prepacked, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a convolution work buffer")


def input_grad(int kernel, const floating[:, :, :, :, ::1] g,
               const floating[:, :, :, :, ::1] w, floating[:, :, :, :, ::1] dx,
               tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
               Py_ssize_t tile_panels, int num_threads):
    """dx := the input gradient of conv(dx-shaped input, w) for output gradient g (zero
    padding `pad` before each axis) through the phase grid, in tiles of `tile_panels`
    position panels. `kernel`: INPUT_GRAD_PHASE_CLASSES (one product per stride class) or
    INPUT_GRAD_PHASE_SCATTER (col = W^T @ g tile by tile, scattered into the grid: for
    groups of few input channels, where the classes would waste most of each register
    tile). Either is exact for any shape; the weights must be finite (the zeros of the
    extended gradient must contribute exact zeros)."""
    cdef ConvShape s = make_shape(shape5(dx.shape), shape5(w.shape), shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    if kernel != INPUT_GRAD_PHASE_CLASSES and kernel != INPUT_GRAD_PHASE_SCATTER:
        raise ValueError(f"conv_phase_grid.input_grad does not run kernel {kernel}")
    if dx.shape[0] == 0:
        return
    with nogil:
        if kernel == INPUT_GRAD_PHASE_SCATTER:
            status = input_grad_phase_scatter(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0],
                                              &dx[0, 0, 0, 0, 0], &s, tile_panels,
                                              num_threads)
        else:
            status = input_grad_phase(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0],
                                      &dx[0, 0, 0, 0, 0], &s, tile_panels, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")


def weight_grad(int kernel, const floating[:, :, :, :, ::1] x,
                const floating[:, :, :, :, ::1] g, floating[:, :, :, :, ::1] dw,
                tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                Py_ssize_t images_per_unit, Py_ssize_t chunks, int num_threads,
                floating[::1] db=None):
    """dw := the weight gradient of conv(x, dw-shaped weight) for output gradient g, by dot
    products on the phase grid in work units of `images_per_unit` images, summed in `chunks`
    fixed partial sums; also db := the bias gradient (as conv_bias.bias_grad computes it)
    if db is given. `kernel`: WEIGHT_GRAD_PHASE."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(dw.shape), shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    cdef double* plane_sums = NULL
    cdef double total
    cdef Py_ssize_t c, n
    if kernel != WEIGHT_GRAD_PHASE:
        raise ValueError(f"conv_phase_grid.weight_grad does not run kernel {kernel}")
    if images_per_unit < 1:
        raise ValueError("conv_phase_grid.weight_grad: images_per_unit must be positive")
    if db is not None:
        plane_sums = <double*> malloc(max(1, s.n * s.c_out) * sizeof(double))
        if plane_sums == NULL:
            raise MemoryError("fastconv: could not allocate a convolution work buffer")
    with nogil:
        status = weight_grad_phase(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0], &dw[0, 0, 0, 0, 0],
                                   &s, images_per_unit, chunks, num_threads, plane_sums)
        if plane_sums != NULL and status == 0:
            for c in range(s.c_out):   # images in order, as bias_grad adds them
                total = 0
                for n in range(s.n):
                    total = total + plane_sums[n * s.c_out + c]
                db[c] = <floating> total
    free(plane_sums)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")
