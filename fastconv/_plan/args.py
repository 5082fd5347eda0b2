"""Argument normalization shared by every operator: one place that turns what users pass
(ints or tuples, array-likes, dtypes) into clean values, or raises an error that names the
argument, what was expected and what was given.
"""
import functools
import numbers

import numpy as np

SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}

# Largest stride, dilation or padding accepted: the kernels do their index arithmetic in
# 64-bit integers, and a padded extent, a stride times a row length or an output count must
# stay far below 2**63 for every product they form. No real array comes near this.
SIZE_LIMIT = 2**32
# Largest output, in bytes, that NumPy (and a 64-bit address) can describe.
MAX_BYTES = np.iinfo(np.intp).max


def is_int(value):
    """True for Python and NumPy integers (bool is not a size)."""
    if type(value) is int:   # the usual case, without the abstract-class checks
        return True
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def ntuple(value, n, name, minimum=None):
    """An int or a sequence of `n` ints as a tuple of `n` ints, each >= `minimum` if given."""
    if is_int(value):
        values = (int(value),) * n
    elif isinstance(value, (tuple, list, np.ndarray)) and len(value) == n \
            and all(is_int(v) for v in value):
        values = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{name} must be an int or a sequence of {n} ints; got {value!r}")
    if minimum is not None and any(v < minimum for v in values):
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}; got {value!r}")
    if any(v > SIZE_LIMIT for v in values):
        raise ValueError(f"{name} must be at most 2**32 = {SIZE_LIMIT}; got {value!r}")
    return values


def positive_int(value, name):
    if not is_int(value):
        raise TypeError(f"{name} must be a positive int; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def choice(value, name, allowed):
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def as_array(value, name):
    """A NumPy view of `value` when possible (arrays, buffers, DLPack), without copying."""
    if isinstance(value, np.ndarray):
        return value
    if value is None:
        raise TypeError(f"{name} must be an array; got None")
    if hasattr(value, "__dlpack__"):
        # DLPack first, even where __array__ exists too (torch, JAX): it is a view by contract,
        # while __array__ may copy. A device array or a tensor that refuses export is an error,
        # never a silent copy.
        try:
            return np.from_dlpack(value)
        except (TypeError, RuntimeError, BufferError, ValueError) as err:
            raise TypeError(f"{name}: cannot view this DLPack array from NumPy on the CPU "
                            f"({err})") from None
    try:
        array = np.asarray(value)
    except Exception as err:  # ragged lists and exotic objects
        raise TypeError(f"{name} must be a real numeric array; got {type(value).__name__} "
                        f"({err})") from None
    return array


def compute_dtype(**arrays):
    """The dtype fastconv computes in for these arrays: float32 or float64.

    NumPy's promotion picks the common type; integers and bools compute in float64 (as NumPy's
    true division would), float16 in float32. Complex, object, string and extended-precision
    arrays raise TypeError naming the argument.
    """
    present = {name: a for name, a in arrays.items() if a is not None}
    chars = {a.dtype.char for a in present.values()}
    if chars <= {"f", "d"} and chars:   # float32/float64 only: the common, quick case
        return np.dtype(np.float64 if "d" in chars else np.float32)
    for name, a in present.items():
        kind = a.dtype.kind
        if kind == "c":
            raise TypeError(f"{name} must be real; got complex dtype {a.dtype}")
        if kind not in "biuf" or (kind == "f" and a.dtype.itemsize > 8):
            raise TypeError(f"{name} must have a real numeric dtype (float32 or float64 "
                            f"computed natively); got {a.dtype}")
    common = np.result_type(*present.values())
    if common.kind in "biu":
        return np.dtype(np.float64)
    if common.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def check_output_size(shape, dtype, names):
    """Raise ValueError if an output of `shape` would not fit in memory addressing: its
    element count or byte size past what int64 can count (`names` caused it)."""
    elements = 1
    for n in shape:
        elements *= int(n)
    if elements * np.dtype(dtype).itemsize > MAX_BYTES or any(n > MAX_BYTES for n in shape):
        raise ValueError(f"the output shape {tuple(shape)} would take more than 2**63 bytes; "
                         f"check {names}")


def check_out(out, shape, dtype):
    """Validate a user-supplied output array, or allocate one."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray; got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}; got {out.shape}")
    if out.dtype != dtype:
        raise ValueError(f"out must have dtype {dtype}; got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous; got a non-contiguous array")
    if not out.flags.writeable:
        raise ValueError("out must be writeable; got a read-only array")
    return out


def overlaps(out, *arrays):
    """True if `out` may share memory with any of `arrays` (writing it would corrupt them)."""
    return any(a is not None and np.may_share_memory(out, a) for a in arrays)


def shape_argument(value, name, ndim):
    """A shape given as a sequence of `ndim` non-negative ints, as a tuple."""
    if not isinstance(value, (tuple, list)) or not all(is_int(v) for v in value):
        raise TypeError(f"{name} must be a tuple of {ndim} ints; got {value!r}")
    if len(value) != ndim:
        raise ValueError(f"{name} must have {ndim} entries; got {tuple(value)}")
    if any(v < 0 for v in value):
        raise ValueError(f"{name} must be non-negative; got {tuple(value)}")
    return tuple(int(v) for v in value)


def real_array(value, name):
    """`value` viewed as an array of a real numeric dtype (bool, integers, float16-64), kept
    as it is (SciPy's filters keep the caller's dtype); complex and other dtypes raise
    TypeError naming `name`."""
    array = as_array(value, name)
    if array.dtype.kind == "c":
        raise TypeError(f"{name} must be real; got complex dtype {array.dtype} (SciPy handles "
                        f"complex input)")
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and array.dtype.itemsize > 8):
        raise TypeError(f"{name} must have a real numeric dtype; got {array.dtype}")
    return array


def is_channels_last(a):
    """True for a 4-d array laid out channels-last: logically (N, C, H, W), its memory that of
    the (N, H, W, C) array ``a.transpose(0, 2, 3, 1)`` (PyTorch's ``channels_last``)."""
    return (isinstance(a, np.ndarray) and a.ndim == 4 and not a.flags.c_contiguous
            and a.transpose(0, 2, 3, 1).flags.c_contiguous)


def as_channels_last(a):
    """`a` (N, C, H, W) with channels-last memory (a copy unless it already is)."""
    if is_channels_last(a):
        return a
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def keeps_channels_last(position, name):
    """Decorator: where the argument at `position` (or keyword `name`) is a channels-last
    array, the 4-d arrays the function returns are laid out channels-last too, as PyTorch's
    operators keep their input's memory format. The kernels behind such a function are
    channels-first: the input is read through a copy, the output copied back."""
    def decorate(fn):
        @functools.wraps(fn)
        def keeping(*args, **kwargs):
            result = fn(*args, **kwargs)
            source = args[position] if len(args) > position else kwargs.get(name)
            if kwargs.get("out") is not None or not is_channels_last(source):
                return result
            if isinstance(result, tuple):
                return tuple(as_channels_last(r) if isinstance(r, np.ndarray) and r.ndim == 4
                             else r for r in result)
            return as_channels_last(result) if result.ndim == 4 else result
        return keeping
    return decorate
