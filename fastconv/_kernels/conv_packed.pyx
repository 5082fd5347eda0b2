# cython: language_level=3
"""The packed convolution by row segments (CONV_PACKED_SEGMENTS): im2col writes straight into
the panel layout of fastconv's own register-blocked GEMM micro-kernel (packed_gemm.pxd),
segment by segment of output rows. Work items are (image, group, tile of output positions);
each thread unfolds its tile into private panels (sized for L2) and multiplies them by the
weights, packed once per call. Every output is one complete sum over the taps in a fixed
order, so the result does not depend on the tiling or the thread count.

Also the register-tile facts the Python layer plans with: tile_shape and tile_size.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel

from fastconv._kernels.conv_shape cimport ConvShape, make_shape, output_range, \
    shape5
from fastconv._kernels.kernel_ids cimport CONV_PACKED_SEGMENTS, CONV_PACKED_STACKED, \
    INPUT_GRAD_GEMM1X1_STACKED
from fastconv._kernels.pair_rows cimport copy_strided, fc_copy_short, fc_zero_short
from fastconv._kernels.packed_gemm cimport TILE_WIDE, TILE_NARROW, tile_mr, tile_nr, \
    choose_tile, group_panels, pack_weights, multiply_tile, PackedGeometry, packed_geometry, \
    packed_weights_size, prepacked_pointer, adjoint_in_place
from fastconv._kernels.workspace cimport fc_workspace, fc_workspace_trim

# Slots of the per-thread workspace (workspace.h): buffers reused from call to call.
cdef enum:
    WS_PACKED_WEIGHTS, WS_SHARED_PANELS, WS_PANELS, WS_SEGMENTS, WS_STACKED_SUMS

def adjoint_read_in_place(Py_ssize_t rows, Py_ssize_t positions, int shape,
                          bint double_precision):
    """adjoint_in_place for Python: whether input_grad needs no packed weights."""
    if double_precision:
        return adjoint_in_place(rows, positions, tile_mr(shape), tile_nr(shape, <double*> NULL))
    return adjoint_in_place(rows, positions, tile_mr(shape), tile_nr(shape, <float*> NULL))


def tile_size(bint double_precision, int shape=TILE_WIDE):
    """(MR, NR) of the packed GEMM micro-kernel's register tile `shape` on this CPU."""
    return tile_mr(shape), tile_nr(shape, <double*> NULL) if double_precision \
        else tile_nr(shape, <float*> NULL)


def tile_shape(Py_ssize_t M, bint double_precision):
    """choose_tile for Python: the tile shape for a product of M rows (output channels)."""
    if double_precision:
        return choose_tile(M, <double*> NULL)
    return choose_tile(M, <float*> NULL)


ctypedef struct PanelSegment:
    # a run of output positions inside one output row and one panel
    Py_ssize_t q          # index of its first position inside the tile
    Py_ssize_t length
    Py_ssize_t ow         # output column of its first position
    Py_ssize_t d0, h0     # input depth/row its output row reads at tap kd = kh = 0
    Py_ssize_t dst        # where its values of tap row k = 0 go in the panels (+ k NR)


