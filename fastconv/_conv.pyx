# cython: language_level=3
"""Convolution (cross-correlation) kernels: direct loops, im2col + GEMM, 1x1 as GEMM.

One kernel per algorithm serves 1d, 2d and 3d (see _conv.pxd) and float32/float64 through
the fused type `floating`. The Python layer validates everything and pads non-zero padding
modes beforehand; these kernels trust their inputs and only ever pad with zeros, implicitly.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free

cdef extern from "_workspace.h":
    void* fc_workspace(int slot, size_t bytes) noexcept nogil
    void fc_workspace_trim() noexcept nogil

# Slots of the per-thread workspace (_workspace.h): buffers reused from call to call.
cdef enum:
    WS_DIRECT_XS, WS_DIRECT_WS, WS_DIRECT_LINES, WS_DIRECT_TAIL, WS_IM2COL,
    WS_PACKED_WEIGHTS, WS_SHARED_PANELS, WS_PANELS, WS_SEGMENTS, WS_PHASE, WS_PHASE_OUT,
    WS_PHASE_OFFSETS
from libc.string cimport memset, memcpy

from fastconv._blas cimport gemm, set_local_threads_t, hold_blas_single_threaded, release_blas

cdef set_local_threads_t blas_set_local_threads = NULL


def set_blas_local_threads_hook(size_t address):
    """Register openblas_set_num_threads_local (its address; 0 for none), see _blas.pxd."""
    global blas_set_local_threads
    blas_set_local_threads = <set_local_threads_t> address


cdef ConvShape make_shape(tuple x_shape, tuple w_shape, tuple out_shape, tuple stride,
                          tuple pad, tuple dilation, Py_ssize_t groups) except *:
    cdef ConvShape s
    cdef int i
    s.n, s.c_in = x_shape[0], x_shape[1]
    s.c_out, s.c_in_g = w_shape[0], w_shape[1]
    s.groups = groups
    s.c_out_g = s.c_out // groups
    for i in range(3):
        s.in_size[i] = x_shape[2 + i]
        s.kernel[i] = w_shape[2 + i]
        s.out_size[i] = out_shape[2 + i]
        s.stride[i] = stride[i]
        s.pad[i] = pad[i]
        s.dilation[i] = dilation[i]
    return s


cdef inline void output_range(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t in_len,
                              Py_ssize_t out_len, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the outputs o with 0 <= o * stride + offset < in_len (the rest read padding)."""
    cdef Py_ssize_t last = in_len - 1 - offset
    lo[0] = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi[0] = 0 if last < 0 else last // stride + 1
    if hi[0] > out_len:
        hi[0] = out_len
    if hi[0] < lo[0]:
        hi[0] = lo[0]


# ---------------------------------------------------------------------------------------------
# direct: a block of up to CO_BLOCK output channels of a band of output rows (fixed n, od) at a
# time. Best when a GEMM would be thin: few channels per group, depthwise, 1-channel images.
#
# The input rows the band reads are copied once into zero-padded lines (so every tap of a
# chunk reads inside its line, with no edge cases), then chunks of one vector register of
# outputs accumulate over all taps in registers (_simd.h) and are stored once, bias included.
# Strided rows have no contiguous vector of inputs and go tap by tap.

cdef extern from "_simd.h":
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


cdef void direct_taps_by_column(floating* out_row, Py_ssize_t out_step, Py_ssize_t channels,
                                Py_ssize_t taps, const floating** xs, const floating** ws,
                                Py_ssize_t w_step, const ConvShape* s) noexcept nogil:
    """out_row[c, o] += sum_t,kw ws[t][c * w_step + kw] * xs[t][o * stride + kw * dil - pad]
    over all columns, skipping taps that read padding."""
    cdef Py_ssize_t W = s.in_size[2], OW = s.out_size[2], sw = s.stride[2]
    cdef Py_ssize_t t, kw, off, lo, hi, o, c
    cdef floating wv
    cdef const floating* x_row
    for t in range(taps):
        x_row = xs[t]
        for kw in range(s.kernel[2]):
            off = kw * s.dilation[2] - s.pad[2]
            output_range(off, sw, W, OW, &lo, &hi)
            for c in range(channels):
                wv = ws[t][c * w_step + kw]
                for o in range(lo, hi):
                    out_row[c * out_step + o] += wv * x_row[o * sw + off]


cdef inline Py_ssize_t direct_line_length(const ConvShape* s, Py_ssize_t vector) noexcept nogil:
    """Length of a zero-padded input line from which whole chunks of `vector` outputs of a row
    can be read: the outputs rounded up to whole chunks, plus the kernel's dilated width."""
    cdef Py_ssize_t chunks = (s.out_size[2] + vector - 1) // vector
    return chunks * vector + (s.kernel[2] - 1) * s.dilation[2]


