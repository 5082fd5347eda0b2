# cython: language_level=3
"""Direct convolution kernels: the forward pass (CONV_DIRECT) and its transpose, the input
gradient (INPUT_GRAD_DIRECT), as plain loops over the taps. Best when a GEMM would be thin:
few channels per group, depthwise, 1-channel images.

One kernel serves 1d, 2d and 3d (see conv_shape.pxd) and float32/float64 through the fused
type `floating`. The Python layer validates everything and pads non-zero padding modes
beforehand; these kernels trust their inputs and only ever pad with zeros, implicitly.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.string cimport memset, memcpy

from fastconv._kernels.conv_shape cimport ConvShape, make_shape, output_range, shape5
from fastconv._kernels.kernel_ids cimport CONV_DIRECT, INPUT_GRAD_DIRECT
from fastconv._kernels.pair_rows cimport copy_strided, split_pairs, fc_copy_short, \
    fc_zero_short
from fastconv._kernels.workspace cimport fc_workspace

# Slots of the per-thread workspace (workspace.h): buffers reused from call to call.
cdef enum:
    WS_DIRECT_XS, WS_DIRECT_WS, WS_DIRECT_LINES, WS_DIRECT_TAIL


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
                    const ConvShape* s) noexcept nogil:
    """Copy one input row into its zero-padded line. With a stride sw along W the line holds
    direct_phases phases of direct_phase_length: phase q, column m = the padded row's column
    m * sw + q, so output column o reads tap kw at column o + kw * dw // sw of phase
    (kw * dw) % sw: contiguous.
    Inline copies and zeroing only: a row is a few hundred bytes (and a call per row cost as
    much as its data)."""
    cdef Py_ssize_t W = s.in_size[2], pad = s.pad[2], sw = s.stride[2]
    cdef Py_ssize_t phases = direct_phases(s), phase_len = line_len // phases
    cdef Py_ssize_t q, first, end, even, odd, pairs, i
    cdef floating* even_dst
    cdef floating* odd_dst
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
# Entry points from Python: 5-d C-contiguous arrays, already validated by the Python layer.

def conv_forward(int kernel, const floating[:, :, :, :, ::1] x,
                 const floating[:, :, :, :, ::1] w, const floating[::1] bias,
                 floating[:, :, :, :, ::1] out, tuple stride, tuple pad, tuple dilation,
                 Py_ssize_t groups, int num_threads):
    """out := conv(x, w) + bias (bias: empty for none) with zero padding `pad` before each
    axis, by the direct loops. `kernel`: CONV_DIRECT."""
    cdef ConvShape s = make_shape(shape5(x.shape), shape5(w.shape), shape5(out.shape),
                                  stride, pad, dilation, groups)
    cdef const floating* bias_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef int status = 0
    if kernel != CONV_DIRECT:
        raise ValueError(f"conv_direct.conv_forward does not run kernel {kernel}")
    if out.shape[0] == 0:
        return
    with nogil:
        status = conv_direct(&x[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], bias_ptr,
                             &out[0, 0, 0, 0, 0], &s, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a convolution work buffer")


def input_grad(int kernel, const floating[:, :, :, :, ::1] g,
               const floating[:, :, :, :, ::1] w, floating[:, :, :, :, ::1] dx,
               tuple stride, tuple pad, tuple dilation, Py_ssize_t groups, int num_threads):
    """dx := the input gradient of conv(dx-shaped input, w) for output gradient g (zero
    padding `pad` before each axis), row by row. `kernel`: INPUT_GRAD_DIRECT."""
    cdef ConvShape s = make_shape(shape5(dx.shape), shape5(w.shape), shape5(g.shape),
                                  stride, pad, dilation, groups)
    cdef int status = 0
    if kernel != INPUT_GRAD_DIRECT:
        raise ValueError(f"conv_direct.input_grad does not run kernel {kernel}")
    if dx.shape[0] == 0:
        return
    with nogil:
        status = input_grad_direct(&g[0, 0, 0, 0, 0], &w[0, 0, 0, 0, 0], &dx[0, 0, 0, 0, 0],
                                   &s, num_threads)
    if status != 0:
        raise MemoryError("fastconv: could not allocate a work buffer")
