"""A 3-layer conv/pool feature extractor over an image larger than the memory it is given.

The image (default 47104 x 47104 float32 = 8.3 GiB) never exists whole: it is a dask.array
built lazily from a generator, one 2048 x 2048 tile per task, and the features are reduced
(per-channel mean and max) as the tiles flow through, so only a few tiles are alive at once.
fastconv computes every block (fastconv.dask: stride-aligned halos, one thread per Dask
worker thread); Dask schedules them, with its progress bar.

    python examples/large_image.py                 # the full 8.3 GiB image
    python examples/large_image.py --size 8192     # a quick run

It prints the throughput in megapixels per second and the peak memory (resident set), and
exits non-zero if the peak exceeds the bound (default 3 GiB, about a third of the image).
"""
import argparse
import resource
import sys
import time

import numpy as np
import dask
import dask.array as da
from dask.diagnostics import ProgressBar

import fastconv
import fastconv.dask as fd


def image_tile(block_info=None):
    """One tile of a synthetic image: smooth blobs plus noise, seeded by the tile's position."""
    (_, _), (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    rng = np.random.default_rng([y0, x0])
    yy, xx = np.meshgrid(np.arange(y0, y1, dtype=np.float32),
                         np.arange(x0, x1, dtype=np.float32), indexing="ij")
    tile = np.sin(yy / 97.0) * np.cos(xx / 61.0)
    tile += rng.standard_normal(tile.shape, dtype=np.float32) * np.float32(0.1)
    return tile[None, None]


def lazy_image(size, tile):
    chunks = ((1,), (1,), _tiles(size, tile), _tiles(size, tile))
    return da.map_blocks(image_tile, chunks=chunks, dtype=np.float32,
                         meta=np.empty((0, 0, 0, 0), np.float32))


def _tiles(size, tile):
    return (tile,) * (size // tile) + ((size % tile,) if size % tile else ())


def relu(x):
    return x.map_blocks(np.maximum, 0, dtype=x.dtype)


def feature_extractor(image, weights):
    """conv 3x3 (1 -> 8) -> ReLU -> max-pool 2 -> conv 3x3 (8 -> 8) -> ReLU -> max-pool 2
    -> conv 3x3 (8 -> 16) -> ReLU -> average-pool 4: a (1, 16, size/16, size/16) feature map."""
    w1, w2, w3 = weights
    h = fd.max_pool2d(relu(fd.conv2d(image, w1, padding=1)), 2)
    h = fd.max_pool2d(relu(fd.conv2d(h, w2, padding=1)), 2)
    return fd.avg_pool2d(relu(fd.conv2d(h, w3, padding=1)), 4)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=47104, help="image side in pixels")
    parser.add_argument("--tile", type=int, default=2048, help="chunk side in pixels")
    parser.add_argument("--max-memory-gib", type=float, default=3.0,
                        help="fail if the peak resident memory exceeds this")
    opts = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(s, dtype=np.float32) * np.float32(1 / np.sqrt(np.prod(s[1:])))
               for s in ((8, 1, 3, 3), (8, 8, 3, 3), (16, 8, 3, 3))]
    image = lazy_image(opts.size, opts.tile)
    features = feature_extractor(image, weights)
    # reduce as the tiles flow: the feature map is never gathered either
    summary = da.stack([features.mean(axis=(0, 2, 3)), features.max(axis=(0, 2, 3))])

    gib = image.nbytes / 2**30
    print(f"image {image.shape} float32, {gib:.2f} GiB, {image.numblocks[2] * image.numblocks[3]}"
          f" tiles of {opts.tile}^2; features {features.shape}; fastconv threads "
          f"{fastconv.get_num_threads()}, Dask workers {dask.system.CPU_COUNT}")
    start = time.perf_counter()
    with ProgressBar(dt=5):
        mean, peak = summary.compute(scheduler="threads")
    elapsed = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"per-channel mean {np.round(mean, 3)}")
    print(f"{opts.size ** 2 / 1e6 / elapsed:.1f} megapixels/s ({elapsed:.1f} s); peak memory "
          f"{peak_rss:.2f} GiB for a {gib:.2f} GiB image (bound {opts.max_memory_gib} GiB)")
    return 0 if peak_rss <= opts.max_memory_gib else 1


if __name__ == "__main__":
    sys.exit(main())
