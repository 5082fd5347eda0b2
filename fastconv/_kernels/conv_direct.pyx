# cython: language_level=3
"""Direct convolution kernels: the forward pass (CONV_DIRECT) and its transpose, the input
gradient (INPUT_GRAD_DIRECT), as plain loops over the taps. Best when a GEMM would be thin:
few channels per group, depthwise, 1-channel images.

One kernel serves 1d, 2d and 3d (see conv_shape.pxd) and float32/float64 through the fused
type `floating`. The Python layer validates everything and pads non-zero padding modes
beforehand; these kernels trust their inputs and only ever pad with zeros, implicitly.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.string cimport memset, memcpy

from fastconv._kernels.conv_shape cimport ConvShape, make_shape, output_range, shape5
from fastconv._kernels.kernel_ids cimport CONV_DIRECT, INPUT_GRAD_DIRECT
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
# Strided rows have no contiguous vector of inputs and go tap by tap.

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
