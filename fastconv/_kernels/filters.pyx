# cython: language_level=3
"""N-d filtering of one array with one weight array (scipy.ndimage's correlate, the separable
filters' 1-d passes, and scipy.signal's correlate beyond three dimensions).

The output is a C-contiguous array of shape (O_0, ..., O_{d-1}); the input a C-contiguous
array of any shape (I_0, ..., I_{d-1}); the weights a (R, K) array, R = K_0 * ... * K_{d-2}
rows of K = K_{d-1} taps. Along each axis a, a table src_a of O_a + K_a - 1 entries says which
input index sits at each position of the extended axis (-1: the constant `cval`), so that

    out[i] = sum over t, k of  w[t, k] * x[src_0[i_0 + t_0], ..., src_{d-1}[i_{d-1} + k]].

Every border mode, origin and output size (scipy.signal's 'full', 'same', 'valid') is a choice
of tables made by the Python layer (fastconv/_ops/ndimage.py). Each output row gathers the R
input rows its weight rows meet, then runs the vector loop of filter_rows.h on the stretch
[j0, j1) of the last axis whose taps all fall inside the input row (the same for every row),
and the same loop on copies of the inputs made through src_{d-1} for the rest (the borders).
Kernels trust their inputs.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free

cdef extern from "filter_rows.h":
    void fc_filter_row_f32(const float* const* src, const float* const* w, Py_ssize_t nrows,
                           Py_ssize_t taps, float c, float* out, Py_ssize_t j0,
                           Py_ssize_t j1) noexcept nogil
    void fc_filter_row_f64(const double* const* src, const double* const* w, Py_ssize_t nrows,
                           Py_ssize_t taps, double c, double* out, Py_ssize_t j0,
                           Py_ssize_t j1) noexcept nogil
    enum:
        FC_VEC_f32
        FC_VEC_f64
    void fc_filter_short_f32(const float* const* src, const float* const* w, Py_ssize_t nrows,
                             Py_ssize_t taps, float c, float* out, Py_ssize_t n) noexcept nogil
    void fc_filter_short_f64(const double* const* src, const double* const* w,
                             Py_ssize_t nrows, Py_ssize_t taps, double c, double* out,
                             Py_ssize_t n) noexcept nogil
    Py_ssize_t fc_filter_rows4_f32(const float* const* src, const float* const* w,
                                   const unsigned char* lo, const unsigned char* hi,
                                   Py_ssize_t n, Py_ssize_t taps, const float* c,
                                   float* const* out, Py_ssize_t rows, Py_ssize_t j0,
                                   Py_ssize_t j1) noexcept nogil
    Py_ssize_t fc_filter_rows4_f64(const double* const* src, const double* const* w,
                                   const unsigned char* lo, const unsigned char* hi,
                                   Py_ssize_t n, Py_ssize_t taps, const double* c,
                                   double* const* out, Py_ssize_t rows, Py_ssize_t j0,
                                   Py_ssize_t j1) noexcept nogil
    void fc_filter_columns4_f32(const float* const* src, const float* w, Py_ssize_t n,
                                const float* c, float* const* out, Py_ssize_t len) noexcept nogil
    void fc_filter_columns4_f64(const double* const* src, const double* w, Py_ssize_t n,
                                const double* c, double* const* out,
                                Py_ssize_t len) noexcept nogil

cdef enum:
    MAX_DIMS = 64        # NumPy 2's limit
    BORDER_BLOCK = 64    # border outputs computed per copy of their inputs
    GROUP = 4            # output rows computed together (they share most input rows)
    SEGMENT = 256        # outputs of each row of a group per turn: the shared inputs stay in L1


ctypedef struct FilterShape:
    int ndim
    Py_ssize_t out_size[MAX_DIMS]
    Py_ssize_t in_stride[MAX_DIMS]      # elements
    Py_ssize_t taps[MAX_DIMS]
    const int64_t* src[MAX_DIMS]        # per axis: O_a + K_a - 1 entries
    Py_ssize_t rows                     # R: weight rows
    Py_ssize_t total_rows               # output rows: O_0 * ... * O_{d-2}
    Py_ssize_t chunks                   # pieces each output row is cut into
    Py_ssize_t width                    # outputs per piece (the last may have fewer)
    Py_ssize_t j0, j1                   # the vector stretch of the last axis


cdef inline void filter_row_stretch(const floating* const* src, const floating* const* w,
                                    Py_ssize_t nrows, Py_ssize_t taps, floating c,
                                    floating* out, Py_ssize_t j0,
                                    Py_ssize_t j1) noexcept nogil:
    if floating is float:
        fc_filter_row_f32(src, w, nrows, taps, c, out, j0, j1)
    else:
        fc_filter_row_f64(src, w, nrows, taps, c, out, j0, j1)


cdef inline Py_ssize_t filter_rows4(const floating* const* src, const floating* const* w,
                                    const unsigned char* lo, const unsigned char* hi,
                                    Py_ssize_t n, Py_ssize_t taps, const floating* c,
                                    floating* const* out, Py_ssize_t rows, Py_ssize_t j0,
                                    Py_ssize_t j1) noexcept nogil:
    if floating is float:
        return fc_filter_rows4_f32(src, w, lo, hi, n, taps, c, out, rows, j0, j1)
    else:
        return fc_filter_rows4_f64(src, w, lo, hi, n, taps, c, out, rows, j0, j1)


cdef inline bint next_tap_offset(const FilterShape* s, const Py_ssize_t* index,
                                 Py_ssize_t* tap, int axes, Py_ssize_t* offset) noexcept nogil:
    """offset := where the input row of taps tap[0 .. axes-1] from output index[] starts,
    True if it lies inside the input (else the mode's constant stands there); then tap[]
    advances to the next combination (an odometer: no division per row)."""
    cdef int a
    cdef Py_ssize_t q
    cdef bint inside = True
    offset[0] = 0
    for a in range(axes):
        q = s.src[a][index[a] + tap[a]]
        if q < 0:
            inside = False
        offset[0] += q * s.in_stride[a]
    a = axes - 1
    while a >= 0:
        tap[a] += 1
        if tap[a] < s.taps[a]:
            break
        tap[a] = 0
        a -= 1
    return inside


cdef Py_ssize_t shared_rows(const floating* x, const floating* weight, const FilterShape* s,
                            Py_ssize_t row, Py_ssize_t g, const floating** src,
                            const floating** w, unsigned char* lo,
                            unsigned char* hi) noexcept nogil:
    """The input rows that output rows row..row+g-1 (consecutive along axis d-2) read, for
    filter_rows4: per tap combination of the axes before d-2, the extended positions
    u < K_{d-2} + g - 1 of axis d-2, each read by outputs lo..hi with weight row
    (combination, u - m). Rows outside the input are left out (the caller's constants hold
    them). Returns their count."""
    cdef int d = s.ndim, a
    cdef Py_ssize_t K = s.taps[d - 1], Kh = s.taps[d - 2], outer
    cdef Py_ssize_t index[MAX_DIMS]
    cdef Py_ssize_t tap[MAX_DIMS]
    cdef Py_ssize_t rest = row, o, u, m, q, offset, n = 0, first, last
    if Kh == 0:
        return 0
    outer = s.rows // Kh
    for a in range(d - 2, -1, -1):
        index[a] = rest % s.out_size[a]
        rest = rest // s.out_size[a]
        tap[a] = 0
    for o in range(outer):
        if not next_tap_offset(s, index, tap, d - 2, &offset):
            continue
        for u in range(Kh + g - 1):
            q = s.src[d - 2][index[d - 2] + u]
            if q < 0:
                continue
            first = u - Kh + 1 if u - Kh + 1 > 0 else 0
            last = u if u < g - 1 else g - 1
            src[n] = x + offset + q * s.in_stride[d - 2]
            lo[n] = <unsigned char> first
            hi[n] = <unsigned char> last
            for m in range(first, last + 1):
                w[4 * n + m] = weight + (o * Kh + u - m) * K
            n += 1
    return n


cdef inline Py_ssize_t vector_lanes(floating dummy) noexcept nogil:
    if floating is float:
        return FC_VEC_f32
    else:
        return FC_VEC_f64


cdef inline void filter_short(const floating* const* src, const floating* const* w,
                              Py_ssize_t nrows, Py_ssize_t taps, floating c, floating* out,
                              Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_filter_short_f32(src, w, nrows, taps, c, out, n)
    else:
        fc_filter_short_f64(src, w, nrows, taps, c, out, n)


cdef inline void filter_columns4(const floating* const* src, const floating* w, Py_ssize_t n,
                                 const floating* c, floating* const* out,
                                 Py_ssize_t length) noexcept nogil:
    if floating is float:
        fc_filter_columns4_f32(src, w, n, c, out, length)
    else:
        fc_filter_columns4_f64(src, w, n, c, out, length)


cdef int filter_items(const floating* x, floating* out, const floating* weight,
                      const floating* row_sums, floating cval, const FilterShape* s,
                      Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    """Items first..last-1: item = piece * total_rows + row. Up to GROUP consecutive items of
    one piece run together, their vector stretches segment by segment, so that the input rows
    they share are read from L1 by all of them."""
    cdef int d = s.ndim, a
    cdef Py_ssize_t L = s.out_size[d - 1], K = s.taps[d - 1], R = s.rows
    cdef Py_ssize_t ext_len = BORDER_BLOCK + K - 1
    cdef const int64_t* src_last = s.src[d - 1]
    # per output row of the group and weight row: its input row and its taps; per weight row,
    # its border block extended by the mode
    # and the group's shared input rows (at most GROUP * R entries, GROUP weight rows each)
    cdef const floating** rows = <const floating**> malloc(
        (2 * GROUP + 1 + GROUP * (GROUP + 1)) * R * sizeof(void*))
    cdef floating* ext = <floating*> malloc(R * ext_len * sizeof(floating))
    cdef unsigned char* ent_lo = <unsigned char*> malloc(2 * GROUP * R)
    if rows == NULL or ext == NULL or ent_lo == NULL:
        free(rows)
        free(ext)
        free(ent_lo)
        return -1
    cdef const floating** wrows = rows + GROUP * R
    cdef const floating** ext_rows = rows + 2 * GROUP * R
    cdef const floating** ent_src = ext_rows + R
    cdef const floating** ent_w = ent_src + GROUP * R
    cdef unsigned char* ent_hi = ent_lo + GROUP * R
    cdef floating* outs[GROUP]
    cdef Py_ssize_t n, e, done
    cdef Py_ssize_t nvalid[GROUP]
    cdef floating c[GROUP]
    cdef Py_ssize_t index[MAX_DIMS]
    cdef Py_ssize_t tap[MAX_DIMS]
    cdef Py_ssize_t item, row, piece, t, rest, offset, c0, c1, v0, v1, shift, g, m, seg, end
    cdef const floating** rows_m
    cdef const floating** wrows_m
    for t in range(R):
        ext_rows[t] = ext + t * ext_len
    item = first
    while item < last:
        piece = item // s.total_rows
        row = item - piece * s.total_rows
        # the group: up to GROUP items of the same piece
        g = last - item
        if g > GROUP:
            g = GROUP
        if g > s.total_rows - row:
            g = s.total_rows - row
        # and of one line along axis d-2 (their input rows are shifts of each other)
        if d >= 2 and g > s.out_size[d - 2] - row % s.out_size[d - 2]:
            g = s.out_size[d - 2] - row % s.out_size[d - 2]
        c0 = piece * s.width
        c1 = c0 + s.width if c0 + s.width < L else L
        for m in range(g):
            rows_m = rows + m * R
            wrows_m = wrows + m * R
            # the output row's index along the leading axes
            rest = row + m
            for a in range(d - 2, -1, -1):
                index[a] = rest % s.out_size[a]
                rest = rest // s.out_size[a]
            # the input rows its weight rows meet; rows outside the input add cval * row sum
            c[m] = 0
            nvalid[m] = 0
            for a in range(d - 1):
                tap[a] = 0
            for t in range(R):
                if next_tap_offset(s, index, tap, d - 1, &offset):
                    rows_m[nvalid[m]] = x + offset
                    wrows_m[nvalid[m]] = weight + t * K
                    nvalid[m] += 1
                else:
                    c[m] += cval * row_sums[t]
        v0 = s.j0 if s.j0 > c0 else c0
        v1 = s.j1 if s.j1 < c1 else c1
        if v0 >= v1:
            v0 = c1
            v1 = c1
        for m in range(g):
            filter_border(rows + m * R, wrows + m * R, ext_rows, nvalid[m], K, src_last, c[m],
                          cval, out + (row + m) * L, c0, v0)
            filter_border(rows + m * R, wrows + m * R, ext_rows, nvalid[m], K, src_last, c[m],
                          cval, out + (row + m) * L, v1, c1)
        if v1 > v0:
            # the stretch's input starts src_last[j0] - j0 elements into each row
            shift = src_last[s.j0] - s.j0
            done = v0
            if g > 1:
                n = shared_rows(x, weight, s, row, g, ent_src, ent_w, ent_lo, ent_hi)
                for e in range(n):
                    ent_src[e] = ent_src[e] + shift
                for m in range(g):
                    outs[m] = out + (row + m) * L
                done = filter_rows4(ent_src, ent_w, ent_lo, ent_hi, n, K, c, outs, g, v0, v1)
            for t in range(g * R):
                rows[t] = rows[t] + shift
            seg = done
            while seg < v1:
                end = seg + SEGMENT if seg + SEGMENT < v1 else v1
                for m in range(g):
                    filter_row_stretch(rows + m * R, wrows + m * R, nvalid[m], K, c[m],
                                       out + (row + m) * L, seg, end)
                seg = end
        item += g
    free(rows)
    free(ext)
    free(ent_lo)
    return 0


cdef inline void filter_border(const floating** rows, const floating** wrows,
                               const floating** ext_rows, Py_ssize_t nvalid, Py_ssize_t K,
                               const int64_t* src_last, floating c, floating cval,
                               floating* out_row, Py_ssize_t j0, Py_ssize_t j1) noexcept nogil:
    """out_row[j0:j1], outputs some of whose taps leave the input row: in blocks, each
    weight row's inputs copied through the index table (cval where it says -1), then the
    vector loop on the copies."""
    cdef Py_ssize_t jb, n, t, p, q, V = vector_lanes(c)
    cdef floating* e
    jb = j0
    while jb < j1:
        n = j1 - jb if j1 - jb < BORDER_BLOCK else BORDER_BLOCK
        for t in range(nvalid):
            e = <floating*> ext_rows[t]
            for p in range(n + K - 1):
                q = src_last[jb + p]
                e[p] = rows[t][q] if q >= 0 else cval
            # a block narrower than a vector is computed as a whole vector (its extra
            # lanes read these zeros and are not stored): no scalar loop
            for p in range(n + K - 1, V + K - 1):
                e[p] = 0
        if n < V:
            filter_short(ext_rows, wrows, nvalid, K, c, out_row + jb, n)
        else:
            filter_row_stretch(ext_rows, wrows, nvalid, K, c, out_row + jb, 0, n)
        jb += n


def correlate_tables(const floating[::1] x, tuple in_shape, floating[::1] out, tuple out_shape,
                     const floating[:, ::1] weight, const floating[::1] row_sums, tuple taps,
                     tuple src, double cval,
                     Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t width, int num_threads):
    """out := x filtered with `weight` through the per-axis index tables `src` (see above).

    x, out: the C-contiguous input and output, flattened (x not empty); weight: (R, K);
    row_sums: weight summed over its rows' taps (what a row outside the input adds);
    taps: (K_0, ..., K_{d-1}); src: d int64 arrays; [j0, j1): the stretch of the last axis
    where every tap falls inside the input row; width: the outputs of a row one item computes (a whole row, or a
    piece of a long one when rows are few, so that every thread has work)."""
    cdef FilterShape s
    cdef int d = len(out_shape), a
    cdef const int64_t[::1] table
    cdef Py_ssize_t stride = 1, R = weight.shape[0]
    cdef Py_ssize_t total_rows = 1
    if d < 1 or d > MAX_DIMS:
        raise ValueError(f"fastconv: filters take 1 to {MAX_DIMS} dimensions; got {d}")
    s.ndim = d
    for a in range(d - 1, -1, -1):
        table = src[a]
        s.src[a] = &table[0]
        s.out_size[a] = out_shape[a]
        s.taps[a] = taps[a]
        s.in_stride[a] = stride
        stride *= <Py_ssize_t> in_shape[a]
    for a in range(d - 1):
        total_rows *= s.out_size[a]
    s.rows = R
    s.total_rows = total_rows
    s.width = width if width > 0 else 1
    s.chunks = (s.out_size[d - 1] + s.width - 1) // s.width
    s.j0 = j0
    s.j1 = j1
    if total_rows == 0 or s.out_size[d - 1] == 0:
        return
    cdef Py_ssize_t items = total_rows * s.chunks
    cdef Py_ssize_t pieces = num_threads * 8 if items > num_threads * 8 else items
    cdef Py_ssize_t piece
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    cdef floating cv = <floating> cval
    with nogil:
        for piece in prange(pieces, num_threads=num_threads, schedule='dynamic'):
            if filter_items(&x[0], &out[0], &weight[0, 0], &row_sums[0], cv, &s,
                            piece * items // pieces, (piece + 1) * items // pieces) != 0:
                failed_flag[0] = 1
    if failed:
        raise MemoryError("fastconv: could not allocate the filter's row pointers")


cdef int separable_rows(const floating* x, floating* out, const floating* w_col,
                        Py_ssize_t k_col, const int64_t* src_col, const floating* w_row,
                        Py_ssize_t k_row, const int64_t* src_row, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t j0, Py_ssize_t j1, floating cval, Py_ssize_t first,
                        Py_ssize_t last) noexcept nogil:
    """Output rows first..last-1 of the (P*H, W) output, four at a time: their column pass
    into four row buffers, then each one's row pass from its buffer. No intermediate image
    is written."""
    cdef Py_ssize_t ext_len = BORDER_BLOCK + k_row - 1
    cdef Py_ssize_t n_max = k_col + 3
    cdef const floating** ptrs = <const floating**> malloc((n_max + 3) * sizeof(void*))
    cdef floating* buf = <floating*> malloc((4 * W + ext_len + 4 * n_max + 4) * sizeof(floating))
    if ptrs == NULL or buf == NULL:
        free(ptrs)
        free(buf)
        return -1
    cdef const floating** col_rows = ptrs
    cdef const floating** line = ptrs + n_max                 # [0]: a row, [1]: w_row, [2]: ext
    cdef floating* ext = buf + 4 * W
    cdef floating* weights = ext + ext_len                    # (n_max, 4)
    cdef floating* c = weights + 4 * n_max
    cdef floating* outs[4]
    cdef Py_ssize_t r, plane, i, u, m, t, q, n, group
    cdef floating wt
    for m in range(4):
        outs[m] = buf + m * W
    line[1] = w_row
    line[2] = ext
    r = first
    while r < last:
        plane = r // H
        i = r - plane * H
        group = last - r
        if group > 4:
            group = 4
        if group > H - i:
            group = H - i
        # the k + group - 1 input rows the group reads; output m weighs row u by w[u - m]
        n = 0
        for m in range(4):
            c[m] = 0
        for u in range(k_col + group - 1):
            q = src_col[i + u]
            if q >= 0:
                col_rows[n] = x + (plane * H + q) * W
            for m in range(4):
                t = u - m
                wt = w_col[t] if 0 <= t < k_col and m < group else 0
                if q >= 0:
                    weights[4 * n + m] = wt
                else:
                    c[m] += cval * wt
            if q >= 0:
                n += 1
        filter_columns4(col_rows, weights, n, c, outs, W)
        for m in range(group):
            line[0] = outs[m]
            filter_border(line, line + 1, line + 2, 1, k_row, src_row, 0, cval,
                          out + (r + m) * W, 0, j0)
            if j1 > j0:
                line[0] = outs[m] + (src_row[j0] - j0)
                filter_row_stretch(line, line + 1, 1, k_row, 0, out + (r + m) * W, j0, j1)
                line[0] = outs[m]
            filter_border(line, line + 1, line + 2, 1, k_row, src_row, 0, cval,
                          out + (r + m) * W, j1, W)
        r += group
    free(ptrs)
    free(buf)
    return 0


def separable_2d(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                 const floating[::1] w_col, const int64_t[::1] src_col,
                 const floating[::1] w_row, const int64_t[::1] src_row, double cval,
                 Py_ssize_t j0, Py_ssize_t j1, int num_threads):
    """out := x (P, H, W) filtered along H with w_col through src_col (H + len(w_col) - 1
    entries), then along W with w_row through src_row, in one pass over the image;
    0 <= j0 <= j1 <= W: the stretch of W where every tap of w_row falls inside the row (see
    vector_stretch; j0 = j1 = W where there is none)."""
    cdef Py_ssize_t H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t rows = x.shape[0] * H
    cdef Py_ssize_t pieces = num_threads * 8 if rows > num_threads * 8 else rows
    cdef Py_ssize_t piece
    cdef int failed = 0
    cdef int* failed_flag = &failed     # written through a pointer: shared, not lastprivate
    cdef floating cv = <floating> cval
    if rows == 0 or W == 0:
        return
    with nogil:
        for piece in prange(pieces, num_threads=num_threads, schedule='dynamic'):
            if separable_rows(&x[0, 0, 0], &out[0, 0, 0], &w_col[0], w_col.shape[0],
                              &src_col[0], &w_row[0], w_row.shape[0], &src_row[0], H, W, j0,
                              j1, cv, piece * rows // pieces,
                              (piece + 1) * rows // pieces) != 0:
                failed_flag[0] = 1
    if failed:
        raise MemoryError("fastconv: could not allocate the filter's row buffer")
