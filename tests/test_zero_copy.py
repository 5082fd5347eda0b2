"""The core functions accept any array that speaks DLPack or the buffer protocol, viewing its
memory without a copy when it is a CPU float32/float64 array."""
import array

import numpy as np
import pytest

import fastconv
from fastconv._plan import args as _args


def address(a):
    return a.__array_interface__["data"][0]


def test_buffer_protocol_objects_are_viewed():
    base = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5)
    for obj in (memoryview(base), array.array("f", base.ravel().tolist())):
        view = _args.as_array(obj, "input")
        assert address(view) == address(np.asarray(obj))
        assert view.dtype == np.float32
    assert address(_args.as_array(memoryview(base), "input")) == address(base)
    w = np.ones((4, 3, 3, 3), np.float32)
    np.testing.assert_array_equal(fastconv.conv2d(memoryview(base), memoryview(w)),
                                  fastconv.conv2d(base, w))


def test_torch_tensors_are_viewed_through_dlpack():
    torch = pytest.importorskip("torch")
    for dtype in (torch.float32, torch.float64):
        t = torch.randn(2, 3, 6, 6, dtype=dtype)
        view = _args.as_array(t, "input")
        assert address(view) == t.data_ptr() and view.shape == tuple(t.shape)
        w = torch.randn(4, 3, 3, 3, dtype=dtype)
        np.testing.assert_array_equal(fastconv.conv2d(t, w), fastconv.conv2d(t.numpy(), w.numpy()))
    with pytest.raises(TypeError, match="input: cannot view this DLPack array"):
        fastconv.conv2d(torch.ones(1, 1, 4, 4, requires_grad=True), np.ones((1, 1, 3, 3)))


def test_jax_arrays_are_viewed_through_dlpack():
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.arange(2 * 3 * 6 * 6, dtype=jnp.float32).reshape(2, 3, 6, 6)
    view = _args.as_array(x, "input")
    assert address(view) == x.unsafe_buffer_pointer()
    w = np.ones((4, 3, 3, 3), np.float32)
    np.testing.assert_array_equal(fastconv.conv2d(x, w), fastconv.conv2d(np.asarray(x), w))


class DLPackOnly:
    """An array exporting DLPack only (no __array__, no buffer)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_only_objects_are_viewed():
    base = np.random.default_rng(0).random((1, 2, 7, 7))
    view = _args.as_array(DLPackOnly(base), "input")
    assert address(view) == address(base)
    w = np.ones((1, 2, 3, 3))
    np.testing.assert_array_equal(fastconv.conv2d(DLPackOnly(base), DLPackOnly(w)),
                                  fastconv.conv2d(base, w))
