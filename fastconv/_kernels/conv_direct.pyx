# cython: language_level=3
"""Direct convolution kernels: the forward pass (CONV_DIRECT_ROWS, CONV_DIRECT_PLANES), its
transpose, the input gradient (INPUT_GRAD_DIRECT_ROWS, INPUT_GRAD_DIRECT_PHASES), and the
depthwise weight gradient (WEIGHT_GRAD_DEPTHWISE_ROWS), as plain loops over the taps. Best
when a GEMM would be thin: few channels per group, depthwise, 1-channel images.

One kernel serves 1d, 2d and 3d (see conv_shape.pxd) and float32/float64 through the fused
type `floating`. The Python layer validates everything and pads non-zero padding modes
beforehand; these kernels trust their inputs and only ever pad with zeros, implicitly.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy

from fastconv._kernels.conv_shape cimport ConvShape, make_shape, output_range, shape5
from fastconv._kernels.kernel_ids cimport CONV_DIRECT_ROWS, CONV_DIRECT_PLANES, \
    INPUT_GRAD_DIRECT_ROWS, INPUT_GRAD_DIRECT_PHASES, WEIGHT_GRAD_DEPTHWISE_ROWS
from fastconv._kernels.pair_rows cimport copy_strided, split_pairs, split_pairs_rows, \
    merge_pairs_rows, fc_copy_short, fc_zero_short, fc_copy_rows, fc_pad_rows
from fastconv._kernels.workspace cimport fc_workspace

cdef extern from "stream_store.h":
    void fc_stream_copy(void* dst, const void* src, size_t bytes) noexcept nogil
    void fc_stream_fence() noexcept nogil

# Slots of the per-thread workspace (workspace.h): buffers reused from call to call.
cdef enum:
    WS_DIRECT_XS, WS_DIRECT_WS, WS_DIRECT_LINES, WS_DIRECT_TAIL, WS_PLANES_PHASES,
    WS_PLANES_SUMS, WS_PLANES_TAPS, WS_PHASES_GRADIENT, WS_PHASES_SUMS, WS_PHASES_TAPS,
    WS_GRAD_LINES, WS_GRAD_ROWS, WS_GRAD_G_ROWS, WS_GRAD_SUMS, WS_GRAD_SHIFTS,
    WS_PHASES_BAND


# ---------------------------------------------------------------------------------------------
# direct: a block of up to CO_BLOCK output channels of a band of output rows (fixed n, od) at a
# time. Best when a GEMM would be thin: few channels per group, depthwise, 1-channel images.
#
# The input rows the band reads are copied once into zero-padded lines (so every tap of a
# chunk reads inside its line, with no edge cases), then chunks of one vector register of
# outputs accumulate over all taps in registers (direct_rows.h) and are stored once, bias included.
# A stride along W splits each line into its stride phases (fill_line), which makes every
# tap's inputs contiguous again.

cdef extern from "direct_rows.h":
    void fc_direct_chunk_f32(float* out, Py_ssize_t out_step, Py_ssize_t channels,
                             const float* bias, Py_ssize_t taps, const float** xs,
                             Py_ssize_t x_offset, const float** ws, Py_ssize_t w_step,
                             Py_ssize_t kw, Py_ssize_t dw, int wide, Py_ssize_t x_wide,
                             Py_ssize_t out_wide) noexcept nogil
    void fc_direct_chunk_f64(double* out, Py_ssize_t out_step, Py_ssize_t channels,
                             const double* bias, Py_ssize_t taps, const double** xs,
                             Py_ssize_t x_offset, const double** ws, Py_ssize_t w_step,
                             Py_ssize_t kw, Py_ssize_t dw, int wide, Py_ssize_t x_wide,
                             Py_ssize_t out_wide) noexcept nogil

    void fc_plane_taps_f32(float* out, Py_ssize_t count, float bias, const float* x,
                           const Py_ssize_t* offsets, const float* w,
                           Py_ssize_t taps) noexcept nogil
    void fc_plane_taps_f64(double* out, Py_ssize_t count, double bias, const double* x,
                           const Py_ssize_t* offsets, const double* w,
                           Py_ssize_t taps) noexcept nogil
    int fc_plane_rows4_f32(float* out, Py_ssize_t out_stride, Py_ssize_t out_width,
                           Py_ssize_t rows, Py_ssize_t width, float bias,
                           const float* x, Py_ssize_t kh_taps, Py_ssize_t kw_taps,
                           Py_ssize_t dw, const float* w) noexcept nogil
    int fc_plane_rows4_f64(double* out, Py_ssize_t out_stride, Py_ssize_t out_width,
                           Py_ssize_t rows, Py_ssize_t width, double bias,
                           const double* x, Py_ssize_t kh_taps, Py_ssize_t kw_taps,
                           Py_ssize_t dw, const double* w) noexcept nogil

cdef enum:
    CO_BLOCK = 4                # output channels sharing each input load (fc_direct_chunk)
    VECTOR_BYTES = 64           # outputs per chunk: one AVX-512 register (two AVX2 ones)
    BAND_BYTES = 256 * 1024     # padded input lines of one band: stays in L2


cdef inline void direct_chunk(floating* out, Py_ssize_t out_step, Py_ssize_t channels,
                              const floating* bias, Py_ssize_t taps, const floating** xs,
                              Py_ssize_t x_offset, const floating** ws, Py_ssize_t w_step,
                              Py_ssize_t kw, Py_ssize_t dw, bint wide, Py_ssize_t x_wide,
                              Py_ssize_t out_wide) noexcept nogil:
    if floating is float:
        fc_direct_chunk_f32(out, out_step, channels, bias, taps, xs, x_offset, ws, w_step, kw,
                            dw, wide, x_wide, out_wide)
    else:
        fc_direct_chunk_f64(out, out_step, channels, bias, taps, xs, x_offset, ws, w_step, kw,
                            dw, wide, x_wide, out_wide)


cdef inline Py_ssize_t direct_phases(const ConvShape* s) noexcept nogil:
    """Stride phases of a line (fill_line) that the taps read: all sw of them, or, for a
    stride wider than the dilated kernel, the first (KW - 1) * dw + 1."""
    cdef Py_ssize_t span = (s.kernel[2] - 1) * s.dilation[2] + 1
    return s.stride[2] if s.stride[2] < span else span


cdef inline Py_ssize_t direct_phase_length(const ConvShape* s, Py_ssize_t vector) noexcept nogil:
    """Length of one phase of a line: the outputs rounded up to whole chunks of `vector`, plus
    the kernel's dilated width in that phase's columns."""
    cdef Py_ssize_t chunks = (s.out_size[2] + vector - 1) // vector
    return chunks * vector + (s.kernel[2] - 1) * s.dilation[2] // s.stride[2]


cdef inline Py_ssize_t direct_line_length(const ConvShape* s, Py_ssize_t vector) noexcept nogil:
    """Length of the zero-padded copy of one input row (all its phases), from which whole
    chunks of `vector` outputs can be read."""
    return direct_phases(s) * direct_phase_length(s, vector)


cdef inline Py_ssize_t direct_band_lines(const ConvShape* s, Py_ssize_t band) noexcept nogil:
    """Input rows (per input channel and kd) that a band of `band` output rows reads."""
    return (band - 1) * s.stride[1] + (s.kernel[1] - 1) * s.dilation[1] + 1


cdef inline Py_ssize_t direct_max_taps(const ConvShape* s) noexcept nogil:
    """Entries of a band's tap list: one per tap row, or one per tap with a stride along W."""
    return s.c_in_g * s.kernel[0] * s.kernel[1] * (s.kernel[2] if s.stride[2] > 1 else 1)


@cython.cdivision(True)
cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """a / b rounded up, for a >= 0 and b > 0, without overflow near 2**63."""
    return a // b + (a % b != 0)