cdef inline Py_ssize_t direct_band_lines(const ConvShape* s, Py_ssize_t band) noexcept nogil:
    """Input rows (per input channel and kd) that a band of `band` output rows reads."""
    return (band - 1) * s.stride[1] + (s.kernel[1] - 1) * s.dilation[1] + 1


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
    cdef Py_ssize_t g = co0 // s.c_out_g, pad_w = s.pad[2]
    cdef const floating* b = bias + co0 if bias != NULL else NULL
    cdef const floating* x_row
    cdef floating* line
    cdef floating* out_row
    cdef Py_ssize_t ci, kd, kh, i_d, i_h, o, c, r, oh, taps = 0, copied
    cdef bint by_rows, wide

    if s.stride[2] != 1:
        direct_band_strided(x, w, bias, out, s, n, co0, channels, od, oh0, oh1, xs, ws)
        return

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
                    memset(line, 0, line_len * sizeof(floating))
                    continue
                x_row = x + (((n * s.c_in + g * s.c_in_g + ci) * D + i_d) * H + i_h) * W
                copied = W if pad_w + W <= line_len else line_len - pad_w
                memset(line, 0, pad_w * sizeof(floating))
                memcpy(line + pad_w, x_row, copied * sizeof(floating))
                memset(line + pad_w + copied, 0, (line_len - pad_w - copied) * sizeof(floating))
            for kh in range(KH):
                xs[taps] = lines + ((ci * KD + kd) * band_lines + kh * s.dilation[1]) * line_len
                ws[taps] = w + (co0 * s.c_in_g + ci) * KD * KH * KW + (kd * KH + kh) * KW
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
                             KW, s.dilation[2], True, row_step, OW)
                o += vector
            direct_row_tail(out_row, out_plane, channels, b, taps, xs, r, ws, w_step, s, o,
                            tail, 4, row_step)
            oh += 4
            continue
        o = 0
        while o + vector <= OW:
            wide = channels < CO_BLOCK and o + 4 * vector <= OW
            direct_chunk(out_row + o, out_plane, channels, b, taps, xs, r + o, ws, w_step, KW,
                         s.dilation[2], wide, vector, vector)
            o += 4 * vector if wide else vector
        direct_row_tail(out_row, out_plane, channels, b, taps, xs, r, ws, w_step, s, o, tail,
                        1, row_step)
        oh += 1


cdef void direct_row_tail(floating* out_row, Py_ssize_t out_plane, Py_ssize_t channels,
                          const floating* b, Py_ssize_t taps, const floating** xs,
                          Py_ssize_t r, const floating** ws, Py_ssize_t w_step,
                          const ConvShape* s, Py_ssize_t o, floating* tail, Py_ssize_t rows,
                          Py_ssize_t row_step) noexcept nogil:
    """Columns o .. OW - 1 (less than a vector) of `rows` (1 or 4) consecutive output rows:
    computed into a scratch chunk per row and cut to the row's end."""
    cdef Py_ssize_t vector = VECTOR_BYTES // sizeof(floating)
    cdef Py_ssize_t OW = s.out_size[2], rest = s.out_size[2] - o, c, k
    if rest <= 0:
        return
    # tail[c][k] holds channel c of row k
    direct_chunk(tail, rows * vector, channels, b, taps, xs, r + o, ws, w_step, s.kernel[2],
                 s.dilation[2], rows == 4, row_step, vector)
    for c in range(channels):
        for k in range(rows):
            memcpy(out_row + c * out_plane + k * OW + o, tail + (c * rows + k) * vector,
                   rest * sizeof(floating))