cdef Py_ssize_t panel_segments(const ConvShape* s, Py_ssize_t p_begin, Py_ssize_t count,
                               Py_ssize_t NR, PanelSegment* segments) noexcept nogil:
    """Split output positions [p_begin, p_begin + count) at row and panel boundaries (the
    same for every tap, so computed once per tile); returns the number of segments."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t q = 0, n_segments = 0, p, r, ow, length
    while q < count:
        p = p_begin + q
        r = p // OW
        ow = p - r * OW
        length = OW - ow
        if length > count - q:
            length = count - q
        if length > NR - q % NR:
            length = NR - q % NR
        segments[n_segments].q = q
        segments[n_segments].length = length
        segments[n_segments].ow = ow
        segments[n_segments].d0 = (r // OH) * s.stride[0] - s.pad[0]
        segments[n_segments].h0 = (r % OH) * s.stride[1] - s.pad[1]
        segments[n_segments].dst = (q // NR) * K * NR + q % NR
        n_segments += 1
        q += length
    return n_segments



cdef void im2col_panels(const floating* x_g, const ConvShape* s, const PanelSegment* segments,
                        Py_ssize_t n_segments, Py_ssize_t count, Py_ssize_t NR,
                        floating* dst, Py_ssize_t c_begin, Py_ssize_t c_end) noexcept nogil:
    """Unfold a tile of output positions of one image and group into panels:
    dst[j][k][c] = input read by tap k at the tile's position j * NR + c (0 past count),
    for the tap rows k of input channels c_begin .. c_end - 1.
    Small planes make many short segments (a 7x7 plane: 7 per tap row, 4608 tap rows for
    512 channels), so the loop does no division per segment nor per tap row, and copies and
    zeroes inline (a libc call per 7-element row, and the divisions, were a third of a
    batch-1 call on 512 channels of 7x7)."""
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t K = s.c_in_g * KD * KH * KW
    cdef Py_ssize_t sw = s.stride[2], OW = s.out_size[2]
    cdef Py_ssize_t k = c_begin * KD * KH * KW, c, kd, kh, kw, off, lo, hi, i_d, i_h, ow, n, e
    cdef Py_ssize_t first, last
    # the last panel's columns past count: zeros
    cdef Py_ssize_t tail = count % NR, tail_at = (count // NR) * K * NR + count % NR
    cdef const PanelSegment* seg
    cdef const floating* src
    cdef floating* d
    for c in range(c_begin, c_end):
        for kd in range(KD):
            for kh in range(KH):
                for kw in range(KW):
                    off = kw * s.dilation[2] - s.pad[2]
                    output_range(off, sw, W, OW, &lo, &hi)
                    for e in range(n_segments):
                        seg = &segments[e]
                        n = seg.length
                        ow = seg.ow
                        d = dst + seg.dst + k * NR
                        i_d = seg.d0 + kd * s.dilation[0]
                        i_h = seg.h0 + kh * s.dilation[1]
                        if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                            fc_zero_short(d, n * sizeof(floating))
                            continue
                        src = x_g + ((c * D + i_d) * H + i_h) * W + off
                        # the columns [first, last) read the input; the others read padding
                        first = lo - ow if lo > ow else 0
                        if first > n:
                            first = n
                        last = hi - ow if hi - ow < n else n
                        if last < first:
                            last = first
                        if first > 0:
                            fc_zero_short(d, first * sizeof(floating))
                        if sw == 1:
                            fc_copy_short(d + first, src + ow + first,
                                          (last - first) * sizeof(floating))
                        else:
                            copy_strided(d + first, src + (ow + first) * sw, last - first, sw)
                        if last < n:
                            fc_zero_short(d + last, (n - last) * sizeof(floating))
                    if tail > 0:
                        fc_zero_short(dst + tail_at + k * NR, (NR - count % NR) * sizeof(floating))
                    k += 1



cdef inline Py_ssize_t unfold_channel_parts(Py_ssize_t channels, int num_threads) noexcept nogil:
    """Ranges of input channels the shared unfolding is cut into: one a thread (each unfolds
    its channels' tap rows of every tile), or whole tiles alone with fewer channels."""
    return num_threads if channels >= num_threads else 1


cdef int packed_shared_panels(const floating* x, const floating* a, Py_ssize_t a_stride,
                              const floating* bias, floating* out, const ConvShape* s,
                              Py_ssize_t tile_panels, Py_ssize_t channel_panels, int shape,
                              int num_threads) noexcept nogil:
    """conv_packed for planes with few tiles: per (image, group), all tiles are unfolded into
    one shared panel buffer (in parallel), then (tile, block of channels) items multiply.
    a, a_stride: the weights, as group_panels takes them. The unfolding is split by input
    channels, not tiles: a plane of 2 or 5 tiles, the last one short, left one thread
    unfolding most of it alone (ResNet-50's batch-1 layers on 7x7 and 14x14)."""
    cdef PackedGeometry geo = packed_geometry(s, shape, tile_panels, <floating*> NULL)
    cdef Py_ssize_t MR = geo.MR, NR = geo.NR, K = geo.K, out_plane = geo.out_plane
    cdef Py_ssize_t in_plane = geo.in_plane, m_panels = geo.m_panels, tile = geo.tile
    cdef Py_ssize_t tiles = (out_plane + tile - 1) // tile
    cdef Py_ssize_t channel_blocks = (m_panels + channel_panels - 1) // channel_panels
    cdef Py_ssize_t tile_size = tile_panels * K * NR
    cdef floating* shared = <floating*> fc_workspace(WS_SHARED_PANELS,
                                                    tiles * tile_size * sizeof(floating))
    cdef PanelSegment* segments = NULL
    cdef Py_ssize_t ng, n, g, t, item, block, p_begin, count, first_panel, panels, n_segments
    cdef Py_ssize_t part, c_parts = unfold_channel_parts(s.c_in_g, num_threads)
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if shared == NULL:
        return 1
    for ng in range(s.n * s.groups):
        n = ng // s.groups
        g = ng % s.groups
        with parallel(num_threads=num_threads):
            segments = <PanelSegment*> fc_workspace(
                WS_SEGMENTS, (tile + tile_panels + 1) * sizeof(PanelSegment))
            if segments == NULL:
                failed_flag[0] = 1
            for item in prange(tiles * c_parts, schedule='static'):
                if segments == NULL:
                    continue
                part = item // tiles    # static: thread i unfolds range i of every tile
                t = item % tiles
                p_begin = t * tile
                count = out_plane - p_begin if out_plane - p_begin < tile else tile
                n_segments = panel_segments(s, p_begin, count, NR, segments)
                im2col_panels(x + (n * s.c_in + g * s.c_in_g) * in_plane, s, segments,
                              n_segments, count, NR, shared + t * tile_size,
                              part * s.c_in_g // c_parts, (part + 1) * s.c_in_g // c_parts)
        if failed:
            break
        for item in prange(tiles * channel_blocks, num_threads=num_threads, schedule='dynamic'):
            t = item // channel_blocks
            block = item % channel_blocks
            p_begin = t * tile
            count = out_plane - p_begin if out_plane - p_begin < tile else tile
            first_panel = block * channel_panels
            panels = m_panels - first_panel if m_panels - first_panel < channel_panels \
                else channel_panels
            multiply_tile(K, panels, s.c_out_g - first_panel * MR, count, NR,
                          group_panels(a, a_stride, s, shape, g, first_panel),
                          shared + t * tile_size,
                          out + (n * s.c_out + g * s.c_out_g + first_panel * MR) * out_plane
                          + p_begin, out_plane,
                          bias + g * s.c_out_g + first_panel * MR if bias != NULL else NULL,
                          False, shape, NULL, a_stride)
    return failed


cdef int conv_packed(const floating* x, const floating* w, const floating* bias, floating* out,
                     const ConvShape* s, Py_ssize_t tile_panels, Py_ssize_t channel_panels,
                     int shape, const floating* prepacked, int num_threads) noexcept nogil:
    """out := conv(x, w) + bias; `prepacked`: w already packed (pack_weights' layout), or
    NULL to read w (C-contiguous) where it lies."""
    cdef PackedGeometry geo = packed_geometry(s, shape, tile_panels, <floating*> NULL)
    cdef Py_ssize_t MR = geo.MR, NR = geo.NR, K = geo.K, out_plane = geo.out_plane
    cdef Py_ssize_t in_plane = geo.in_plane, m_panels = geo.m_panels, tile = geo.tile
    cdef Py_ssize_t tiles = (out_plane + tile - 1) // tile
    cdef Py_ssize_t channel_blocks = (m_panels + channel_panels - 1) // channel_panels
    cdef Py_ssize_t items = s.n * s.groups * tiles * channel_blocks
    cdef Py_ssize_t item, t, g, n, p_begin, count, block, first_panel, panels
    cdef Py_ssize_t a_stride = K if prepacked == NULL else 0
    cdef const floating* a = prepacked if prepacked != NULL else w
    cdef floating* b_packed = NULL
    cdef PanelSegment* segments = NULL
    cdef Py_ssize_t n_segments
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if channel_blocks > 1:
        # Few tiles per plane, so output channels are split too: unfold each plane once into
        # panels that every channel block shares, instead of once per block.
        failed = packed_shared_panels(x, a, a_stride, bias, out, s, tile_panels,
                                      channel_panels, shape, num_threads)
        fc_workspace_trim()   # the main thread's buffers; the other threads' are tile-sized
        return failed
    with parallel(num_threads=num_threads):
        b_packed = <floating*> fc_workspace(WS_PANELS, tile_panels * K * NR * sizeof(floating))
        # at most one segment per position, plus one per panel start
        segments = <PanelSegment*> fc_workspace(
            WS_SEGMENTS, (tile + tile_panels + 1) * sizeof(PanelSegment))
        if b_packed == NULL or segments == NULL:
            failed_flag[0] = 1
        for item in prange(items, schedule='dynamic'):
            if b_packed == NULL or segments == NULL:
                continue
            # item = ((n * groups + g) * tiles + t) * channel_blocks + block
            block = item % channel_blocks
            t = (item // channel_blocks) % tiles
            g = (item // (channel_blocks * tiles)) % s.groups
            n = item // (channel_blocks * tiles * s.groups)
            p_begin = t * tile
            count = out_plane - p_begin
            if count > tile:
                count = tile
            first_panel = block * channel_panels
            panels = m_panels - first_panel
            if panels > channel_panels:
                panels = channel_panels
            n_segments = panel_segments(s, p_begin, count, NR, segments)
            im2col_panels(x + (n * s.c_in + g * s.c_in_g) * in_plane, s, segments, n_segments,
                          count, NR, b_packed, 0, s.c_in_g)
            multiply_tile(K, panels, s.c_out_g - first_panel * MR, count, NR,
                          group_panels(a, a_stride, s, shape, g, first_panel), b_packed,
                          out + (n * s.c_out + g * s.c_out_g + first_panel * MR) * out_plane
                          + p_begin, out_plane,
                          bias + g * s.c_out_g + first_panel * MR if bias != NULL else NULL,
                          False, shape, NULL, a_stride)
    fc_workspace_trim()   # the main thread's buffers; the other threads' are tile-sized
    return failed



# ---------------------------------------------------------------------------------------------
# 1x1 convolution over the batch's positions stacked end to end (CONV_PACKED_STACKED): on
# small planes a tile of one image's positions leaves most of the micro-kernel's 48-wide
# panels empty (a 7x7 plane fills 49 of 96 columns); stacked, every panel but the batch's last
# is full. A panel may hold the end of one image and the start of the next, so the products
# go to a scratch tile first and are copied out run by run.

cdef bint pointwise(const ConvShape* s) noexcept nogil:
    """True if every output position reads the input position of the same index: a 1x1
    kernel, no padding, each axis as long in the output as in the input."""
    cdef int i
    for i in range(3):
        if s.kernel[i] != 1 or s.pad[i] != 0 or s.in_size[i] != s.out_size[i]:
            return False
    return True


ctypedef struct StackedRun:
    # positions [q, q + length) of a tile: image n's positions [p, p + length)
    Py_ssize_t q, length, n, p


cdef Py_ssize_t stacked_runs(Py_ssize_t q_begin, Py_ssize_t count, Py_ssize_t plane,
                             Py_ssize_t NR, StackedRun* runs) noexcept nogil:
    """Split stacked positions [q_begin, q_begin + count) at image and panel boundaries;
    returns the number of runs."""
    cdef Py_ssize_t q = 0, n_runs = 0, position, length
    while q < count:
        position = q_begin + q
        runs[n_runs].n = position // plane
        runs[n_runs].p = position - runs[n_runs].n * plane
        length = plane - runs[n_runs].p
        if length > count - q:
            length = count - q
        if length > NR - q % NR:
            length = NR - q % NR
        runs[n_runs].q = q
        runs[n_runs].length = length
        n_runs += 1
        q += length
    return n_runs


cdef int conv_packed_stacked(const floating* x, const floating* w, const floating* bias,
                             floating* out, const ConvShape* s, Py_ssize_t tile_panels,
                             Py_ssize_t channel_panels, int shape, bint adjoint,
                             const floating* prepacked, int num_threads) noexcept nogil:
    """out := the 1x1 convolution of x by w (+ bias) described by `s`; `adjoint`: w is the
    weight of the convolution whose input gradient this is, (C_in = s.c_out, C_out/groups =
    s.c_in_g) laid out as that layer's, read as its transpose.
    `prepacked`: w already packed so, or NULL to read w (C-contiguous) where it lies; with
    `adjoint`, where it lies if adjoint_in_place, else packed here."""
    # work item: (group, tile of stacked positions, block of output channels)
    cdef PackedGeometry geo = packed_geometry(s, shape, tile_panels, <floating*> NULL)
    cdef Py_ssize_t MR = geo.MR, NR = geo.NR, K = geo.K, plane = geo.out_plane
    cdef Py_ssize_t m_panels = geo.m_panels, tile = geo.tile
    cdef Py_ssize_t positions = s.n * plane
    cdef Py_ssize_t tiles = (positions + tile - 1) // tile
    cdef Py_ssize_t channel_blocks = (m_panels + channel_panels - 1) // channel_panels
    cdef Py_ssize_t items = s.groups * tiles * channel_blocks
    cdef Py_ssize_t item, t, g, block, q_begin, count, first_panel, panels, rows, n_runs
    cdef Py_ssize_t k, e, r, co
    cdef const StackedRun* run
    # A where it lies: a layer's filters (a_stride > 0), or a 1x1 layer's transpose (< 0)
    cdef Py_ssize_t a_stride = 0 if prepacked != NULL else -s.c_out_g if adjoint \
        and adjoint_in_place(s.c_out_g, positions, MR, NR) else 0 if adjoint else K
    cdef const floating* a = prepacked if prepacked != NULL else w if a_stride != 0 else \
        <floating*> fc_workspace(WS_PACKED_WEIGHTS,
                                 s.groups * m_panels * K * MR * sizeof(floating))
    cdef floating* b_packed = NULL
    cdef floating* sums = NULL
    cdef StackedRun* runs = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if a == NULL:
        return 1
    if prepacked == NULL and a_stride == 0:
        pack_weights(w, s, <floating*> a, shape, num_threads, adjoint)
    with parallel(num_threads=num_threads):
        b_packed = <floating*> fc_workspace(WS_PANELS, tile_panels * K * NR * sizeof(floating))
        sums = <floating*> fc_workspace(WS_STACKED_SUMS,
                                        channel_panels * MR * tile * sizeof(floating))
        # at most one run per position
        runs = <StackedRun*> fc_workspace(WS_SEGMENTS, tile * sizeof(StackedRun))
        if b_packed == NULL or sums == NULL or runs == NULL:
            failed_flag[0] = 1
        for item in prange(items, schedule='dynamic'):
            if b_packed == NULL or sums == NULL or runs == NULL:
                continue
            # item = (g * tiles + t) * channel_blocks + block
            block = item % channel_blocks
            t = (item // channel_blocks) % tiles
            g = item // (channel_blocks * tiles)
            q_begin = t * tile
            count = positions - q_begin if positions - q_begin < tile else tile
            first_panel = block * channel_panels
            panels = m_panels - first_panel if m_panels - first_panel < channel_panels \
                else channel_panels
            rows = s.c_out_g - first_panel * MR
            if rows > panels * MR:
                rows = panels * MR
            n_runs = stacked_runs(q_begin, count, plane, NR, runs)
            # the panels: b[panel][k][c] = channel k of the group at stacked position
            for k in range(K):
                for e in range(n_runs):
                    run = &runs[e]
                    fc_copy_short(b_packed + (run.q // NR) * K * NR + k * NR + run.q % NR,
                                  x + ((run.n * s.c_in + g * K + k) * plane + run.p),
                                  run.length * sizeof(floating))
                if count % NR:
                    fc_zero_short(b_packed + (count // NR) * K * NR + k * NR + count % NR,
                                  (NR - count % NR) * sizeof(floating))
            if runs[0].n == runs[n_runs - 1].n:
                # the tile lies in one image: its positions are contiguous in each output row
                multiply_tile(K, panels, rows, count, NR,
                              group_panels(a, a_stride, s, shape, g, first_panel), b_packed,
                              out + (runs[0].n * s.c_out + g * s.c_out_g + first_panel * MR)
                              * plane + runs[0].p, plane,
                              bias + g * s.c_out_g + first_panel * MR if bias != NULL else NULL,
                              False, shape, NULL, a_stride)
                continue
            multiply_tile(K, panels, rows, count, NR,
                          group_panels(a, a_stride, s, shape, g, first_panel), b_packed, sums,
                          tile,
                          bias + g * s.c_out_g + first_panel * MR if bias != NULL else NULL,
                          False, shape, NULL, a_stride)
            for r in range(rows):
                co = g * s.c_out_g + first_panel * MR + r
                for e in range(n_runs):
                    run = &runs[e]
                    fc_copy_short(out + (run.n * s.c_out + co) * plane + run.p,
                                  sums + r * tile + run.q, run.length * sizeof(floating))
    fc_workspace_trim()   # the main thread's buffers; the other threads' are tile-sized
    return failed

# ---------------------------------------------------------------------------------------------
# Entry point from Python: 5-d C-contiguous arrays, already validated by the Python layer.

def conv_forward(int kernel, const floating[:, :, :, :, ::1] x,
                 const floating[:, :, :, :, ::1] w, const floating[::1] bias,
                 floating[:, :, :, :, ::1] out, tuple stride, tuple pad, tuple dilation,
                 Py_ssize_t groups, Py_ssize_t tile_panels, Py_ssize_t channel_panels,
                 int tile_shape, int num_threads, object packed_weights=None):
    """out := conv(x, w) + bias (bias: empty for none) with zero padding `pad` before each
    axis, on the packed micro-kernel with register tile `tile_shape` (TILE_WIDE 0 or
    TILE_NARROW 1), tiles of `tile_panels` position panels, output channels in blocks of
    `channel_panels` weight panels. `kernel`: CONV_PACKED_SEGMENTS, or CONV_PACKED_STACKED (a
    1x1 kernel, stride 1, no padding; tiles of the batch's positions stacked end to end).
    `packed_weights`: pack_layer_weights(w, groups, tile_shape, False, ...)'s result, or None
    to read w where it lies (each filter a row of the product)."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(w.shape), shape5(out.shape),
                                  stride, pad, dilation, groups)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef const floating* prepacked = prepacked_pointer(packed_weights, &s, tile_shape,
                                                       &w[0, 0, 0, 0, 0])
    cdef int status = 0
    if kernel != CONV_PACKED_SEGMENTS and kernel != CONV_PACKED_STACKED:
        raise ValueError(f"conv_packed.conv_forward does not run kernel {kernel}")
    if kernel == CONV_PACKED_STACKED and not pointwise(&s):
        raise ValueError(f"conv_packed.conv_forward: kernel {kernel} takes a 1x1 kernel "
                         f"with stride 1 and no padding")
    if tile_shape != TILE_WIDE and tile_shape != TILE_NARROW:
        raise ValueError(f"conv_packed.conv_forward: no register tile shape {tile_shape}")
    if out.shape[0] == 0:
        return
    with nogil:
        if kernel == CONV_PACKED_STACKED:
            status = conv_packed_stacked(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                         &out[0, 0, 0, 0, 0], &s, tile_panels, channel_panels,
                                         tile_shape, False, prepacked, num_threads)
        else:
            status = conv_packed(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                 &out[0, 0, 0, 0, 0], &s, tile_panels, channel_panels,
                                 tile_shape, prepacked, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a convolution work buffer")


def layer_weights_size(tuple w_shape, Py_ssize_t groups, int tile_shape, bint adjoint):
    """Elements of pack_layer_weights' result for weights of 5-d shape `w_shape`."""
    cdef ConvShape s = layer_shape(w_shape, groups, adjoint)
    return packed_weights_size(&s, tile_shape)


def pack_layer_weights(const floating[:, :, :, :, ::1] w, Py_ssize_t groups, int tile_shape,
                       bint adjoint, floating[::1] packed, int num_threads):
    """packed := w in the panels of register tile `tile_shape`, as the packed kernels (the
    forward ones, or with `adjoint` the 1x1 input gradient's transposed layout) pack it for
    themselves: done once, it serves every call with the same weights."""
    cdef ConvShape s = layer_shape(shape5(w.shape), groups, adjoint)
    if tile_shape != TILE_WIDE and tile_shape != TILE_NARROW:
        raise ValueError(f"pack_layer_weights: no register tile shape {tile_shape}")
    if packed.shape[0] != packed_weights_size(&s, tile_shape):
        raise ValueError(f"pack_layer_weights: packed needs "
                         f"{packed_weights_size(&s, tile_shape)} elements, got "
                         f"{packed.shape[0]}")
    if packed.shape[0] == 0:
        return
    with nogil:
        pack_weights(&w[0, 0, 0, 0, 0], &s, &packed[0], tile_shape, num_threads, adjoint)


cdef ConvShape layer_shape(tuple w_shape, Py_ssize_t groups, bint adjoint) except *:
    """The ConvShape fields pack_weights reads, for a layer's weights (C_out, C_in / groups,
    *kernel); with `adjoint`, for its 1x1 input gradient (C_in / groups filters per group,
    each C_out / groups deep)."""
    cdef ConvShape s
    cdef int i
    if groups < 1 or w_shape[0] % groups:
        raise ValueError(f"weights {w_shape} do not split into {groups} groups")
    if adjoint and w_shape[2] * w_shape[3] * w_shape[4] != 1:
        raise ValueError(f"adjoint packing takes 1x1 weights, got {w_shape}")
    s.groups = groups
    if adjoint:
        # the input gradient's filters: C_in / groups of them per group, C_out / groups deep
        s.c_out_g, s.c_in_g = w_shape[1], w_shape[0] // groups
    else:
        s.c_out_g, s.c_in_g = w_shape[0] // groups, w_shape[1]
    s.c_out, s.c_in = s.c_out_g * groups, s.c_in_g * groups
    for i in range(3):
        s.kernel[i] = 1 if adjoint else w_shape[2 + i]
    return s


def input_grad(int kernel, const floating[:, :, :, :, ::1] g,
               const floating[:, :, :, :, ::1] w, floating[:, :, :, :, ::1] dx,
               tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
               Py_ssize_t tile_panels, Py_ssize_t channel_panels, int tile_shape,
               int num_threads, object packed_weights=None):
    """dx := the input gradient of a 1x1 convolution (stride 1, no padding) by w for output
    gradient g: the 1x1 convolution of g by w's transpose, over the batch's positions stacked
    end to end, the transposition done while packing w. Tiles of `tile_panels` position
    panels, input channels in blocks of `channel_panels` panels. `kernel`:
    INPUT_GRAD_GEMM1X1_STACKED. `packed_weights`: pack_layer_weights(w, groups, tile_shape,
    True, ...)'s result, or None to pack w for this call."""
    cdef Py_ssize_t c_in = dx.shape[1]
    cdef ConvShape s
    cdef const floating* prepacked = NULL
    cdef int status = 0
    if kernel != INPUT_GRAD_GEMM1X1_STACKED:
        raise ValueError(f"conv_packed.input_grad does not run kernel {kernel}")
    if tile_shape != TILE_WIDE and tile_shape != TILE_NARROW:
        raise ValueError(f"conv_packed.input_grad: no register tile shape {tile_shape}")
    if groups < 1 or w.shape[0] % groups or w.shape[1] * groups != c_in \
            or w.shape[0] != g.shape[1] or w.shape[2] * w.shape[3] * w.shape[4] != 1 \
            or g.shape[0] != dx.shape[0] or g.shape[2] != dx.shape[2] \
            or g.shape[3] != dx.shape[3] or g.shape[4] != dx.shape[4]:
        raise ValueError(f"conv_packed.input_grad: kernel {kernel} takes a 1x1 kernel "
                         f"(C_out, C_in / groups, 1, 1, 1) and g (N, C_out, *size), dx (N, "
                         f"C_in, *size); got w {shape5(w.shape)}, g {shape5(g.shape)}, dx "
                         f"{shape5(dx.shape)}, groups {groups}")
    # the convolution computed: g (N, C_out) -> dx (N, C_in), by C_in filters of C_out/groups
    s = make_shape(shape5(g.shape), (c_in, w.shape[0] // groups, 1, 1, 1), shape5(dx.shape),
                   stride, pad, dilation, groups)
    if not pointwise(&s):
        raise ValueError(f"conv_packed.input_grad: kernel {kernel} takes a 1x1 kernel with "
                         f"stride 1 and no padding; got stride {stride}, padding {pad}")
    prepacked = prepacked_pointer(packed_weights, &s, tile_shape, &w[0, 0, 0, 0, 0])
    if dx.shape[0] == 0:
        return
    with nogil:
        status = conv_packed_stacked(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0],
                                     <const floating*> NULL, &dx[0, 0, 0, 0, 0], &s,
                                     tile_panels, channel_panels, tile_shape, True,
                                     prepacked, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")