@cython.cdivision(True)
cdef void fill_line(floating* line, Py_ssize_t line_len, const floating* x_row,
                    const ConvShape* s, bint clear=True) noexcept nogil:
    """Copy one input row into its zero-padded line. With a stride sw along W the line holds
    direct_phases phases of direct_phase_length: phase q, column m = the padded row's column
    m * sw + q, so output column o reads tap kw at column o + kw * dw // sw of phase
    (kw * dw) % sw: contiguous.
    Inline copies and zeroing only: a row is a few hundred bytes (and a call per row cost as
    much as its data). Without `clear`, the line already holds zeros wherever no input goes
    (a line refilled with rows of the same shape): only the input is copied."""
    cdef Py_ssize_t W = s.in_size[2], pad = s.pad[2], sw = s.stride[2]
    cdef Py_ssize_t phases = direct_phases(s), phase_len = line_len // phases
    cdef Py_ssize_t q, first, end, even, odd, pairs, i
    cdef floating* even_dst
    cdef floating* odd_dst
    if clear:
        fc_zero_short(line, line_len * sizeof(floating))
    if phases == 2 and sw == 2:
        # x_row[2i] lands in phase pad % 2 at column pad // 2 + i, x_row[2i + 1] in the other
        # phase at column (pad + 1) // 2 + i: one pass splits the row into both
        even_dst = line + (pad % 2) * phase_len + pad // 2
        odd_dst = line + (1 - pad % 2) * phase_len + (pad + 1) // 2
        even = min(max(phase_len - pad // 2, 0), (W + 1) // 2)
        odd = min(max(phase_len - (pad + 1) // 2, 0), W // 2)
        pairs = min(even, odd)
        split_pairs(x_row, even_dst, odd_dst, pairs)
        for i in range(pairs, even):
            even_dst[i] = x_row[2 * i]
        for i in range(pairs, odd):
            odd_dst[i] = x_row[2 * i + 1]
        return
    for q in range(phases):
        # the phase's columns that hold input: 0 <= m * sw + q - pad < W
        first = ceil_div(pad - q, sw) if pad > q else 0
        end = min(ceil_div(W + pad - q, sw) if W + pad > q else 0, phase_len)
        if end <= first:
            continue
        if sw == 1:
            fc_copy_short(line + first, x_row + first - pad, (end - first) * sizeof(floating))
        else:
            copy_strided(line + q * phase_len + first, x_row + first * sw + q - pad,
                         end - first, sw)


cdef void direct_band(const floating* x, const floating* w, const floating* bias,
                      floating* out, const ConvShape* s, Py_ssize_t n, Py_ssize_t co0,
                      Py_ssize_t channels, Py_ssize_t od, Py_ssize_t oh0, Py_ssize_t oh1,
                      const floating** xs, const floating** ws, floating* lines,
                      floating* tail) noexcept nogil:
    """Output rows oh0 .. oh1 - 1 of channels co0 .. co0 + channels - 1 at depth od of image n.
    `xs`, `ws` (a pointer per input row read), `lines` and `tail` are the thread's scratch."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t out_plane = s.out_size[0] * OH * OW
    cdef Py_ssize_t w_step = s.c_in_g * KD * KH * KW
    cdef Py_ssize_t vector = VECTOR_BYTES // sizeof(floating)
    cdef Py_ssize_t line_len = direct_line_length(s, VECTOR_BYTES // sizeof(floating))
    cdef Py_ssize_t band_lines = direct_band_lines(s, oh1 - oh0)
    cdef Py_ssize_t first_line = oh0 * s.stride[1] - s.pad[1]   # input row of band line 0
    cdef Py_ssize_t row_step = s.stride[1] * line_len            # next output row's lines
    cdef Py_ssize_t g = co0 // s.c_out_g, sw = s.stride[2]
    cdef Py_ssize_t phase_len = direct_phase_length(s, vector)
    cdef const floating* b = bias + co0 if bias != NULL else NULL
    cdef const floating* w_row
    cdef floating* line
    cdef floating* out_row
    cdef Py_ssize_t ci, kd, kh, k, i_d, i_h, o, c, r, oh, taps = 0
    # a tap list entry covers a tap row's kw taps at offsets 0, dw, 2 dw, ... of one line;
    # with a stride along W, each tap is an entry of its own, in its phase (fill_line)
    cdef Py_ssize_t kw = KW if sw == 1 else 1, dw = s.dilation[2]
    cdef bint by_rows, wide

    # Copy the band's input rows into zero-padded lines once (rows of padding become zero
    # lines), so every output row of the band reads the same taps at a fixed offset.
    for ci in range(s.c_in_g):
        for kd in range(KD):
            i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
            if i_d < 0 or i_d >= D:
                continue
            for r in range(band_lines):
                i_h = first_line + r
                line = lines + ((ci * KD + kd) * band_lines + r) * line_len
                if i_h < 0 or i_h >= H:
                    fc_zero_short(line, line_len * sizeof(floating))
                else:
                    fill_line(line, line_len, x + (((n * s.c_in + g * s.c_in_g + ci) * D + i_d)
                                                   * H + i_h) * W, s)
            for kh in range(KH):
                line = lines + ((ci * KD + kd) * band_lines + kh * s.dilation[1]) * line_len
                w_row = w + (co0 * s.c_in_g + ci) * KD * KH * KW + (kd * KH + kh) * KW
                if sw == 1:
                    xs[taps] = line
                    ws[taps] = w_row
                    taps += 1
                    continue
                for k in range(KW):
                    xs[taps] = line + (k * dw) % sw * phase_len + k * dw // sw
                    ws[taps] = w_row + k
                    taps += 1

    # Narrow rows with few filters: the same chunk of four output rows at once, for four
    # independent FMA chains; otherwise four chunks of one row (or four filters) at once.
    by_rows = channels < CO_BLOCK and OW < 4 * vector
    oh = oh0
    while oh < oh1:
        out_row = out + (n * s.c_out + co0) * out_plane + (od * OH + oh) * OW
        r = (oh - oh0) * row_step
        if by_rows and oh + 4 <= oh1:
            o = 0
            while o + vector <= OW:
                direct_chunk(out_row + o, out_plane, channels, b, taps, xs, r + o, ws, w_step,
                             kw, dw, True, row_step, OW)
                o += vector
            direct_row_tail(out_row, out_plane, channels, b, taps, xs, r, ws, w_step, kw, dw,
                            OW, o, tail, 4, row_step)
            oh += 4
            continue
        o = 0
        while o + vector <= OW:
            wide = channels < CO_BLOCK and o + 4 * vector <= OW
            direct_chunk(out_row + o, out_plane, channels, b, taps, xs, r + o, ws, w_step, kw,
                         dw, wide, vector, vector)
            o += 4 * vector if wide else vector
        direct_row_tail(out_row, out_plane, channels, b, taps, xs, r, ws, w_step, kw, dw, OW,
                        o, tail, 1, row_step)
        oh += 1


cdef void direct_row_tail(floating* out_row, Py_ssize_t out_plane, Py_ssize_t channels,
                          const floating* b, Py_ssize_t taps, const floating** xs,
                          Py_ssize_t r, const floating** ws, Py_ssize_t w_step, Py_ssize_t kw,
                          Py_ssize_t dw, Py_ssize_t OW, Py_ssize_t o, floating* tail,
                          Py_ssize_t rows, Py_ssize_t row_step) noexcept nogil:
    """Columns o .. OW - 1 (less than a vector) of `rows` (1 or 4) consecutive output rows:
    computed into a scratch chunk per row and cut to the row's end."""
    cdef Py_ssize_t vector = VECTOR_BYTES // sizeof(floating)
    cdef Py_ssize_t rest = OW - o, c, k
    if rest <= 0:
        return
    # tail[c][k] holds channel c of row k
    direct_chunk(tail, rows * vector, channels, b, taps, xs, r + o, ws, w_step, kw, dw,
                 rows == 4, row_step, vector)
    for c in range(channels):
        for k in range(rows):
            memcpy(out_row + c * out_plane + k * OW + o, tail + (c * rows + k) * vector,
                   rest * sizeof(floating))


cdef int conv_direct(const floating* x, const floating* w, const floating* bias,
                     floating* out, const ConvShape* s, int num_threads) noexcept nogil:
    # work item: (image, block of output channels inside one group, output depth, band of
    # output rows); a band is as many rows as keep its padded input lines in L2
    cdef Py_ssize_t blocks_per_group = (s.c_out_g + CO_BLOCK - 1) // CO_BLOCK
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1]
    cdef Py_ssize_t line_len = direct_line_length(s, VECTOR_BYTES // sizeof(floating))
    cdef Py_ssize_t per_band_line = s.c_in_g * s.kernel[0] * line_len * sizeof(floating)
    cdef Py_ssize_t band = OH, bands, items, max_lines
    cdef Py_ssize_t max_taps = direct_max_taps(s)
    cdef Py_ssize_t item, t, block, g, n, co0, channels, od, oh0, oh1
    cdef const floating** xs = NULL
    cdef const floating** ws = NULL
    cdef floating* lines = NULL
    cdef floating* tail = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    while band > 1 and direct_band_lines(s, band) * per_band_line > BAND_BYTES:
        band = (band + 1) // 2
    # enough work items for the threads (a band re-reads KH - stride rows of its neighbour)
    while band > 1 and s.n * s.groups * blocks_per_group * OD * ((OH + band - 1) // band) \
            < 4 * num_threads:
        band = (band + 1) // 2
    bands = (OH + band - 1) // band
    items = s.n * s.groups * blocks_per_group * OD * bands
    max_lines = s.c_in_g * s.kernel[0] * direct_band_lines(s, band)
    with parallel(num_threads=num_threads):
        xs = <const floating**> fc_workspace(WS_DIRECT_XS, max_taps * sizeof(floating*))
        ws = <const floating**> fc_workspace(WS_DIRECT_WS, max_taps * sizeof(floating*))
        lines = <floating*> fc_workspace(WS_DIRECT_LINES,
                                         max_lines * line_len * sizeof(floating))
        tail = <floating*> fc_workspace(WS_DIRECT_TAIL, 4 * CO_BLOCK * VECTOR_BYTES)
        if xs == NULL or ws == NULL or lines == NULL or tail == NULL:
            failed_flag[0] = 1
        for item in prange(items, schedule='dynamic'):
            if xs == NULL or ws == NULL or lines == NULL or tail == NULL:
                continue
            # item = (((n * groups + g) * blocks + block) * OD + od) * bands + band index
            t = item
            oh0 = (t % bands) * band
            t = t // bands
            od = t % OD
            t = t // OD
            block = t % blocks_per_group
            t = t // blocks_per_group
            g = t % s.groups
            n = t // s.groups
            oh1 = oh0 + band if oh0 + band < OH else OH
            co0 = g * s.c_out_g + block * CO_BLOCK
            channels = s.c_out_g - block * CO_BLOCK
            if channels > CO_BLOCK:
                channels = CO_BLOCK
            direct_band(x, w, bias, out, s, n, co0, channels, od, oh0, oh1, xs, ws, lines, tail)
    return failed



# ---------------------------------------------------------------------------------------------
# direct over whole planes (CONV_DIRECT_PLANES): one input channel per group (depthwise,
# 1-channel images). The row kernel above pays per row (a padded line, a tap list, a chunk
# cut to the row's end): on MobileNet's 7x7 and 14x14 planes that was most of the time, about
# 0.1 us a plane. Here a work item copies its input plane (a band of it, for large planes)
# once into zero-padded stride phases, each a rectangle `wq` columns wide (the output row plus
# the kernel's reach in that phase), and computes the outputs as one flat run of the
# rectangle's rows (fc_plane_taps): tap (kd, kh, kw) reads phase ((kh*dh) % sh, (kw*dw) % sw)
# at the fixed offset ((kh*dh) // sh) * wq + (kw*dw) // sw. Each output row's first OW
# columns are kept; the few past its end are computed and dropped.

cdef struct PlanesLayout:
    Py_ssize_t band         # output rows per work item
    Py_ssize_t wq           # columns of a phase row: OW + (KW - 1) * dw // sw
    Py_ssize_t reach        # extra phase rows a band reads: (KH - 1) * dh // sh
    Py_ssize_t phases_h, phases_w
    Py_ssize_t phase_size   # one phase rectangle of a full band, with the slack the last
                            # chunk of outputs reads past it (zeroed)
    Py_ssize_t sums         # computed outputs of a full band: band * wq in whole chunks
    # made once per call (divisions cost as much as a small plane's sums):
    Py_ssize_t* offsets     # tap (kd, kh, kw), in the weights' order: where it reads
    Py_ssize_t* col_first   # per W phase: the phase row's columns [first, end) hold input
    Py_ssize_t* col_end
    bint by_rows            # the plane's taps are rows of one rectangle (fc_plane_rows4),
    Py_ssize_t row_dw       # dw apart along a row (the same for every depth tap)


cdef inline Py_ssize_t axis_phases(Py_ssize_t k, Py_ssize_t d, Py_ssize_t s) noexcept nogil:
    """Stride phases along an axis that its taps read (all s, or the dilated kernel's span
    where that is shorter)."""
    cdef Py_ssize_t span = (k - 1) * d + 1
    return s if s < span else span


cdef PlanesLayout planes_layout(const ConvShape* s, Py_ssize_t band,
                                Py_ssize_t chunk) noexcept nogil:
    """The layout of a band of `band` output rows (the tables left NULL)."""
    cdef PlanesLayout p
    p.band = band
    p.wq = s.out_size[2] + (s.kernel[2] - 1) * s.dilation[2] // s.stride[2]
    p.reach = (s.kernel[1] - 1) * s.dilation[1] // s.stride[1]
    p.phases_h = axis_phases(s.kernel[1], s.dilation[1], s.stride[1])
    p.phases_w = axis_phases(s.kernel[2], s.dilation[2], s.stride[2])
    p.sums = ceil_div(band * p.wq, chunk) * chunk
    # an output f reads at most f + reach * wq + (KW - 1) * dw // sw
    p.phase_size = (band + p.reach) * p.wq + (p.sums - band * p.wq) \
        + (s.kernel[2] - 1) * s.dilation[2] // s.stride[2]
    p.offsets = p.col_first = p.col_end = NULL
    p.by_rows = False
    p.row_dw = 1
    return p


cdef inline bint taps_are_rows(const Py_ssize_t* offsets, Py_ssize_t KH, Py_ssize_t KW,
                               Py_ssize_t wq, Py_ssize_t* dw) noexcept nogil:
    """True if tap (kh, kw) reads offsets[kh * KW + kw] = offsets[0] + kh * wq + kw * dw: one
    rectangle whose consecutive rows are the consecutive kernel rows (stride 1, no dilation
    along H), so output rows can share their input rows (fc_plane_rows4)."""
    cdef Py_ssize_t kh, kw
    dw[0] = offsets[1] - offsets[0] if KW > 1 else 1
    for kh in range(KH):
        for kw in range(KW):
            if offsets[kh * KW + kw] != offsets[0] + kh * wq + kw * dw[0]:
                return False
    return True


@cython.cdivision(True)
cdef int planes_tables(const ConvShape* s, PlanesLayout* p) noexcept nogil:
    """Fill p's tables (malloc'd; free_planes_tables). 1 if out of memory."""
    cdef Py_ssize_t KH = s.kernel[1], KW = s.kernel[2], W = s.in_size[2]
    cdef Py_ssize_t sh = s.stride[1], sw = s.stride[2], dh = s.dilation[1], dw = s.dilation[2]
    cdef Py_ssize_t pad = s.pad[2], kd, kh, kw, q, first, end, t = 0
    p.offsets = <Py_ssize_t*> malloc(s.kernel[0] * KH * KW * sizeof(Py_ssize_t))
    p.col_first = <Py_ssize_t*> malloc(2 * p.phases_w * sizeof(Py_ssize_t))
    if p.offsets == NULL or p.col_first == NULL:
        return 1
    p.col_end = p.col_first + p.phases_w
    for kd in range(s.kernel[0]):
        for kh in range(KH):
            for kw in range(KW):
                p.offsets[t] = ((kd * p.phases_h + (kh * dh) % sh) * p.phases_w
                                + (kw * dw) % sw) * p.phase_size \
                    + (kh * dh) // sh * p.wq + (kw * dw) // sw
                t += 1
    # every depth tap's plane of taps is the first one's, shifted by whole phase rectangles
    p.by_rows = (planes_phase_count(s, p) == 1 and KH * KW > 0
                       and taps_are_rows(p.offsets, KH, KW, p.wq, &p.row_dw))
    for q in range(p.phases_w):
        # column b of phase q is input column b * sw + q - pad
        first = ceil_div(pad - q, sw) if pad > q else 0
        end = min(ceil_div(W + pad - q, sw) if W + pad > q else 0, p.wq)
        first = min(first, p.wq)
        p.col_first[q] = first
        p.col_end[q] = max(end, first)
    return 0


cdef void free_planes_tables(PlanesLayout* p) noexcept nogil:
    free(p.offsets)
    free(p.col_first)


cdef inline Py_ssize_t planes_phase_count(const ConvShape* s,
                                          const PlanesLayout* p) noexcept nogil:
    """Phase rectangles of a work item: for each kd, phases_h x phases_w."""
    return s.kernel[0] * p.phases_h * p.phases_w


@cython.cdivision(True)
cdef void split_phase_rows(const floating* x_row, Py_ssize_t x_stride, Py_ssize_t W,
                           Py_ssize_t pad, floating* rects, Py_ssize_t phase_size,
                           Py_ssize_t wq, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Stride 2 along W: input rows lo .. hi - 1 of a band (x_row the first, x_stride
    apart) into both phase rectangles at once, zero elsewhere. Input column 2i lands in
    phase pad % 2 at column pad // 2 + i, column 2i + 1 in the other at (pad + 1) // 2 + i."""
    cdef floating* even_dst = rects + (pad % 2) * phase_size + pad // 2 + lo * wq
    cdef floating* odd_dst = rects + (1 - pad % 2) * phase_size + (pad + 1) // 2 + lo * wq
    cdef Py_ssize_t even = min(max(wq - pad // 2, 0), (W + 1) // 2)
    cdef Py_ssize_t odd = min(max(wq - (pad + 1) // 2, 0), W // 2)
    cdef Py_ssize_t pairs = min(even, odd), r
    fc_zero_short(rects, 2 * phase_size * sizeof(floating))
    if hi <= lo:
        return
    split_pairs_rows(x_row, x_stride, even_dst, odd_dst, wq, pairs, hi - lo)
    for r in range(hi - lo):
        if even > pairs:
            even_dst[r * wq + pairs] = x_row[r * x_stride + 2 * pairs]
        if odd > pairs:
            odd_dst[r * wq + pairs] = x_row[r * x_stride + 2 * pairs + 1]


@cython.cdivision(True)
cdef inline Py_ssize_t rows_from(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    """The first a >= 0 with a * stride >= offset."""
    if offset <= 0:
        return 0
    return offset if stride == 1 else ceil_div(offset, stride)


cdef void fill_plane_phases(const floating* x_plane, const ConvShape* s,
                            const PlanesLayout* p, Py_ssize_t od, Py_ssize_t oh0,
                            Py_ssize_t rows, floating* phases) noexcept nogil:
    """The phase rectangles of output rows oh0 .. oh0 + rows - 1 at depth od of one input
    plane (its depth taps in the padding left unfilled: no tap reads them)."""
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t sh = s.stride[1], sw = s.stride[2], wq = p.wq, filled = rows + p.reach
    cdef const floating* x_row
    cdef floating* rect
    cdef floating* dst
    cdef Py_ssize_t kd, qh, qw, a, i_d, first, end, lo, hi
    for kd in range(s.kernel[0]):
        i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
        if i_d < 0 or i_d >= D:
            continue
        for qh in range(p.phases_h):
            # the rectangle's rows [lo, hi) hold input rows: (oh0 + a) * sh + qh - pad in [0, H)
            lo = min(rows_from(s.pad[1] - qh - oh0 * sh, sh), filled)
            hi = max(min(rows_from(H + s.pad[1] - qh - oh0 * sh, sh), filled), lo)
            x_row = x_plane + (i_d * H + (oh0 + lo) * sh + qh - s.pad[1]) * W
            if sw == 2 and p.phases_w == 2:
                split_phase_rows(x_row, sh * W, W, s.pad[2], phases + (kd * p.phases_h + qh)
                                 * 2 * p.phase_size, p.phase_size, wq, lo, hi)
                continue
            for qw in range(p.phases_w):
                rect = phases + ((kd * p.phases_h + qh) * p.phases_w + qw) * p.phase_size
                first, end = p.col_first[qw], p.col_end[qw]
                fc_zero_short(rect, lo * wq * sizeof(floating))
                if sw == 1:
                    fc_pad_rows(rect + lo * wq, wq * sizeof(floating), x_row + first - s.pad[2],
                                sh * W * sizeof(floating), first * sizeof(floating),
                                (end - first) * sizeof(floating), wq * sizeof(floating),
                                hi - lo)
                else:
                    for a in range(lo, hi):
                        dst = rect + a * wq
                        fc_zero_short(dst, first * sizeof(floating))
                        copy_strided(dst + first, x_row + (a - lo) * sh * W + first * sw + qw
                                     - s.pad[2], end - first, sw)
                        fc_zero_short(dst + end, (wq - end) * sizeof(floating))
                # the rows past the input, and the slack the last chunk reads past the rows
                fc_zero_short(rect + hi * wq, (p.phase_size - hi * wq) * sizeof(floating))


cdef inline int plane_rows4(floating* out, Py_ssize_t out_stride, Py_ssize_t out_width,
                            Py_ssize_t rows, Py_ssize_t width, floating bias,
                            const floating* x, Py_ssize_t kh_taps, Py_ssize_t kw_taps,
                            Py_ssize_t dw, const floating* w) noexcept nogil:
    if floating is float:
        return fc_plane_rows4_f32(out, out_stride, out_width, rows, width, bias, x, kh_taps,
                                  kw_taps, dw, w)
    else:
        return fc_plane_rows4_f64(out, out_stride, out_width, rows, width, bias, x, kh_taps,
                                  kw_taps, dw, w)


cdef void planes_item(const floating* x, const floating* w, const floating* bias,
                      floating* out, const ConvShape* s, const PlanesLayout* p,
                      Py_ssize_t plane0, Py_ssize_t planes, Py_ssize_t od, Py_ssize_t oh0,
                      Py_ssize_t oh1, floating* phases, floating* sums,
                      Py_ssize_t* offsets, bint stream=False) noexcept nogil:
    """Output rows oh0 .. oh1 - 1 at depth od of input planes plane0 .. plane0 + planes - 1
    (plane = n * groups + g, as C_in = groups), for every filter of their groups: output
    planes plane * C_out/g + j. Several planes (one filter each) are filled, then computed,
    then stored, each step for all of them: a step reading what the one before just wrote
    waited on the stores (store-to-load forwarding fails across unaligned rows); the rows
    kernel (fc_plane_rows4) stores its rows straight into the output, whatever the count
    (through the sums and a copy, 240 5x5 filters on 28x28 planes ran 1.2-1.3x slower on an
    Intel Xeon, where they also computed four columns a row past its end). `phases`,
    `sums` and `offsets` (then the weights of the taps that read inside the input, for a
    3-d item whose depth taps reach into the padding) are the thread's scratch. `stream`:
    one plane's rows (planes == 1) computed into `sums` and written out by streaming stores
    (the output past the caches: no line read before it is written), where the rows kernel
    runs them."""
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], plane_taps = s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t rows = oh1 - oh0, wq = p.wq
    cdef Py_ssize_t chunk = VECTOR_BYTES // sizeof(floating)
    cdef Py_ssize_t count = ceil_div(rows * wq, chunk) * chunk
    cdef Py_ssize_t max_taps = KD * plane_taps
    cdef Py_ssize_t rect_stride = planes_phase_count(s, p) * p.phase_size
    cdef floating* kept_weights = <floating*> (offsets + max_taps)
    cdef const Py_ssize_t* tap_offsets = p.offsets
    cdef const floating* weights
    cdef floating* out_row
    cdef floating* plane_sums
    cdef const floating* rect
    cdef Py_ssize_t kd, k, i_d, g, j, co, i, taps = 0
    cdef bint every_depth = True, by_rows, in_sums = True
    cdef floating b = 0

    for k in range(planes):
        fill_plane_phases(x + (plane0 + k) * D * H * W, s, p, od, oh0, rows,
                          phases + k * rect_stride)
    for kd in range(KD):
        i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
        if 0 <= i_d < D:
            taps += plane_taps
        else:
            every_depth = False   # a depth tap in the padding adds nothing (nor in the rows)
    if not every_depth:
        # only the depth taps inside the input, in order (their offsets, then their weights)
        taps = 0
        for kd in range(KD):
            i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
            if 0 <= i_d < D:
                memcpy(offsets + taps, p.offsets + kd * plane_taps,
                       plane_taps * sizeof(Py_ssize_t))
                taps += plane_taps
        tap_offsets = offsets

    # one depth tap (a 2-d kernel, or a 3-d one at the depth border): share input rows
    by_rows = p.by_rows and taps == plane_taps
    for k in range(planes):
        g = (plane0 + k) % s.groups
        for j in range(s.c_out_g):
            co = g * s.c_out_g + j
            weights = w + co * max_taps
            if not every_depth:
                taps = 0
                for kd in range(KD):
                    i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
                    if 0 <= i_d < D:
                        memcpy(kept_weights + taps, weights + kd * plane_taps,
                               plane_taps * sizeof(floating))
                        taps += plane_taps
                weights = kept_weights
            if bias != NULL:
                b = bias[co]
            out_row = out + (((plane0 + k) * s.c_out_g + j) * s.out_size[0] + od) * OH * OW \
                + oh0 * OW
            if taps == 0:
                # every depth tap in the padding: the bias alone (as the row kernel's sums)
                for i in range(rows * OW):
                    out_row[i] = 0
                    out_row[i] += b
                continue
            rect = phases + k * rect_stride
            # straight into the output rows (no sums to copy; the rows kernel computes no
            # column past a row's end), or into the sums, rows OW apart, and from there
            # (contiguous) out past the caches
            if by_rows and plane_rows4(
                    sums if stream else out_row, OW, OW, rows, wq, b, rect + tap_offsets[0],
                    s.kernel[1], s.kernel[2], p.row_dw, weights):
                if stream:
                    fc_stream_copy(out_row, sums, rows * OW * sizeof(floating))
                in_sums = False
                continue
            # one filter a plane (planes > 1): the sums wait for the copy below
            plane_sums = sums + k * p.sums
            if floating is float:
                fc_plane_taps_f32(plane_sums, count, b, rect, tap_offsets, weights, taps)
            else:
                fc_plane_taps_f64(plane_sums, count, b, rect, tap_offsets, weights, taps)
            if planes == 1:
                fc_copy_rows(out_row, OW * sizeof(floating), plane_sums,
                             wq * sizeof(floating), OW * sizeof(floating), rows)
    if planes == 1 or taps == 0 or not in_sums:
        return
    for k in range(planes):
        out_row = out + ((plane0 + k) * s.out_size[0] + od) * OH * OW + oh0 * OW
        fc_copy_rows(out_row, OW * sizeof(floating), sums + k * p.sums, wq * sizeof(floating),
                     OW * sizeof(floating), rows)


cdef enum:
    PLANES_CHUNKS_PER_THREAD = 16   # items are handed out in chunks: about this many a thread


cdef int conv_direct_planes(const floating* x, const floating* w, const floating* bias,
                            floating* out, const ConvShape* s, Py_ssize_t band,
                            Py_ssize_t planes_per_item, int num_threads) noexcept nogil:
    # work item: (block of planes_per_item input planes, output depth, band of output rows);
    # more than one plane an item only for whole planes (one band, one depth) with one filter
    cdef Py_ssize_t chunk = VECTOR_BYTES // sizeof(floating)
    cdef PlanesLayout p = planes_layout(s, min(band, s.out_size[1]), chunk)
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1]
    cdef Py_ssize_t bands = ceil_div(OH, p.band)
    cdef Py_ssize_t per_item = planes_per_item if OD * bands == 1 and s.c_out_g == 1 else 1
    cdef Py_ssize_t in_planes = s.n * s.groups
    cdef Py_ssize_t blocks = ceil_div(in_planes, per_item)
    cdef Py_ssize_t items = blocks * OD * bands
    cdef Py_ssize_t max_taps = s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t chunk_items = max(1, items // (PLANES_CHUNKS_PER_THREAD * num_threads))
    cdef Py_ssize_t item, t, plane0, od, oh0, oh1
    cdef floating* phases = NULL
    cdef floating* sums = NULL
    cdef Py_ssize_t* offsets = NULL
    cdef int failed = planes_tables(s, &p)
    cdef int* failed_flag = &failed
    if failed:
        free_planes_tables(&p)
        return failed
    with parallel(num_threads=num_threads):
        phases = <floating*> fc_workspace(
            WS_PLANES_PHASES,
            per_item * planes_phase_count(s, &p) * p.phase_size * sizeof(floating))
        sums = <floating*> fc_workspace(WS_PLANES_SUMS, per_item * p.sums * sizeof(floating))
        offsets = <Py_ssize_t*> fc_workspace(
            WS_PLANES_TAPS, max_taps * (sizeof(Py_ssize_t) + sizeof(floating)))
        if phases == NULL or sums == NULL or offsets == NULL:
            failed_flag[0] = 1
        # items of a small plane take 0.1-1 us: one at a time, fetching the next item cost
        # about that (libgomp's shared counter, 35% of a MobileNet layer's cycles)
        for item in prange(items, schedule='dynamic', chunksize=chunk_items):
            if phases == NULL or sums == NULL or offsets == NULL:
                continue
            # item = (block * OD + od) * bands + band index
            if OD * bands == 1:
                plane0, od, oh0 = item * per_item, 0, 0
            else:
                t = item
                oh0 = (t % bands) * p.band
                t = t // bands
                od = t % OD
                plane0 = t // OD
            oh1 = oh0 + p.band if oh0 + p.band < OH else OH
            planes_item(x, w, bias, out, s, &p, plane0, min(per_item, in_planes - plane0), od,
                        oh0, oh1, phases, sums, offsets)
    free_planes_tables(&p)
    return failed


# ---------------------------------------------------------------------------------------------
# direct transposed kernel: one input-gradient row (fixed n, c_in, d, h) at a time, gathering
# from every output channel of its group. Best when the GEMM would be thin (few channels).

cdef void input_grad_direct_row(const floating* g, const floating* w, floating* dx,
                                const ConvShape* s, Py_ssize_t row) noexcept nogil:
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t sw = s.stride[2]
    cdef Py_ssize_t i_h = row % H, t = row // H
    cdef Py_ssize_t i_d = t % D
    t = t // D
    cdef Py_ssize_t ci = t % s.c_in, n = t // s.c_in
    cdef Py_ssize_t g_idx = ci // s.c_in_g, c = ci % s.c_in_g
    cdef floating* dx_row = dx + row * W
    cdef const floating* g_row
    cdef floating wv
    cdef Py_ssize_t co, kd, kh, kw, num_d, num_h, od, oh, off, lo, hi, o

    for o in range(W):
        dx_row[o] = 0
    for kd in range(KD):
        # the output row od whose tap kd reads input row i_d, if any
        num_d = i_d + s.pad[0] - kd * s.dilation[0]
        if num_d < 0 or num_d % s.stride[0] != 0:
            continue
        od = num_d // s.stride[0]
        if od >= OD:
            continue
        for kh in range(KH):
            num_h = i_h + s.pad[1] - kh * s.dilation[1]
            if num_h < 0 or num_h % s.stride[1] != 0:
                continue
            oh = num_h // s.stride[1]
            if oh >= OH:
                continue
            for kw in range(KW):
                off = kw * s.dilation[2] - s.pad[2]
                output_range(off, sw, W, OW, &lo, &hi)
                # the output channels of the group innermost: the range above is shared
                for co in range(g_idx * s.c_out_g, (g_idx + 1) * s.c_out_g):
                    wv = w[((co * s.c_in_g + c) * KD + kd) * KH * KW + kh * KW + kw]
                    g_row = g + ((n * s.c_out + co) * OD + od) * OH * OW + oh * OW
                    if sw == 1:
                        for o in range(lo, hi):
                            dx_row[o + off] += wv * g_row[o]
                    else:
                        for o in range(lo, hi):
                            dx_row[o * sw + off] += wv * g_row[o]


cdef int input_grad_direct(const floating* g, const floating* w, floating* dx,
                           const ConvShape* s, int num_threads) noexcept nogil:
    cdef Py_ssize_t rows = s.n * s.c_in * s.in_size[0] * s.in_size[1]
    cdef Py_ssize_t row
    for row in prange(rows, num_threads=num_threads, schedule='static'):
        input_grad_direct_row(g, w, dx, s, row)
    return 0


# ---------------------------------------------------------------------------------------------
# direct transposed kernel by stride phases (one input and one output channel per group:
# depthwise layers, single-channel images). The input positions i = r + s * j of one stride
# phase r (along every axis) are reached by the taps k with r + pad - k * dil a multiple of s,
# each from output j + (r + pad - k * dil) / s: the phase is a stride-1 correlation of the
# output gradient with those taps. A work item (an input plane at one depth, a band of its
# rows) copies the output-gradient rows it reads into a zero-padded buffer, computes every
# phase over it with fc_plane_taps (each tap one fixed offset, the columns past a phase row's
# end computed and dropped) and interleaves the phases into the input-gradient rows, which
# are written once. The row loop above scatters with a stride instead, element by element.
# The zeros around the output gradient are multiplied by every weight: finite weights only.

ctypedef struct AxisPhases:
    Py_ssize_t phases       # stride phases holding input positions: min(stride, length)
    Py_ssize_t low          # the least shift of any tap (0 if no phase has one)
    Py_ssize_t span         # the greatest shift minus `low`
    Py_ssize_t longest      # positions of phase 0, the longest: ceil(length / stride)
    Py_ssize_t* count       # per phase: its taps
    Py_ssize_t* tap         # [phase * K + t]: tap t of the phase, ascending
    Py_ssize_t* shift       # [phase * K + t]: its output index minus the phase index j


@cython.cdivision(True)
cdef int axis_phases_table(AxisPhases* a, Py_ssize_t length, Py_ssize_t K, Py_ssize_t s,
                           Py_ssize_t pad, Py_ssize_t dil) noexcept nogil:
    """Fill `a` for one axis (malloc'd: free_axis_phases). 1 if out of memory."""
    cdef Py_ssize_t r, k, num, t, high = 0
    cdef bint any_tap = False
    a.phases = min(s, length)
    a.longest = ceil_div(length, s)
    a.low = 0
    a.count = <Py_ssize_t*> malloc((a.phases + 2 * a.phases * K + 1) * sizeof(Py_ssize_t))
    if a.count == NULL:
        return 1
    a.tap = a.count + a.phases
    a.shift = a.tap + a.phases * K
    for r in range(a.phases):
        t = 0
        for k in range(K):
            num = r + pad - k * dil
            if num % s != 0:
                continue
            a.tap[r * K + t] = k
            a.shift[r * K + t] = num // s     # exact: C's truncation is the floor here
            if not any_tap or num // s < a.low:
                a.low = num // s
            if not any_tap or num // s > high:
                high = num // s
            any_tap = True
            t += 1
        a.count[r] = t
    a.span = high - a.low if any_tap else 0
    return 0


cdef inline void free_axis_phases(AxisPhases* a) noexcept nogil:
    free(a.count)


cdef struct PhasesLayout:
    Py_ssize_t band         # input rows of a work item: a multiple of the stride along H
    Py_ssize_t band_phase_rows   # rows of a phase in a full band: band / sh
    Py_ssize_t pw           # columns of a buffer row: W's longest phase + the taps' span
    Py_ssize_t rows         # rows of one depth's buffer in a full band
    Py_ssize_t g_size       # the buffer: every depth tap's rows, the slack the sums read past
    Py_ssize_t sums         # one phase's sums in a full band, whole chunks


cdef PhasesLayout phases_layout(const ConvShape* s, const AxisPhases* ah,
                                const AxisPhases* aw, Py_ssize_t band_rows,
                                Py_ssize_t chunk) noexcept nogil:
    cdef PhasesLayout p
    cdef Py_ssize_t sh = s.stride[1]
    # whole stride periods: every phase's first row in the band is the same j
    p.band = max(min(band_rows, s.in_size[1] + sh - 1) // sh, 1) * sh
    p.band_phase_rows = p.band // sh
    p.pw = aw.longest + aw.span
    p.rows = p.band_phase_rows + ah.span
    p.g_size = s.kernel[0] * p.rows * p.pw + p.pw + 2 * chunk
    p.sums = ceil_div(p.band_phase_rows * p.pw, chunk) * chunk
    return p


cdef void fill_gradient_rows(const floating* g_plane, const ConvShape* s,
                             const AxisPhases* ah, const AxisPhases* aw,
                             const PhasesLayout* p, Py_ssize_t j0, Py_ssize_t rows,
                             floating* dst) noexcept nogil:
    """Buffer rows 0 .. rows - 1: output-gradient row j0 + b + ah.low in columns from
    aw.low, zero outside the gradient."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2], pw = p.pw
    cdef Py_ssize_t first_row = j0 + ah.low
    cdef Py_ssize_t lo = min(max(-first_row, 0), rows)
    cdef Py_ssize_t hi = max(min(OH - first_row, rows), lo)
    cdef Py_ssize_t col_lo = max(aw.low, 0), col_hi = min(OW, pw + aw.low)
    fc_zero_short(dst, lo * pw * sizeof(floating))
    if col_hi > col_lo:
        fc_pad_rows(dst + lo * pw, pw * sizeof(floating), g_plane + (first_row + lo) * OW
                    + col_lo, OW * sizeof(floating), (col_lo - aw.low) * sizeof(floating),
                    (col_hi - col_lo) * sizeof(floating), pw * sizeof(floating), hi - lo)
    else:
        fc_zero_short(dst + lo * pw, (hi - lo) * pw * sizeof(floating))
    fc_zero_short(dst + hi * pw, (rows - hi) * pw * sizeof(floating))


@cython.cdivision(True)
cdef void interleave_phase_rows(floating* dx_row, Py_ssize_t W, Py_ssize_t sw,
                                Py_ssize_t row_stride, const floating* sums,
                                Py_ssize_t phase_sums, Py_ssize_t pw, Py_ssize_t phases_w,
                                Py_ssize_t rows) noexcept nogil:
    """Input-gradient rows (dx_row the first, row_stride apart) from the phases along W of
    one phase along H (phase rw's sums at sums + rw * phase_sums, rows pw apart)."""
    cdef Py_ssize_t r, rw, jw
    if phases_w == 1:
        fc_copy_rows(dx_row, row_stride * sizeof(floating), sums, pw * sizeof(floating),
                     W * sizeof(floating), rows)
    elif sw == 2:
        merge_pairs_rows(sums, sums + phase_sums, pw, dx_row, row_stride, W // 2, rows)
        if W % 2:
            for r in range(rows):
                dx_row[r * row_stride + W - 1] = sums[r * pw + W // 2]
    else:
        for r in range(rows):
            for rw in range(phases_w):
                for jw in range(ceil_div(W - rw, sw)):
                    dx_row[r * row_stride + rw + jw * sw] = sums[rw * phase_sums + r * pw + jw]


@cython.cdivision(True)
cdef void phases_item(const floating* g, const floating* w, floating* dx, const ConvShape* s,
                      const AxisPhases* ad, const AxisPhases* ah, const AxisPhases* aw,
                      const PhasesLayout* p, Py_ssize_t plane, Py_ssize_t d, Py_ssize_t h0,
                      floating* buffer, floating* sums, Py_ssize_t* scratch,
                      floating* band_rows) noexcept nogil:
    """Input rows h0 .. h0 + band - 1 at depth d of input plane `plane` (= n * C + c), from
    output plane `plane` and filter c. `buffer`, `sums` and `scratch` (the taps' offsets,
    their weights, the depth taps that reach d) are the thread's; with `band_rows` (else
    NULL: straight into dx) the rows are assembled there and streamed out (the band is
    contiguous in dx), no line of dx read before it is written."""
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t sd = s.stride[0], sh = s.stride[1], pw = p.pw
    cdef Py_ssize_t h1 = min(h0 + p.band, H), j0 = h0 // sh
    cdef Py_ssize_t band_phase_rows = ceil_div(h1 - h0, sh)
    cdef Py_ssize_t rows = band_phase_rows + ah.span
    cdef Py_ssize_t chunk = VECTOR_BYTES // sizeof(floating)
    cdef Py_ssize_t rd = d % sd, jd = d // sd
    cdef Py_ssize_t all_taps = KD * KH * KW
    cdef Py_ssize_t* offsets = scratch
    cdef floating* weights = <floating*> (scratch + all_taps)
    cdef Py_ssize_t* slot_kd = scratch + all_taps + all_taps   # floating is at most 8 bytes
    cdef floating* dx_band = dx + ((plane * D + d) * H + h0) * W
    cdef floating* rows_out = dx_band if band_rows == NULL else band_rows
    cdef const floating* w_c = w + (plane % s.c_out) * all_taps
    cdef Py_ssize_t slots = 0, slot, td, th, tw, kh, kw, od, rh, rw, jh, taps, row_offset, count
    # the depth taps that reach depth d (its phase rd < min(sd, D) has a table entry), each
    # its output plane's rows stacked in the buffer
    for td in range(ad.count[rd]):
        od = jd + ad.shift[rd * KD + td]
        if 0 <= od < OD:
            fill_gradient_rows(g + (plane * OD + od) * OH * OW, s, ah, aw, p, j0, rows,
                               buffer + slots * rows * pw)
            slot_kd[slots] = ad.tap[rd * KD + td]
            slots += 1
    if slots == 0:
        fc_zero_short(dx_band, (h1 - h0) * W * sizeof(floating))
        return
    # the slack the last chunk of sums reads past the rows
    fc_zero_short(buffer + slots * rows * pw, (pw + 2 * chunk) * sizeof(floating))
    for rh in range(ah.phases):
        # the phase's rows in the band: j0 .. with rh + sh * j < h1
        jh = min(max(ceil_div(h1 - rh, sh) - j0, 0), band_phase_rows) if h1 > rh else 0
        if jh == 0:
            continue
        for rw in range(aw.phases):
            taps = 0
            for slot in range(slots):
                for th in range(ah.count[rh]):
                    kh = ah.tap[rh * KH + th]
                    row_offset = (slot * rows + ah.shift[rh * KH + th] - ah.low) * pw
                    for tw in range(aw.count[rw]):
                        kw = aw.tap[rw * KW + tw]
                        offsets[taps] = row_offset + aw.shift[rw * KW + tw] - aw.low
                        weights[taps] = w_c[(slot_kd[slot] * KH + kh) * KW + kw]
                        taps += 1
            # no tap reaches the phase (a kernel narrower than the stride): zeros
            count = (jh - 1) * pw + ceil_div(W - rw, s.stride[2])
            if floating is float:
                fc_plane_taps_f32(sums + rw * p.sums, count, 0, buffer, offsets, weights, taps)
            else:
                fc_plane_taps_f64(sums + rw * p.sums, count, 0, buffer, offsets, weights, taps)
        interleave_phase_rows(rows_out + rh * W, W, s.stride[2], sh * W, sums, p.sums, pw,
                              aw.phases, jh)
    if band_rows != NULL:
        fc_stream_copy(dx_band, band_rows, (h1 - h0) * W * sizeof(floating))


@cython.cdivision(True)
cdef int input_grad_phases(const floating* g, const floating* w, floating* dx,
                           const ConvShape* s, Py_ssize_t band_rows,
                           int num_threads, bint stream) noexcept nogil:
    cdef Py_ssize_t chunk = VECTOR_BYTES // sizeof(floating)
    cdef AxisPhases ad, ah, aw
    cdef PhasesLayout p
    cdef Py_ssize_t D = s.in_size[0], bands, items, chunk_items, item, t, plane, d, h0
    cdef Py_ssize_t all_taps = s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef floating* buffer = NULL
    cdef floating* sums = NULL
    cdef Py_ssize_t* scratch = NULL
    cdef floating* band_out = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    ad.count = ah.count = aw.count = NULL
    if axis_phases_table(&ad, D, s.kernel[0], s.stride[0], s.pad[0], s.dilation[0]) \
            or axis_phases_table(&ah, s.in_size[1], s.kernel[1], s.stride[1], s.pad[1],
                                 s.dilation[1]) \
            or axis_phases_table(&aw, s.in_size[2], s.kernel[2], s.stride[2], s.pad[2],
                                 s.dilation[2]):
        failed = 1
    else:
        p = phases_layout(s, &ah, &aw, band_rows, chunk)
        bands = ceil_div(s.in_size[1], p.band)
        items = s.n * s.c_in * D * bands
        chunk_items = max(1, items // (PLANES_CHUNKS_PER_THREAD * num_threads))
        with parallel(num_threads=num_threads):
            buffer = <floating*> fc_workspace(WS_PHASES_GRADIENT, p.g_size * sizeof(floating))
            sums = <floating*> fc_workspace(WS_PHASES_SUMS,
                                            aw.phases * p.sums * sizeof(floating))
            scratch = <Py_ssize_t*> fc_workspace(WS_PHASES_TAPS,
                                                 (3 * all_taps + 1) * sizeof(Py_ssize_t))
            band_out = NULL
            if stream:
                band_out = <floating*> fc_workspace(
                    WS_PHASES_BAND, p.band * s.in_size[2] * sizeof(floating))
                if band_out == NULL:
                    buffer = NULL   # (skips every item below)
            if buffer == NULL or sums == NULL or scratch == NULL:
                failed_flag[0] = 1
            for item in prange(items, schedule='dynamic', chunksize=chunk_items):
                if buffer == NULL or sums == NULL or scratch == NULL:
                    continue
                # item = (plane * D + d) * bands + band index
                h0 = (item % bands) * p.band
                t = item // bands
                phases_item(g, w, dx, s, &ad, &ah, &aw, &p, t // D, t % D, h0, buffer, sums,
                            scratch, band_out)
            fc_stream_fence()
    free_axis_phases(&ad)
    free_axis_phases(&ah)
    free_axis_phases(&aw)
    return failed


# ---------------------------------------------------------------------------------------------
# depthwise weight gradient (WEIGHT_GRAD_DEPTHWISE_ROWS), one input and one output channel per
# group: dw[c, tap] = sum over images and output positions of g * the input the tap reads.
# A work item is a block of channels over the whole batch, so their sums never leave the
# thread and need no partial buffers: per image, the input plane's rows are copied into
# zero-padded lines (fill_line, stride phases split), then blocks of tap rows run over the
# plane with one accumulator vector per tap (tap_rows.h), and the lanes are added once per
# channel. (The phase grid's dot products, WEIGHT_GRAD_PHASE, copy each plane twice and
# clear and add partial buffers: slower at stride 1, faster on small strided planes.)

cdef extern from "prefetch.h":
    void fc_prefetch_l2(const void* p, size_t bytes) noexcept nogil

cdef extern from "tap_rows.h":
    int FC_TAP_ROWS_MAX
    int FC_TAP_BLOCK_ROWS
    int FC_TAP_BLOCK_SUMS
    int FC_VEC_f32
    int FC_VEC_f64
    void fc_tap_rows_f32(const float* const* lines, const float* g, const Py_ssize_t* g_rows,
                         Py_ssize_t g_stride, Py_ssize_t rows, Py_ssize_t n,
                         const float* g_end, const Py_ssize_t* shifts, int khb, int kwb,
                         float* acc, Py_ssize_t acc_row) noexcept nogil
    void fc_tap_rows_f64(const double* const* lines, const double* g,
                         const Py_ssize_t* g_rows, Py_ssize_t g_stride, Py_ssize_t rows,
                         Py_ssize_t n, const double* g_end, const Py_ssize_t* shifts, int khb,
                         int kwb, double* acc, Py_ssize_t acc_row) noexcept nogil


cdef inline void tap_rows(const floating** lines, const floating* g, const Py_ssize_t* g_rows,
                          Py_ssize_t g_stride, Py_ssize_t rows, Py_ssize_t n,
                          const floating* g_end, const Py_ssize_t* shifts, int khb, int kwb,
                          floating* acc, Py_ssize_t acc_row) noexcept nogil:
    if floating is float:
        fc_tap_rows_f32(lines, g, g_rows, g_stride, rows, n, g_end, shifts, khb, kwb, acc,
                        acc_row)
    else:
        fc_tap_rows_f64(lines, g, g_rows, g_stride, rows, n, g_end, shifts, khb, kwb, acc,
                        acc_row)


cdef enum:
    GRAD_BLOCKS_PER_THREAD = 4          # blocks of channels a thread (weight_grad_rows)
    GRAD_BLOCK_SUMS_BYTES = 64 * 1024   # a block's accumulators at most (L2)


cdef int weight_grad_rows(const floating* x, const floating* g, floating* dw,
                          const ConvShape* s, int num_threads, floating* dx,
                          const floating* w_adjoint, const ConvShape* adjoint,
                          Py_ssize_t band, bint stream=False) noexcept nogil:
    """dw := the weight gradient of a layer of one channel per group each way (s.c_in_g ==
    s.c_out_g == 1). With `dx` (else NULL), the input gradient too, in the same pass: `adjoint` the stride-1
    convolution of g by the reversed weights `w_adjoint` whose output is dx, run on each
    image's gradient plane by planes_item (bands of `band` rows) just before the weight
    gradient reads that plane again, from cache: g crosses the memory bus once, not twice;
    `stream`: dx written by streaming stores (planes_item). Work item: a block of adjacent
    channels, every image's planes of the block in turn (image outer, channel inner), so
    each thread reads x and g (and writes dx) in runs of whole blocks of planes, the next
    item's planes asked into L2 while this one's are summed (fc_prefetch_l2); each channel's
    sums stay in accumulators of its own, over the images in order, so the bits do not
    depend on the blocks or the threads."""
    cdef Py_ssize_t V = FC_VEC_f32 if floating is float else FC_VEC_f64
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t taps = KD * KH * KW, tap_rows_count = KD * KH
    cdef Py_ssize_t in_plane = D * H * W, out_plane = OD * OH * OW
    cdef Py_ssize_t line_len = direct_line_length(s, V)
    cdef Py_ssize_t phase_len = direct_phase_length(s, V)
    cdef size_t copy_bytes = max(0, min(W, line_len - s.pad[2])) * sizeof(floating)
    # tap rows per pass: as many as share an input row's loads within the register tile
    cdef Py_ssize_t kw_block = KW if KW < FC_TAP_ROWS_MAX else FC_TAP_ROWS_MAX
    cdef Py_ssize_t row_block = FC_TAP_BLOCK_SUMS // kw_block
    cdef Py_ssize_t c, n, i, t0, khb, t, kd, kh, od, oh, i_d, i_h, first, count
    cdef Py_ssize_t b, c0, c1
    cdef const floating* next_x
    cdef const floating* next_g
    # the share of a gradient plane prefetched beside each input row (whole cache lines)
    cdef Py_ssize_t g_row_share = ceil_div(ceil_div(out_plane, max(1, D * H)), 16) * 16
    cdef Py_ssize_t sums_per_channel = taps * V
    # channels per block: enough blocks for the threads to share (and even out a slow core),
    # their accumulators within GRAD_BLOCK_SUMS_BYTES (L2)
    cdef Py_ssize_t block = max(1, min(
        ceil_div(s.groups, GRAD_BLOCKS_PER_THREAD * max(1, num_threads)),
        GRAD_BLOCK_SUMS_BYTES // (sums_per_channel * <Py_ssize_t> sizeof(floating))))
    cdef Py_ssize_t blocks = ceil_div(s.groups, block)
    cdef Py_ssize_t kw = 0, r = 0   # (set up each thread's tables, before the channels)
    cdef floating* lines = NULL
    cdef const floating** line_of = NULL
    # g_of[input row * tap rows + tap row]: where the output row that reads that input row at
    # that tap row starts in its plane, or -1: the same for every plane, made once
    cdef Py_ssize_t* g_of = <Py_ssize_t*> fc_workspace(
        WS_GRAD_G_ROWS, max(1, D * H * tap_rows_count) * sizeof(Py_ssize_t))
    cdef floating* acc = NULL
    cdef Py_ssize_t* shifts = NULL
    cdef const floating* x_plane
    cdef const floating* g_plane
    cdef const floating* g_end = g + s.n * s.c_out * out_plane
    cdef floating total
    cdef int failed = 0
    cdef int* failed_flag = &failed
    # the input gradient's layout and scratch (dx only)
    cdef PlanesLayout p
    cdef Py_ssize_t adj_od, adj_oh0, adj_rows
    cdef floating* phases = NULL
    cdef floating* sums = NULL
    cdef Py_ssize_t* offsets = NULL
    if row_block > FC_TAP_BLOCK_ROWS:
        row_block = FC_TAP_BLOCK_ROWS
    if g_of == NULL:
        return 1
    if dx != NULL:
        p = planes_layout(adjoint, min(band, adjoint.out_size[1]),
                          VECTOR_BYTES // sizeof(floating))
        if planes_tables(adjoint, &p):
            free_planes_tables(&p)
            return 1
    for r in range(D * H * tap_rows_count):
        g_of[r] = -1
    for t in range(tap_rows_count):
        kd = t // KH
        kh = t - kd * KH
        for od in range(OD):
            i_d = od * s.stride[0] + kd * s.dilation[0] - s.pad[0]
            if i_d < 0 or i_d >= D:
                continue
            for oh in range(OH):
                i_h = oh * s.stride[1] + kh * s.dilation[1] - s.pad[1]
                if 0 <= i_h < H:
                    g_of[(i_d * H + i_h) * tap_rows_count + t] = (od * OH + oh) * OW
    with parallel(num_threads=num_threads):
        lines = <floating*> fc_workspace(WS_GRAD_LINES, D * H * line_len * sizeof(floating))
        line_of = <const floating**> fc_workspace(WS_GRAD_ROWS, D * H * sizeof(floating*))
        acc = <floating*> fc_workspace(WS_GRAD_SUMS,
                                       block * sums_per_channel * sizeof(floating))
        shifts = <Py_ssize_t*> fc_workspace(WS_GRAD_SHIFTS, KW * sizeof(Py_ssize_t))
        if dx != NULL:
            phases = <floating*> fc_workspace(
                WS_PLANES_PHASES,
                planes_phase_count(adjoint, &p) * p.phase_size * sizeof(floating))
            sums = <floating*> fc_workspace(WS_PLANES_SUMS, p.sums * sizeof(floating))
            offsets = <Py_ssize_t*> fc_workspace(
                WS_PLANES_TAPS, taps * (sizeof(Py_ssize_t) + sizeof(floating)))
            if phases == NULL or sums == NULL or offsets == NULL:
                lines = NULL    # (skips every channel below)
        if lines == NULL or line_of == NULL or acc == NULL or shifts == NULL:
            failed_flag[0] = 1
        else:
            # zeros wherever no input goes, once: each image's rows then only copy the input
            memset(lines, 0, D * H * line_len * sizeof(floating))
            for r in range(D * H):
                line_of[r] = lines + r * line_len
            # tap kw reads phase (kw * dw) % sw of the line from column kw * dw // sw on
            for kw in range(KW):
                shifts[kw] = (kw * s.dilation[2]) % s.stride[2] * phase_len \
                    + kw * s.dilation[2] // s.stride[2]
        for b in prange(blocks, schedule='dynamic'):
            if lines == NULL or line_of == NULL or acc == NULL or shifts == NULL:
                continue
            c0 = b * block
            c1 = min(s.groups, c0 + block)
            memset(acc, 0, (c1 - c0) * sums_per_channel * sizeof(floating))
            for n in range(s.n):
                for c in range(c0, c1):
                    x_plane = x + (n * s.c_in + c) * in_plane
                    g_plane = g + (n * s.c_out + c) * out_plane
                    if dx != NULL:
                        # the input gradient of plane (n, c): planes n * groups + c of the
                        # adjoint
                        for adj_od in range(adjoint.out_size[0]):
                            adj_oh0 = 0
                            while adj_oh0 < adjoint.out_size[1]:
                                adj_rows = min(p.band, adjoint.out_size[1] - adj_oh0)
                                planes_item(g, w_adjoint, NULL, dx, adjoint, &p,
                                            n * s.groups + c, 1, adj_od, adj_oh0,
                                            adj_oh0 + adj_rows, phases, sums, offsets,
                                            stream)
                                adj_oh0 = adj_oh0 + adj_rows
                    # the next item's planes asked into L2 a row's worth at a time as this
                    # one's rows are copied: the loads come in while the taps are summed (all
                    # at once, the requests queue ahead of this item's own)
                    next_x = NULL   # (the last item of the block has none)
                    next_g = NULL
                    if c + 1 < c1:
                        next_x = x_plane + in_plane
                        next_g = g_plane + out_plane
                    elif n + 1 < s.n:
                        next_x = x + ((n + 1) * s.c_in + c0) * in_plane
                        next_g = g + ((n + 1) * s.c_out + c0) * out_plane
                    for i in range(D * H):
                        if s.stride[2] == 1:
                            # the rows' columns [pad, pad + W) hold input (the rest stays
                            # zero): the bounds made once, not by fill_line's divisions
                            fc_copy_short(lines + i * line_len + s.pad[2], x_plane + i * W,
                                          copy_bytes)
                        else:
                            fill_line(lines + i * line_len, line_len, x_plane + i * W, s,
                                      False)
                        if next_x != NULL:
                            fc_prefetch_l2(next_x + i * W, W * sizeof(floating))
                            if i * g_row_share < out_plane:   # (the plane's last share short)
                                fc_prefetch_l2(next_g + i * g_row_share,
                                               min(g_row_share, out_plane - i * g_row_share)
                                               * sizeof(floating))
                    t0 = 0
                    while t0 < tap_rows_count:
                        khb = tap_rows_count - t0 if tap_rows_count - t0 < row_block \
                            else row_block
                        first = 0
                        while first < KW:
                            count = KW - first if KW - first < kw_block else kw_block
                            tap_rows(line_of, g_plane, g_of + t0, tap_rows_count, D * H, OW,
                                     g_end, shifts + first, <int> khb, <int> count,
                                     acc + (c - c0) * sums_per_channel
                                     + (t0 * KW + first) * V, KW)
                            first = first + count
                        t0 = t0 + khb
            # the lanes in order: the same sums whichever thread ran the channel
            for c in range(c0, c1):
                for t in range(taps):
                    total = 0
                    for i in range(V):
                        total = total + acc[(c - c0) * sums_per_channel + t * V + i]
                    dw[c * taps + t] = total
        fc_stream_fence()
    if dx != NULL:
        free_planes_tables(&p)
    return failed


# ---------------------------------------------------------------------------------------------
# Entry points from Python: 5-d C-contiguous arrays, already validated by the Python layer.

def conv_forward(int kernel, const floating[:, :, :, :, ::1] x,
                 const floating[:, :, :, :, ::1] w, const floating[::1] bias,
                 floating[:, :, :, :, ::1] out, tuple stride, tuple pad, tuple dilation,
                 Py_ssize_t groups, Py_ssize_t band_rows, Py_ssize_t planes_per_item,
                 int num_threads):
    """out := conv(x, w) + bias (bias: empty for none) with zero padding `pad` before each
    axis, by the direct loops. `kernel`: CONV_DIRECT_ROWS (rows), or CONV_DIRECT_PLANES (whole
    planes, in bands of `band_rows` output rows, `planes_per_item` whole planes at a time
    where a band is the whole plane; one input channel per group)."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(w.shape), shape5(out.shape),
                                  stride, pad, dilation, groups)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef int status = 0
    if kernel != CONV_DIRECT_ROWS and kernel != CONV_DIRECT_PLANES:
        raise ValueError(f"conv_direct.conv_forward does not run kernel {kernel}")
    if kernel == CONV_DIRECT_PLANES and s.c_in_g != 1:
        raise ValueError(f"conv_direct.conv_forward: kernel {kernel} takes one input channel "
                         f"per group, got {s.c_in_g}")
    if kernel == CONV_DIRECT_PLANES and band_rows < 1:
        raise ValueError(f"conv_direct.conv_forward: band_rows must be at least 1, got "
                         f"{band_rows}")
    if kernel == CONV_DIRECT_PLANES and not 1 <= planes_per_item <= 64:
        raise ValueError(f"conv_direct.conv_forward: planes_per_item must be in [1, 64], got "
                         f"{planes_per_item}")
    if out.shape[0] == 0:
        return
    with nogil:
        if kernel == CONV_DIRECT_PLANES:
            status = conv_direct_planes(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                        &out[0, 0, 0, 0, 0], &s, band_rows, planes_per_item,
                                        num_threads)
        else:
            status = conv_direct(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                 &out[0, 0, 0, 0, 0], &s, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a convolution work buffer")


def input_grad(int kernel, const floating[:, :, :, :, ::1] g,
               const floating[:, :, :, :, ::1] w, floating[:, :, :, :, ::1] dx,
               tuple stride, tuple pad, tuple dilation, Py_ssize_t groups, Py_ssize_t band_rows,
               int num_threads, bint stream=False):
    """dx := the input gradient of conv(dx-shaped input, w) for output gradient g (zero
    padding `pad` before each axis). `kernel`: INPUT_GRAD_DIRECT_ROWS (row by row), or
    INPUT_GRAD_DIRECT_PHASES (by stride phases, in bands of `band_rows` input rows; one input
    and one output channel per group, finite weights; `stream`: dx written by streaming
    stores, for a dx that no cache would keep until its reader)."""
    cdef ConvShape s = make_shape(shape5(dx.shape), shape5(w.shape), shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    if kernel != INPUT_GRAD_DIRECT_ROWS and kernel != INPUT_GRAD_DIRECT_PHASES:
        raise ValueError(f"conv_direct.input_grad does not run kernel {kernel}")
    if kernel == INPUT_GRAD_DIRECT_PHASES and (s.c_in_g != 1 or s.c_out_g != 1):
        raise ValueError(f"conv_direct.input_grad: kernel {kernel} takes one input and one "
                         f"output channel per group, got {s.c_in_g} and {s.c_out_g}")
    if kernel == INPUT_GRAD_DIRECT_PHASES and band_rows < 1:
        raise ValueError(f"conv_direct.input_grad: band_rows must be at least 1, got "
                         f"{band_rows}")
    if dx.size == 0:
        return
    with nogil:
        if kernel == INPUT_GRAD_DIRECT_PHASES:
            status = input_grad_phases(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0],
                                       &dx[0, 0, 0, 0, 0], &s, band_rows, num_threads,
                                       stream)
        else:
            status = input_grad_direct(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0],
                                       &dx[0, 0, 0, 0, 0], &s, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")


def weight_grad(int kernel, const floating[:, :, :, :, ::1] x,
                const floating[:, :, :, :, ::1] g, floating[:, :, :, :, ::1] dw,
                tuple stride, tuple pad, tuple dilation, Py_ssize_t groups, int num_threads):
    """dw := the weight gradient of conv(x, dw-shaped weight) for output gradient g (zero
    padding `pad` before each axis), one channel per work item. `kernel`:
    WEIGHT_GRAD_DEPTHWISE_ROWS (one input and one output channel per group)."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(dw.shape), shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    if kernel != WEIGHT_GRAD_DEPTHWISE_ROWS:
        raise ValueError(f"conv_direct.weight_grad does not run kernel {kernel}")
    if s.c_in_g != 1 or s.c_out_g != 1:
        raise ValueError(f"conv_direct.weight_grad: kernel {kernel} takes one input and one "
                         f"output channel per group, got {s.c_in_g} and {s.c_out_g}")
    if dw.size == 0:
        return
    with nogil:
        status = weight_grad_rows(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0], &dw[0, 0, 0, 0, 0],
                                  &s, num_threads, NULL, NULL, NULL, 0)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")


def depthwise_grads(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] g,
                    const floating[:, :, :, :, ::1] w_adjoint, floating[:, :, :, :, ::1] dx,
                    floating[:, :, :, :, ::1] dw, tuple stride, tuple pad, tuple dilation,
                    tuple adjoint_pad, Py_ssize_t groups, Py_ssize_t band_rows,
                    int num_threads, bint stream=False):
    """dx and dw := both gradients of a depthwise convolution (one input and one output
    channel per group) at stride 1 (`stride` is what the forward kernels take: 1 along an
    axis with one output), in one pass over each channel: dw as weight_grad's
    WEIGHT_GRAD_DEPTHWISE_ROWS, dx as conv_forward's CONV_DIRECT_PLANES on the adjoint, the
    forward convolution of g by the reversed filters `w_adjoint` (C, 1, KD, KH, KW) with
    zero padding `adjoint_pad` before each axis, in bands of `band_rows` rows: both
    bit for bit what those two calls give. `stream`: dx goes out by streaming stores (for a
    dx that no cache would keep until its reader)."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(dw.shape), shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef ConvShape adjoint = make_shape(shape5(g.shape), shape5(w_adjoint.shape),
                                        shape5(dx.shape), (1, 1, 1), adjoint_pad, dilation,
                                        groups)
    cdef int status = 0
    if s.c_in_g != 1 or s.c_out_g != 1 or adjoint.c_in_g != 1 or adjoint.c_out_g != 1:
        raise ValueError(f"conv_direct.depthwise_grads takes one input and one output channel "
                         f"per group, got {s.c_in_g} and {s.c_out_g}")
    if tuple(dx.shape) != tuple(x.shape) or tuple(w_adjoint.shape) != tuple(dw.shape):
        raise ValueError(f"conv_direct.depthwise_grads: dx must have x's shape and w_adjoint "
                         f"dw's; got {tuple(dx.shape)}, {tuple(x.shape)}, "
                         f"{tuple(w_adjoint.shape)}, {tuple(dw.shape)}")
    if band_rows < 1:
        raise ValueError(f"conv_direct.depthwise_grads: band_rows must be at least 1, got "
                         f"{band_rows}")
    if dw.size == 0 or dx.size == 0:
        return
    with nogil:
        status = weight_grad_rows(&x[0, 0, 0, 0, 0], &g[0, 0, 0, 0, 0], &dw[0, 0, 0, 0, 0],
                                  &s, num_threads, &dx[0, 0, 0, 0, 0],
                                  &w_adjoint[0, 0, 0, 0, 0], &adjoint, band_rows, stream)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")