cdef void direct_band_strided(const floating* x, const floating* w, const floating* bias,
                              floating* out, const ConvShape* s, Py_ssize_t n, Py_ssize_t co0,
                              Py_ssize_t channels, Py_ssize_t od, Py_ssize_t oh0,
                              Py_ssize_t oh1, const floating** xs,
                              const floating** ws) noexcept nogil:
    """direct_band for a stride along W: no contiguous vector of inputs, so tap by tap."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t out_plane = s.out_size[0] * OH * OW
    cdef Py_ssize_t w_step = s.c_in_g * KD * KH * KW
    cdef Py_ssize_t g = co0 // s.c_out_g
    cdef floating* out_row
    cdef Py_ssize_t ci, kd, kh, i_d, i_h, o, c, oh, taps
    for oh in range(oh0, oh1):
        out_row = out + (n * s.c_out + co0) * out_plane + (od * OH + oh) * OW
        taps = 0
        for ci in range(s.c_in_g):
            for kd in range(KD):
                i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
                if i_d < 0 or i_d >= D:
                    continue
                for kh in range(KH):
                    i_h = oh * s.stride[1] - s.pad[1] + kh * s.dilation[1]
                    if i_h < 0 or i_h >= H:
                        continue
                    xs[taps] = x + (((n * s.c_in + g * s.c_in_g + ci) * D + i_d) * H + i_h) * W
                    ws[taps] = w + (co0 * s.c_in_g + ci) * KD * KH * KW + (kd * KH + kh) * KW
                    taps += 1
        for c in range(channels):
            for o in range(OW):
                out_row[c * out_plane + o] = bias[co0 + c] if bias != NULL else 0
        direct_taps_by_column(out_row, out_plane, channels, taps, xs, ws, w_step, s)


cdef int conv_direct(const floating* x, const floating* w, const floating* bias,
                     floating* out, const ConvShape* s, int num_threads) noexcept nogil:
    # work item: (image, block of output channels inside one group, output depth, band of
    # output rows); a band is as many rows as keep its padded input lines in L2
    cdef Py_ssize_t blocks_per_group = (s.c_out_g + CO_BLOCK - 1) // CO_BLOCK
    cdef Py_ssize_t OD = s.out_size[0], OH = s.out_size[1]
    cdef Py_ssize_t line_len = direct_line_length(s, VECTOR_BYTES // sizeof(floating))
    cdef Py_ssize_t per_band_line = s.c_in_g * s.kernel[0] * line_len * sizeof(floating)
    cdef Py_ssize_t band = OH, bands, items, max_lines
    cdef Py_ssize_t max_taps = s.c_in_g * s.kernel[0] * s.kernel[1]
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
# im2col + GEMM, blocked: each work item (image, group, band of output rows) unfolds only its
# band into a thread-private buffer sized for the cache, then one single-threaded GEMM writes
# the band of every output channel of the group. The full im2col matrix never exists.

cdef inline void decode_tap(Py_ssize_t k, const ConvShape* s, Py_ssize_t* c, Py_ssize_t* kd,
                            Py_ssize_t* kh, Py_ssize_t* kw) noexcept nogil:
    """Row k of an unfolded matrix is input channel c (of the group) at tap (kd, kh, kw)."""
    cdef Py_ssize_t taps = s.kernel[0] * s.kernel[1] * s.kernel[2], tap = k % taps
    c[0] = k // taps
    kd[0] = tap // (s.kernel[1] * s.kernel[2])
    kh[0] = (tap // s.kernel[2]) % s.kernel[1]
    kw[0] = tap % s.kernel[2]


cdef const floating* unfold_band(const floating* x_g, const ConvShape* s, Py_ssize_t r0,
                                 Py_ssize_t r1, bint pointwise, floating* col) noexcept nogil:
    """The GEMM operand for output rows [r0, r1): for a pointwise convolution the input band
    itself (row stride: the input plane), else its im2col written into `col`."""
    if pointwise:
        return x_g + r0 * s.out_size[2]
    im2col_rows(x_g, s, r0, r1, col)
    return col


cdef void im2col_rows(const floating* x_g, const ConvShape* s, Py_ssize_t row_begin,
                      Py_ssize_t row_end, floating* col) noexcept nogil:
    """col[k, j] = x_g[c, d, h, w] read by tap k = (c, kd, kh, kw) at output position j of the
    band of output rows [row_begin, row_end) (a row is a fixed (od, oh)); zero where padding."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KD = s.kernel[0], KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t sw = s.stride[2]
    cdef Py_ssize_t band = (row_end - row_begin) * OW
    cdef Py_ssize_t taps = KD * KH * KW
    cdef Py_ssize_t k, c, tap, kd, kh, kw, r, od, oh, i_d, i_h, off, lo, hi, o
    cdef Py_ssize_t od_first = row_begin // OH, oh_first = row_begin % OH
    cdef const floating* x_row
    cdef floating* dst
    for k in range(s.c_in_g * taps):
        decode_tap(k, s, &c, &kd, &kh, &kw)
        off = kw * s.dilation[2] - s.pad[2]
        output_range(off, sw, W, OW, &lo, &hi)
        dst = col + k * band
        # (od, oh) of row r advance by counting: no division per row in this hot loop
        od = od_first
        oh = oh_first
        for r in range(row_begin, row_end):
            i_d = od * s.stride[0] - s.pad[0] + kd * s.dilation[0]
            i_h = oh * s.stride[1] - s.pad[1] + kh * s.dilation[1]
            if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                memset(dst, 0, OW * sizeof(floating))
            else:
                x_row = x_g + ((c * D + i_d) * H + i_h) * W
                for o in range(lo):
                    dst[o] = 0
                if sw == 1:
                    memcpy(dst + lo, x_row + lo + off, (hi - lo) * sizeof(floating))
                else:
                    for o in range(lo, hi):
                        dst[o] = x_row[o * sw + off]
                for o in range(hi, OW):
                    dst[o] = 0
            dst += OW
            oh = oh + 1
            if oh == OH:
                oh = 0
                od = od + 1


cdef inline void fill_bias(floating* out_block, const floating* bias, Py_ssize_t channels,
                           Py_ssize_t cols, Py_ssize_t ld) noexcept nogil:
    cdef Py_ssize_t c, j
    for c in range(channels):
        for j in range(cols):
            out_block[c * ld + j] = bias[c]


