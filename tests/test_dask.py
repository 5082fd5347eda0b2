"""fastconv.dask: the operators on chunked Dask arrays equal the in-memory calls for every
chunking, stride, dilation and padding mode, on Dask's threads, processes and distributed
schedulers."""
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402

# random chunkings often hold chunks smaller than the halo: merged on purpose, warned about
pytestmark = pytest.mark.filterwarnings("ignore::fastconv.dask.HaloRechunkWarning")


def random_chunks(rng, size, allow_single=True):
    """A random chunking of `size`: uneven pieces, sometimes single elements."""
    cuts = sorted(set(rng.integers(1, size, size=rng.integers(0, max(1, size // 2))).tolist()))
    if allow_single and size > 2 and rng.random() < 0.3:
        cuts = sorted(set(cuts) | {1, 2})
    bounds = [0] + cuts + [size]
    return tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))


def random_chunking(rng, shape):
    return (random_chunks(rng, shape[0]), shape[1]) + tuple(random_chunks(rng, n)
                                                           for n in shape[2:])


def compute(y, scheduler="sync"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fd.HaloRechunkWarning)
        return y.compute(scheduler=scheduler)


# (id, nd, input shape, weight shape, keyword arguments)
CONV_CASES = [
    ("1d", 1, (3, 2, 31), (3, 2, 4), dict()),
    ("1d-stride3-dilation2-pad", 1, (2, 3, 40), (2, 3, 3), dict(stride=3, dilation=2,
                                                                padding=(5,))),
    ("2d-pad1", 2, (2, 3, 17, 15), (4, 3, 3, 3), dict(padding=1)),
    ("2d-stride2-reflect", 2, (2, 2, 16, 13), (3, 2, 3, 3), dict(stride=2, padding=1,
                                                                 padding_mode="reflect")),
    ("2d-dilated-circular", 2, (1, 2, 14, 14), (2, 2, 3, 2), dict(dilation=(2, 3), padding=3,
                                                                  padding_mode="circular")),
    ("2d-asym-replicate-groups", 2, (1, 4, 13, 11), (4, 2, 2, 3),
     dict(stride=(3, 2), padding=((2, 0), (0, 3)), groups=2, padding_mode="replicate")),
    ("2d-same", 2, (1, 2, 10, 9), (2, 2, 4, 4), dict(padding="same")),
    ("3d", 3, (1, 2, 9, 8, 7), (2, 2, 3, 2, 3), dict(stride=(2, 1, 2), padding=1)),
]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("nd, x_shape, w_shape, kwargs", [c[1:] for c in CONV_CASES],
                         ids=[c[0] for c in CONV_CASES])
def test_conv_random_chunkings_bit_for_bit(nd, x_shape, w_shape, kwargs, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    # 'packed' is deterministic whatever the block shape: blocks equal the whole bit for bit
    expected = getattr(fastconv, f"conv{nd}d")(x, w, b, algorithm="packed", **kwargs)
    chunks = random_chunking(rng, x_shape)
    y = getattr(fd, f"conv{nd}d")(da.from_array(x, chunks=chunks), w, b, algorithm="packed",
                                  **kwargs)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    np.testing.assert_array_equal(compute(y), expected, err_msg=f"chunks {chunks}")


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("nd, x_shape, w_shape, kwargs", [c[1:] for c in CONV_CASES],
                         ids=[c[0] for c in CONV_CASES])
def test_conv_blocks_computed_by_bands_of_rows_bit_for_bit(monkeypatch, nd, x_shape, w_shape,
                                                            kwargs, seed):
    """A task convolves its block band by band (never holding the halo-extended block): with
    bands of one or a few output rows, the result is still the in-memory one."""
    monkeypatch.setattr(fd, "BAND_BYTES", 1 + seed * 200)
    rng = np.random.default_rng(seed + 10)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    expected = getattr(fastconv, f"conv{nd}d")(x, w, algorithm="packed", **kwargs)
    chunks = random_chunking(rng, x_shape)
    y = getattr(fd, f"conv{nd}d")(da.from_array(x, chunks=chunks), w, algorithm="packed",
                                  **kwargs)
    np.testing.assert_array_equal(compute(y), expected, err_msg=f"chunks {chunks}")


def test_conv_single_output_pixel_chunks_and_auto_algorithm():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 12, 12))
    w = rng.standard_normal((5, 3, 3, 3))
    # stride 3 and one-element input chunks: every output block holds one output pixel
    y = fd.conv2d(da.from_array(x, chunks=(1, 3, 1, 1)), w, stride=3, padding=1)
    assert all(c == 1 for c in y.chunks[2] + y.chunks[3])
    np.testing.assert_allclose(compute(y), fastconv.conv2d(x, w, stride=3, padding=1),
                               rtol=1e-12, atol=1e-12)


def test_chunk_smaller_than_halo_is_rechunked_with_a_warning():
    x = np.random.default_rng(2).standard_normal((1, 1, 20, 6)).astype(np.float32)
    w = np.ones((1, 1, 5, 1), np.float32)
    with pytest.warns(fd.HaloRechunkWarning, match="smaller than the halo \\(4 elements\\)"):
        y = fd.conv2d(da.from_array(x, chunks=(1, 1, 2, 6)), w, algorithm="packed")
    assert min(y.chunks[2][:-1]) * 1 >= 1 and len(y.chunks[2]) < 10
    np.testing.assert_array_equal(compute(y), fastconv.conv2d(x, w, algorithm="packed"))


def test_channels_are_never_split():
    x = np.random.default_rng(3).standard_normal((1, 6, 8, 8))
    w = np.random.default_rng(4).standard_normal((4, 6, 3, 3))
    y = fd.conv2d(da.from_array(x, chunks=(1, 2, 4, 4)), w, algorithm="packed")
    assert y.chunks[1] == (4,)
    np.testing.assert_array_equal(compute(y), fastconv.conv2d(x, w, algorithm="packed"))


TRANSPOSE_CASES = [
    ("1d-stride2", 1, (2, 3, 19), (3, 2, 4), dict(stride=2, padding=1, output_padding=1)),
    ("2d", 2, (2, 4, 9, 10), (4, 3, 3, 2), dict()),
    ("2d-stride3-dilated", 2, (1, 4, 8, 7), (4, 2, 3, 3), dict(stride=3, dilation=2,
                                                              padding=(4, 1),
                                                              output_padding=(2, 0), groups=2)),
    ("3d", 3, (1, 2, 5, 6, 5), (2, 2, 2, 3, 2), dict(stride=(2, 1, 2), padding=(0, 1, 1))),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("nd, x_shape, w_shape, kwargs", [c[1:] for c in TRANSPOSE_CASES],
                         ids=[c[0] for c in TRANSPOSE_CASES])
def test_conv_transpose_random_chunkings(nd, x_shape, w_shape, kwargs, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[1] * kwargs.get("groups", 1))
    expected = getattr(fastconv, f"conv_transpose{nd}d")(x, w, b, **kwargs)
    chunks = random_chunking(rng, x_shape)
    y = getattr(fd, f"conv_transpose{nd}d")(da.from_array(x, chunks=chunks), w, b, **kwargs)
    assert y.shape == expected.shape
    np.testing.assert_allclose(compute(y), expected, rtol=1e-12, atol=1e-12,
                               err_msg=f"chunks {chunks}")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_weight_grad_tree_reduction_equals_in_memory(nd):
    rng = np.random.default_rng(nd)
    x_shape = (9, 3) + (7,) * nd
    w_shape = (4, 3) + (3,) * nd
    kwargs = dict(stride=2, padding=1, padding_mode="reflect")
    out_shape = fastconv.output_shape(x_shape, w_shape, stride=2, padding=1)
    x, g = rng.standard_normal(x_shape), rng.standard_normal(out_shape)
    expected = getattr(fastconv.grad, f"conv{nd}d_weight")(x, w_shape, g, **kwargs)
    y = getattr(fd, f"conv{nd}d_weight_grad")(
        da.from_array(x, chunks=(2, 1) + (4,) * nd), w_shape,
        da.from_array(g, chunks=(4,) + out_shape[1:]), split_every=2, **kwargs)
    # a tree: more than one level of partial sums for 5 shards with fan-in 2
    assert sum(1 for name in y.dask.layers if "sum" in name) >= 2
    np.testing.assert_allclose(compute(y, "threads"), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Schedulers and threads


def test_threads_per_task_times_tasks_never_exceeds_cores():
    cores = fastconv.get_num_threads()
    x = da.zeros((8, 1), chunks=(1, 1))

    def record(block):
        return np.full(block.shape, fd.threads_per_task())

    with dask.config.set(num_workers=2):
        seen = x.map_blocks(record, dtype=int).compute(scheduler="threads")
    assert seen.max() * 2 <= max(cores, 2) and seen.min() >= 1
    assert fd.threads_per_task() == cores  # the main thread: the synchronous scheduler


def test_threaded_and_processes_schedulers_match_sync():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 20, 18)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fd.conv2d(da.from_array(x, chunks=(1, 3, 7, 9)), w, padding=1, algorithm="packed")
    sync = compute(y)
    np.testing.assert_array_equal(compute(y, "threads"), sync)
    with dask.config.set(num_workers=2):
        np.testing.assert_array_equal(compute(y, "processes"), sync)


def test_distributed_local_cluster_matches_threads():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 24, 20)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fd.conv2d(da.from_array(x, chunks=(1, 3, 10, 7)), w, stride=2, padding=1,
                  algorithm="packed")
    threaded = compute(y, "threads")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        result = client.compute(y).result()
        threads = client.run(lambda: fd.threads_per_task())
    assert len(threads) == 2 and all(n >= 1 for n in threads.values())
    np.testing.assert_array_equal(result, threaded)
    np.testing.assert_array_equal(result, fastconv.conv2d(x, w, stride=2, padding=1,
                                                          algorithm="packed"))


# ---------------------------------------------------------------------------------------------
# Pooling

POOL_CASES = [
    ("k2", dict(kernel_size=2)),
    ("k3-s2-p1", dict(kernel_size=3, stride=2, padding=1)),
    ("k3-s2-p1-ceil", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("k3x2-s3x1-ceil", dict(kernel_size=(3, 2), stride=(3, 1), padding=(1, 1), ceil_mode=True)),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kwargs", [c[1] for c in POOL_CASES], ids=[c[0] for c in POOL_CASES])
def test_max_pool2d_values_and_global_indices(kwargs, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 17, 14)).astype(np.float32)
    dilated = dict(kwargs, dilation=(2, 1)) if seed == 2 else kwargs
    expected, expected_idx = fastconv.max_pool2d(x, return_indices=True, **dilated)
    chunks = random_chunking(rng, x.shape)
    y, idx = fd.max_pool2d(da.from_array(x, chunks=chunks), return_indices=True, **dilated)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(compute(y), expected, err_msg=f"chunks {chunks}")
    np.testing.assert_array_equal(compute(idx), expected_idx, err_msg=f"chunks {chunks}")


@pytest.mark.parametrize("nd", [1, 3])
def test_max_pool_1d_3d(nd):
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((2, 2) + (9,) * nd)
    expected, expected_idx = getattr(fastconv, f"max_pool{nd}d")(x, 3, 2, 1, return_indices=True)
    chunks = random_chunking(rng, x.shape)
    y, idx = getattr(fd, f"max_pool{nd}d")(da.from_array(x, chunks=chunks), 3, 2, 1,
                                           return_indices=True)
    np.testing.assert_array_equal(compute(y), expected)
    np.testing.assert_array_equal(compute(idx), expected_idx)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kwargs", [c[1] for c in POOL_CASES], ids=[c[0] for c in POOL_CASES])
def test_avg_pool2d_random_chunkings(kwargs, count_include_pad):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 17, 14))
    expected = fastconv.avg_pool2d(x, count_include_pad=count_include_pad, **kwargs)
    chunks = random_chunking(rng, x.shape)
    y = fd.avg_pool2d(da.from_array(x, chunks=chunks), count_include_pad=count_include_pad,
                      **kwargs)
    np.testing.assert_allclose(compute(y), expected, rtol=1e-14, atol=0,
                               err_msg=f"chunks {chunks}")


def test_avg_pool_divisor_override_1d_3d():
    rng = np.random.default_rng(8)
    x1, x3 = rng.standard_normal((2, 3, 20)), rng.standard_normal((1, 2, 7, 8, 9))
    np.testing.assert_allclose(
        compute(fd.avg_pool1d(da.from_array(x1, chunks=(1, 3, 3)), 4, 3, 2, ceil_mode=True)),
        fastconv.avg_pool1d(x1, 4, 3, 2, ceil_mode=True), rtol=1e-14)
    np.testing.assert_allclose(
        compute(fd.avg_pool3d(da.from_array(x3, chunks=(1, 2, 3, 4, 5)), 2,
                              divisor_override=3)),
        fastconv.avg_pool3d(x3, 2, divisor_override=3), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Interpolation

INTERPOLATE_CASES = [
    ("bilinear-up", (2, 3, 9, 7), dict(size=(20, 11), mode="bilinear")),
    ("bilinear-down-aligned", (2, 3, 9, 7), dict(size=(4, 3), mode="bilinear",
                                                 align_corners=True)),
    ("nearest-x2", (2, 3, 9, 7), dict(scale_factor=2)),
    ("nearest-odd", (1, 2, 10, 9), dict(size=(7, 23))),
    ("linear-down", (1, 2, 13), dict(scale_factor=0.4, mode="linear")),
    ("trilinear", (1, 2, 5, 6, 4), dict(scale_factor=(1.5, 2, 0.5), mode="trilinear")),
    ("nearest3d", (1, 2, 5, 6, 4), dict(size=(3, 11, 4))),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape, kwargs", [c[1:] for c in INTERPOLATE_CASES],
                         ids=[c[0] for c in INTERPOLATE_CASES])
def test_interpolate_random_chunkings_bit_for_bit(shape, kwargs, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    expected = fastconv.interpolate(x, **kwargs)
    chunks = random_chunking(rng, shape)
    y = fd.interpolate(da.from_array(x, chunks=chunks), **kwargs)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    np.testing.assert_array_equal(compute(y), expected, err_msg=f"chunks {chunks}")


# ---------------------------------------------------------------------------------------------
# The large-image example: its bands (plus receptive-field halos) give the whole-image features


def test_large_image_example_bands_equal_the_whole_image():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parent.parent / "examples" / "large_image.py"
    spec = importlib.util.spec_from_file_location("large_image", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    size, tile = 256, 64
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(s, dtype=np.float32) for s in
               ((8, 1, 3, 3), (8, 8, 3, 3), (16, 8, 3, 3))]
    whole = compute(example.feature_extractor(example.lazy_band(0, size, size, tile), weights))
    rows = []
    for r0 in range(0, size, tile):
        s0, s1 = max(r0 - example.HALO, 0), min(r0 + tile + example.HALO, size)
        features = compute(example.feature_extractor(example.lazy_band(s0, s1, size, tile),
                                                     weights))
        rows.append(features[:, :, (r0 - s0) // example.STRIDE:(r0 + tile - s0)
                             // example.STRIDE])
    banded = np.concatenate(rows, axis=2)
    assert banded.shape == whole.shape == (1, 16, size // 16, size // 16)
    np.testing.assert_allclose(banded, whole, rtol=1e-5, atol=1e-5)
    # a halo one stride short of the receptive field would change the band borders
    assert example.HALO >= 30