cdef int conv_gemm(const floating* x, const floating* w, const floating* bias, floating* out,
                   const ConvShape* s, bint pointwise, Py_ssize_t band_rows,
                   int num_threads) noexcept nogil:
    """im2col + GEMM; with `pointwise` (1x1, stride 1, no padding) the input band already is
    the GEMM operand and nothing is copied."""
    cdef Py_ssize_t OW = s.out_size[2]
    cdef Py_ssize_t rows = s.out_size[0] * s.out_size[1]
    cdef Py_ssize_t out_plane = rows * OW
    cdef Py_ssize_t in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t bands = (rows + band_rows - 1) // band_rows
    cdef Py_ssize_t items = s.n * s.groups * bands
    cdef Py_ssize_t item, band, n, g, r0, r1, cols
    cdef floating* col = NULL
    cdef floating* out_block
    cdef const floating* operand
    cdef int failed = 0
    cdef int* failed_flag = &failed
    cdef floating beta
    cdef int blas_threads_before

    with parallel(num_threads=num_threads):
        blas_threads_before = hold_blas_single_threaded(blas_set_local_threads)
        if not pointwise:
            col = <floating*> fc_workspace(WS_IM2COL, K * band_rows * OW * sizeof(floating))
            if col == NULL:
                failed_flag[0] = 1
        for item in prange(items, schedule='dynamic'):
            if not pointwise and col == NULL:
                continue
            band = item % bands
            g = (item // bands) % s.groups
            n = item // (bands * s.groups)
            r0 = band * band_rows
            r1 = r0 + band_rows
            if r1 > rows:
                r1 = rows
            cols = (r1 - r0) * OW
            operand = unfold_band(x + (n * s.c_in + g * s.c_in_g) * in_plane, s, r0, r1,
                                  pointwise, col)
            out_block = out + (n * s.c_out + g * s.c_out_g) * out_plane + r0 * OW
            beta = 0
            if bias != NULL:
                fill_bias(out_block, bias + g * s.c_out_g, s.c_out_g, cols, out_plane)
                beta = 1
            gemm(False, False, <int> s.c_out_g, <int> cols, <int> K, <floating> 1,
                 w + g * s.c_out_g * K, <int> K, operand,
                 <int> (in_plane if pointwise else cols), beta, out_block, <int> out_plane)
        release_blas(blas_set_local_threads, blas_threads_before)
    return failed


# ---------------------------------------------------------------------------------------------
# packed: im2col writes straight into the panel layout of fastconv's own register-blocked GEMM
# micro-kernel (_simd.h), instead of a row-major matrix that a BLAS would pack again. Work
# items are (image, group, tile of output positions); each thread unfolds its tile into
# private panels (sized for L2) and multiplies them by the weights, packed once per call.
# Every output is one complete sum over the taps in a fixed order, so the result does not
# depend on the tiling or the thread count.

cdef extern from "_simd.h":
    int FC_GEMM_MR
    int FC_GEMM_MR_NARROW
    int FC_NR_f32
    int FC_NR_f64
    int FC_NR_NARROW_f32
    int FC_NR_NARROW_f64
    int FC_VEC_f32
    int FC_VEC_f64
    void fc_gemm_f32(int narrow, Py_ssize_t k_len, const float* a, const float* b,
                     Py_ssize_t b_stride, const Py_ssize_t* offsets, float* c, Py_ssize_t ldc,
                     Py_ssize_t m_valid, Py_ssize_t n_valid, const float* bias,
                     int accumulate) noexcept nogil
    void fc_gemm_f64(int narrow, Py_ssize_t k_len, const double* a, const double* b,
                     Py_ssize_t b_stride, const Py_ssize_t* offsets, double* c, Py_ssize_t ldc,
                     Py_ssize_t m_valid, Py_ssize_t n_valid, const double* bias,
                     int accumulate) noexcept nogil


cdef enum:
    # An A panel's K block (K_BLOCK x MR) of 12 KiB: with the matching B panel block it fits L1.
    K_BLOCK_BYTES = 12 * 1024
    # The micro-kernel's two register-tile shapes (_simd.h): 8 x 48 and 12 x 32 with AVX-512.
    TILE_WIDE = 0
    TILE_NARROW = 1


def packed_tile_width(bint double_precision, int shape=TILE_WIDE):
    """(MR, NR) of the packed GEMM micro-kernel's register tile `shape` on this CPU."""
    return tile_mr(shape), tile_nr(shape, <double*> NULL) if double_precision \
        else tile_nr(shape, <float*> NULL)


cdef Py_ssize_t vector_width(floating* dummy) noexcept nogil:
    """Elements of one vector register of the micro-kernels for this precision."""
    if floating is float:
        return FC_VEC_f32
    return FC_VEC_f64


cdef Py_ssize_t tile_mr(int shape) noexcept nogil:
    """Rows (output channels) of a register tile."""
    return FC_GEMM_MR_NARROW if shape == TILE_NARROW else FC_GEMM_MR


cdef Py_ssize_t tile_nr(int shape, floating* dummy) noexcept nogil:
    """Columns (positions) of a register tile for this precision."""
    if floating is float:
        return FC_NR_NARROW_f32 if shape == TILE_NARROW else FC_NR_f32
    return FC_NR_NARROW_f64 if shape == TILE_NARROW else FC_NR_f64


cdef int choose_tile(Py_ssize_t M, floating* dummy) noexcept nogil:
    """The tile shape that wastes least on a product of M rows. Both shapes compute whole
    vectors of columns (a last panel goes to a tail kernel of fewer vectors), so the rows
    decide: M rounded up to whole tiles, the narrow shape's extra broadcasts costing it
    about 8%."""
    cdef Py_ssize_t mr_w = tile_mr(TILE_WIDE), mr_n = tile_mr(TILE_NARROW)
    cdef double wide = <double> ((M + mr_w - 1) // mr_w * mr_w)
    cdef double narrow = <double> ((M + mr_n - 1) // mr_n * mr_n)
    return TILE_NARROW if narrow * 1.08 < wide else TILE_WIDE


def packed_tile_shape(Py_ssize_t M, bint double_precision):
    """choose_tile for Python: the tile shape for a product of M rows (output channels)."""
    if double_precision:
        return choose_tile(M, <double*> NULL)
    return choose_tile(M, <float*> NULL)


cdef inline Py_ssize_t panel_width(floating* dummy) noexcept nogil:
    if floating is float:
        return FC_NR_f32
    return FC_NR_f64


cdef Py_ssize_t gemm_mr() noexcept nogil:
    """Rows (output channels) of the micro-kernel's wide register tile."""
    return FC_GEMM_MR


cdef Py_ssize_t gemm_nr(floating* dummy) noexcept nogil:
    """Columns (positions) of the micro-kernel's wide register tile for this precision."""
    return panel_width(dummy)


cdef void pack_weights(const floating* w, const ConvShape* s, floating* packed,
                       int shape) noexcept nogil:
    """packed[g][panel][k][m] = w[g * c_out_g + panel * MR + m][k], zero past c_out_g."""
    cdef Py_ssize_t K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    cdef Py_ssize_t MR = tile_mr(shape)
    cdef Py_ssize_t panels = (s.c_out_g + MR - 1) // MR
    cdef Py_ssize_t g, panel, k, m, co
    cdef floating* dst
    for g in range(s.groups):
        for panel in range(panels):
            dst = packed + (g * panels + panel) * K * MR
            # one filter at a time: contiguous reads of w, writes MR apart
            for m in range(MR):
                co = panel * MR + m
                if co < s.c_out_g:
                    for k in range(K):
                        dst[k * MR + m] = w[(g * s.c_out_g + co) * K + k]
                else:
                    for k in range(K):
                        dst[k * MR + m] = 0


ctypedef struct PanelSegment:
    # a run of output positions inside one output row and one panel
    Py_ssize_t q          # index of its first position inside the tile
    Py_ssize_t length
    Py_ssize_t ow         # output column of its first position
    Py_ssize_t d0, h0     # input depth/row its output row reads at tap kd = kh = 0


cdef Py_ssize_t panel_segments(const ConvShape* s, Py_ssize_t p_begin, Py_ssize_t count,
                               Py_ssize_t NR, PanelSegment* segments) noexcept nogil:
    """Split output positions [p_begin, p_begin + count) at row and panel boundaries (the
    same for every tap, so computed once per tile); returns the number of segments."""
    cdef Py_ssize_t OH = s.out_size[1], OW = s.out_size[2]
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
        n_segments += 1
        q += length
    return n_segments


cdef void pack_a_panels(const floating* src, Py_ssize_t row_stride, Py_ssize_t col_stride,
                        Py_ssize_t M, Py_ssize_t K, floating* packed,
                        int shape=TILE_WIDE) noexcept nogil:
    """packed[panel][k][m] = A[panel * MR + m][k] with A[i][j] = src[i * row_stride +
    j * col_stride] (any layout, transposed included), zero past M: A in micro-kernel panels."""
    cdef Py_ssize_t MR = tile_mr(shape)
    cdef Py_ssize_t panel, k, m, i
    for panel in range((M + MR - 1) // MR):
        for k in range(K):
            for m in range(MR):
                i = panel * MR + m
                packed[(panel * K + k) * MR + m] = src[i * row_stride + k * col_stride] \
                    if i < M else 0


cdef void pack_b_panels(const floating* src, Py_ssize_t row_stride, Py_ssize_t col_stride,
                        Py_ssize_t K, Py_ssize_t N, Py_ssize_t NR,
                        floating* packed) noexcept nogil:
    """packed[j][k][c] = B[k][j * NR + c] with B[k][n] = src[k * row_stride + n * col_stride]
    (any layout, transposed included), zero past N: B in micro-kernel panels."""
    cdef Py_ssize_t j, k, c, width
    for j in range((N + NR - 1) // NR):
        width = N - j * NR if N - j * NR < NR else NR
        for k in range(K):
            if col_stride == 1:
                for c in range(width):
                    packed[(j * K + k) * NR + c] = src[k * row_stride + j * NR + c]
            else:
                for c in range(width):
                    packed[(j * K + k) * NR + c] = src[k * row_stride + (j * NR + c) * col_stride]
            for c in range(width, NR):
                packed[(j * K + k) * NR + c] = 0


cdef void im2col_panels(const floating* x_g, const ConvShape* s, const PanelSegment* segments,
                        Py_ssize_t n_segments, Py_ssize_t count, Py_ssize_t NR,
                        floating* dst) noexcept nogil:
    """Unfold a tile of output positions of one image and group into panels:
    dst[j][k][c] = input read by tap k at the tile's position j * NR + c (0 past count)."""
    cdef Py_ssize_t D = s.in_size[0], H = s.in_size[1], W = s.in_size[2]
    cdef Py_ssize_t KH = s.kernel[1], KW = s.kernel[2]
    cdef Py_ssize_t taps = s.kernel[0] * KH * KW
    cdef Py_ssize_t K = s.c_in_g * taps
    cdef Py_ssize_t sw = s.stride[2], OW = s.out_size[2]
    cdef Py_ssize_t k, c, tap, kd, kh, kw, off, lo, hi, i_d, i_h, i, ow, n, e, first, last
    cdef const PanelSegment* seg
    cdef const floating* src
    cdef floating* d
    for k in range(K):
        decode_tap(k, s, &c, &kd, &kh, &kw)
        off = kw * s.dilation[2] - s.pad[2]
        output_range(off, sw, W, OW, &lo, &hi)
        for e in range(n_segments):
            seg = &segments[e]
            n = seg.length
            ow = seg.ow
            d = dst + (seg.q // NR) * K * NR + k * NR + seg.q % NR
            i_d = seg.d0 + kd * s.dilation[0]
            i_h = seg.h0 + kh * s.dilation[1]
            if i_d < 0 or i_d >= D or i_h < 0 or i_h >= H:
                for i in range(n):
                    d[i] = 0
                continue
            src = x_g + ((c * D + i_d) * H + i_h) * W + off
            if ow >= lo and ow + n <= hi:
                if sw == 1:
                    src = src + ow
                    for i in range(n):
                        d[i] = src[i]
                else:
                    src = src + ow * sw
                    for i in range(n):
                        d[i] = src[i * sw]
            else:
                # the columns [first, last) read the input; the others read padding
                first = lo - ow if lo > ow else 0
                last = hi - ow if hi - ow < n else n
                if last < first:
                    last = first
                for i in range(first):
                    d[i] = 0
                for i in range(first, last):
                    d[i] = src[(ow + i) * sw]
                for i in range(last, n):
                    d[i] = 0
        if count % NR:
            d = dst + (count // NR) * K * NR + k * NR
            for i in range(count % NR, NR):
                d[i] = 0


cdef inline void gemm_tile(int shape, Py_ssize_t k_len, const floating* a, const floating* b,
                           Py_ssize_t b_stride, const Py_ssize_t* offsets, floating* c,
                           Py_ssize_t ldc, Py_ssize_t m_valid, Py_ssize_t n_valid,
                           const floating* bias, bint accumulate) noexcept nogil:
    """The register tile `shape`, or for a last panel of fewer vectors its tail (_simd.h)."""
    if floating is float:
        fc_gemm_f32(shape == TILE_NARROW, k_len, a, b, b_stride, offsets, c, ldc, m_valid,
                    n_valid, bias, accumulate)
    else:
        fc_gemm_f64(shape == TILE_NARROW, k_len, a, b, b_stride, offsets, c, ldc, m_valid,
                    n_valid, bias, accumulate)


cdef void multiply_tile(Py_ssize_t K, Py_ssize_t m_panels, Py_ssize_t channels,
                        Py_ssize_t count, Py_ssize_t NR, const floating* a_packed,
                        const floating* b_packed, floating* out, Py_ssize_t out_plane,
                        const floating* bias, bint accumulate=False,
                        int shape=TILE_WIDE, const Py_ssize_t* b_offsets=NULL) noexcept nogil:
    """out[c, j] (+)= bias[c] + sum_k a[c, k] b[k, j] for one group's `channels` and `count`
    positions, K in blocks whose A and B panel slices stay in L1 while C accumulates. With
    `b_offsets`, B is read in place: b[k, j] = b_packed[b_offsets[k] + j]."""
    cdef Py_ssize_t MR = tile_mr(shape)
    cdef Py_ssize_t k_block = K_BLOCK_BYTES // (MR * sizeof(floating))
    cdef Py_ssize_t k0, k_len, panel, j, m_valid, n_valid
    k0 = 0
    while k0 < K:
        k_len = K - k0 if K - k0 < k_block else k_block
        for panel in range(m_panels):
            m_valid = channels - panel * MR if channels - panel * MR < MR else MR
            for j in range((count + NR - 1) // NR):
                n_valid = count - j * NR if count - j * NR < NR else NR
                gemm_tile(shape, k_len, a_packed + panel * K * MR + k0 * MR,
                          b_packed + j * NR if b_offsets != NULL
                          else b_packed + j * K * NR + k0 * NR, NR,
                          b_offsets + k0 if b_offsets != NULL else NULL,
                          out + panel * MR * out_plane + j * NR, out_plane, m_valid, n_valid,
                          bias + panel * MR if bias != NULL and k0 == 0 else NULL,
                          accumulate or k0 > 0)
        k0 += k_block


ctypedef struct PackedGeometry:
    Py_ssize_t MR, NR       # the register tile
    Py_ssize_t K            # GEMM depth: taps of one group
    Py_ssize_t out_plane, in_plane
    Py_ssize_t m_panels     # weight panels of MR output channels per group
    Py_ssize_t tile         # positions per tile: tile_panels panels of NR


cdef PackedGeometry packed_geometry(const ConvShape* s, int shape, Py_ssize_t tile_panels,
                                    floating* dummy) noexcept nogil:
    """The sizes every packed kernel starts from, for register tile `shape`."""
    cdef PackedGeometry geo
    geo.MR = tile_mr(shape)
    geo.NR = tile_nr(shape, dummy)
    geo.K = s.c_in_g * s.kernel[0] * s.kernel[1] * s.kernel[2]
    geo.out_plane = s.out_size[0] * s.out_size[1] * s.out_size[2]
    geo.in_plane = s.in_size[0] * s.in_size[1] * s.in_size[2]
    geo.m_panels = (s.c_out_g + geo.MR - 1) // geo.MR
    geo.tile = tile_panels * geo.NR
    return geo


cdef int packed_shared_panels(const floating* x, const floating* a_packed,
                              const floating* bias, floating* out, const ConvShape* s,
                              Py_ssize_t tile_panels, Py_ssize_t channel_panels, int shape,
                              int num_threads) noexcept nogil:
    """conv_packed for planes with few tiles: per (image, group), all tiles are unfolded into
    one shared panel buffer (in parallel), then (tile, block of channels) items multiply."""
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
            for t in prange(tiles, schedule='static'):
                if segments == NULL:
                    continue
                p_begin = t * tile
                count = out_plane - p_begin if out_plane - p_begin < tile else tile
                n_segments = panel_segments(s, p_begin, count, NR, segments)
                im2col_panels(x + (n * s.c_in + g * s.c_in_g) * in_plane, s, segments,
                              n_segments, count, NR, shared + t * tile_size)
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
                          a_packed + (g * m_panels + first_panel) * K * MR,
                          shared + t * tile_size,
                          out + (n * s.c_out + g * s.c_out_g + first_panel * MR) * out_plane
                          + p_begin, out_plane,
                          bias + g * s.c_out_g + first_panel * MR if bias != NULL else NULL,
                          False, shape)
    return failed


cdef int conv_packed(const floating* x, const floating* w, const floating* bias, floating* out,
                     const ConvShape* s, Py_ssize_t tile_panels, Py_ssize_t channel_panels,
                     int shape, int num_threads) noexcept nogil:
    cdef PackedGeometry geo = packed_geometry(s, shape, tile_panels, <floating*> NULL)
    cdef Py_ssize_t MR = geo.MR, NR = geo.NR, K = geo.K, out_plane = geo.out_plane
    cdef Py_ssize_t in_plane = geo.in_plane, m_panels = geo.m_panels, tile = geo.tile
    cdef Py_ssize_t tiles = (out_plane + tile - 1) // tile
    cdef Py_ssize_t channel_blocks = (m_panels + channel_panels - 1) // channel_panels
    cdef Py_ssize_t items = s.n * s.groups * tiles * channel_blocks
    cdef Py_ssize_t item, t, g, n, p_begin, count, block, first_panel, panels
    cdef floating* a_packed = <floating*> fc_workspace(
        WS_PACKED_WEIGHTS, s.groups * m_panels * K * MR * sizeof(floating))
    cdef floating* b_packed = NULL
    cdef PanelSegment* segments = NULL
    cdef Py_ssize_t n_segments
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if a_packed == NULL:
        return 1
    pack_weights(w, s, a_packed, shape)
    if channel_blocks > 1:
        # Few tiles per plane, so output channels are split too: unfold each plane once into
        # panels that every channel block shares, instead of once per block.
        failed = packed_shared_panels(x, a_packed, bias, out, s, tile_panels, channel_panels,
                                      shape, num_threads)
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
                          count, NR, b_packed)
            multiply_tile(K, panels, s.c_out_g - first_panel * MR, count, NR,
                          a_packed + (g * m_panels + first_panel) * K * MR, b_packed,
                          out + (n * s.c_out + g * s.c_out_g + first_panel * MR) * out_plane
                          + p_begin, out_plane,
                          bias + g * s.c_out_g + first_panel * MR if bias != NULL else NULL,
                          False, shape)
    fc_workspace_trim()   # the main thread's buffers; the other threads' are tile-sized
    return failed


# ---------------------------------------------------------------------------------------------
# packed, phase-grid unfolding: for planes of few positions per row the segment-by-segment
# im2col above costs more than the GEMM (a 14-wide row is a loop of its own per tap). Instead
# each (image, group) is first copied once into a zero-padded buffer split by stride phase
# along every axis. In that buffer the input read by tap k at output (od, oh, ow) sits at
# offset[k] + (od * Q1 + oh) * Q2 + ow, where Q are the phase lengths: on this "extended"
# grid (rows of Q2 >= OW positions, planes of Q1 >= OH rows) every tap's operand is one
# contiguous run, which the micro-kernel reads in place (no B panels). The positions past OW
# (OH) are computed and dropped. Each output is the same sum in the same order as above: the result
# is bit-for-bit that of conv_packed.

cdef void phase_grid(const ConvShape* s, Py_ssize_t slack, Py_ssize_t batch,
                     PhaseGrid* pg) noexcept nogil:
    """The phase grid of `s` (PhaseGrid in _conv.pxd) for `batch` images side by side in each
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


cdef extern from "_simd.h":
    void fc_copy_rows(void* dst, size_t dst_stride, const void* src, size_t src_stride,
                      size_t bytes, Py_ssize_t rows) noexcept nogil
    void fc_split_pairs_rows_f32(const float* src, Py_ssize_t src_stride, float* even,
                                 float* odd, Py_ssize_t dst_stride, Py_ssize_t n,
                                 Py_ssize_t rows) noexcept nogil
    void fc_split_pairs_rows_f64(const double* src, Py_ssize_t src_stride, double* even,
                                 double* odd, Py_ssize_t dst_stride, Py_ssize_t n,
                                 Py_ssize_t rows) noexcept nogil


cdef inline void split_pairs_rows(const floating* src, Py_ssize_t src_stride, floating* even,
                                  floating* odd, Py_ssize_t dst_stride, Py_ssize_t n,
                                  Py_ssize_t rows) noexcept nogil:
    """even[r * dst_stride + i] = src[r * src_stride + 2i], odd[...] = src[... + 2i + 1]
    for i < n, r < rows (vector shuffles, _simd.h)."""
    if floating is float:
        fc_split_pairs_rows_f32(src, src_stride, even, odd, dst_stride, n, rows)
    else:
        fc_split_pairs_rows_f64(src, src_stride, even, odd, dst_stride, n, rows)


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


cdef int conv_packed_phase(const floating* x, const floating* w, const floating* bias,
                           floating* out, const ConvShape* s, Py_ssize_t tile_panels, int shape,
                           int num_threads) noexcept nogil:
    """conv_packed with phase-grid unfolding; work items are whole (image, group) planes."""
    cdef PackedGeometry geo = packed_geometry(s, shape, tile_panels, <floating*> NULL)
    cdef Py_ssize_t MR = geo.MR, NR = geo.NR, K = geo.K, out_plane = geo.out_plane
    cdef Py_ssize_t in_plane = geo.in_plane, m_panels = geo.m_panels, tile = geo.tile
    cdef PhaseGrid pg
    cdef Py_ssize_t item, n, g, p_begin, count
    cdef floating* a_packed = <floating*> fc_workspace(
        WS_PACKED_WEIGHTS, s.groups * m_panels * K * MR * sizeof(floating))
    cdef Py_ssize_t* offsets = <Py_ssize_t*> fc_workspace(WS_PHASE_OFFSETS,
                                                          K * sizeof(Py_ssize_t))
    cdef floating* grid = NULL
    cdef floating* tile_out = NULL
    cdef int failed = 0
    cdef int* failed_flag = &failed
    if a_packed == NULL or offsets == NULL:
        return 1
    phase_grid(s, tile, 1, &pg)
    phase_offsets(s, &pg, offsets)
    pack_weights(w, s, a_packed, shape)
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
                              a_packed + g * m_panels * K * MR, grid + p_begin, tile_out, tile,
                              bias + g * s.c_out_g if bias != NULL else NULL, False, shape,
                              offsets)
                scatter_extended(tile_out, tile, s.c_out_g, p_begin, count, s, &pg,
                                 out + (n * s.c_out + g * s.c_out_g) * out_plane, out_plane)
                p_begin = p_begin + tile
    fc_workspace_trim()
    return failed


def phase_grid_shape(tuple x_shape, tuple w_shape, tuple out_shape, tuple stride, tuple pad,
                     tuple dilation, Py_ssize_t groups):
    """(extended positions, buffer elements without slack) of the phase-grid unfolding."""
    cdef ConvShape s = make_shape(x_shape, w_shape, out_shape, stride, pad, dilation, groups)
    cdef PhaseGrid pg
    phase_grid(&s, 0, 1, &pg)
    return pg.positions, pg.size


# ---------------------------------------------------------------------------------------------
# Entry point from Python: 5-d C-contiguous arrays, already validated by fastconv/convolution.py.

def conv_forward(const floating[:, :, :, :, ::1] x, const floating[:, :, :, :, ::1] w,
                 const floating[::1] bias, floating[:, :, :, :, ::1] out,
                 tuple stride, tuple pad, tuple dilation, Py_ssize_t groups,
                 str algorithm, Py_ssize_t band, int num_threads, Py_ssize_t channel_panels=1,
                 int tile_shape=TILE_WIDE, bint phase=False):
    """out := conv(x, w) + bias with zero padding `pad` before each axis, by `algorithm`.
    `band`: output rows per im2col band, or position panels per tile for 'packed', which
    also splits output channels into blocks of `channel_panels` weight panels, or unfolds
    through the phase grid if `phase` (then `channel_panels` is ignored)."""
    cdef ConvShape s = make_shape(tuple([x.shape[i] for i in range(5)]), tuple([w.shape[i] for i in range(5)]),
                                  tuple([out.shape[i] for i in range(5)]),
                                  stride, pad, dilation, groups)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef int status = 0
    cdef int kind = {"direct": 0, "im2col": 1, "gemm1x1": 2, "packed": 3}[algorithm]
    if out.shape[0] == 0:
        return
    with nogil:
        if kind == 0:
            status = conv_direct(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                 &out[0, 0, 0, 0, 0], &s, num_threads)
        elif kind == 3 and phase:
            status = conv_packed_phase(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                       &out[0, 0, 0, 0, 0], &s, band, tile_shape, num_threads)
        elif kind == 3:
            status = conv_packed(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                                 &out[0, 0, 0, 0, 0], &s, band, channel_panels, tile_shape,
                                 num_threads)
        else:
            status = conv_gemm(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                               &out[0, 0, 0, 0, 0], &s, kind == 2, band, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a convolution work buffer")


def adjoint_phase_weight(const floating[:, :, :, :, ::1] w, floating[:, :, :, :, ::1] out,
                         Py_ssize_t groups, tuple phase, tuple stride):
    """out[g * C_in_g + ci, co, j] := w[g * C_out_g + co, ci, k(j)] with, per axis,
    k(j) = phase + (M - 1 - j) * stride (M = out's size along the axis): the reversed taps of one stride phase, channels transposed per group — the forward weight
    of one phase of the transposed convolution (see fastconv/conv_grad.py, subpixel)."""
    cdef Py_ssize_t c_out = w.shape[0], c_in_g = w.shape[1]
    cdef Py_ssize_t c_out_g = c_out // groups
    cdef Py_ssize_t M0 = out.shape[2], M1 = out.shape[3], M2 = out.shape[4]
    cdef Py_ssize_t f0 = phase[0], f1 = phase[1], f2 = phase[2]
    cdef Py_ssize_t s0 = stride[0], s1 = stride[1], s2 = stride[2]
    cdef Py_ssize_t g, ci, co, j0, j1, j2
    with nogil:
        for g in range(groups):
            for ci in range(c_in_g):
                for co in range(c_out_g):
                    for j0 in range(M0):
                        for j1 in range(M1):
                            for j2 in range(M2):
                                out[g * c_in_g + ci, co, j0, j1, j2] = w[
                                    g * c_out_g + co, ci, f0 + (M0 - 1 - j0) * s0,
                                    f1 + (M1 - 1 - j1) * s1, f2 + (M2 - 1 - j2) * s2]
