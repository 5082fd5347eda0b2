"""A 3-layer conv/pool feature extractor over an image larger than the memory it is given.

The image (default 47104 x 47104 float32 = 8.3 GiB) never exists whole: it is a dask.array
built lazily from a generator, one 2048 x 2048 tile per task. It is processed in bands of tile
rows: each band is a Dask array of one row of tiles plus the rows its receptive field reaches
into the neighbouring bands (32 above and below, aligned to the extractor's total stride of
16), so the kept feature rows are exactly those of the whole-image computation, and only one
band's tiles are alive at a time. Inside a band fastconv.dask computes every tile with its
halo; the features are reduced (per-channel mean and max) as they are produced. Dask's
progress bar follows the bands.

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


def _tile_pixels(y0, y1, x0, x1):
    """Pixels [y0, y1) x [x0, x1): a pure function of each pixel's coordinates, so any
    tiling of the image (the bands and their halos included) sees the same values."""
    rows = np.arange(y0, y1, dtype=np.uint32)
    cols = np.arange(x0, x1, dtype=np.uint32)
    # noise from an integer hash of (row, column): uint32 arithmetic wraps, as intended
    h = (rows[:, None] * np.uint32(0x9E3779B1)) ^ (cols[None, :] * np.uint32(0x85EBCA77))
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    tile = h.astype(np.float32)
    tile *= np.float32(0.2 / 2**32)
    tile -= np.float32(0.1)
    # plus an outer product of two 1-d waves: trigonometry in O(height + width), not O(area)
    tile += (np.sin(rows.astype(np.float32) / np.float32(97.0))[:, None]
             * np.cos(cols.astype(np.float32) / np.float32(61.0))[None, :])
    return tile[None, None]


def lazy_band(row0, row1, width, tile):
    """Rows [row0, row1) of the image as a dask.array of tiles along the width."""
    def band_tile(block_info=None):
        (_, _), (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        return _tile_pixels(row0 + y0, row0 + y1, x0, x1)

    chunks = ((1,), (1,), (row1 - row0,), _tiles(width, tile))
    return da.map_blocks(band_tile, chunks=chunks, dtype=np.float32,
                         meta=np.empty((0, 0, 0, 0), np.float32))


def _tiles(size, tile):
    return (tile,) * (size // tile) + ((size % tile,) if size % tile else ())


STRIDE = 16  # the extractor's total stride: 2 x 2 x 4
HALO = 32    # its receptive field reaches 30 rows beyond a band; rounded up to the stride


def relu(x):
    return x.map_blocks(np.maximum, 0, dtype=x.dtype)


def feature_extractor(image, weights):
    """conv 3x3 (1 -> 8) -> ReLU -> max-pool 2 -> conv 3x3 (8 -> 8) -> ReLU -> max-pool 2
    -> conv 3x3 (8 -> 16) -> ReLU -> average-pool 4: a (1, 16, H/16, W/16) feature map."""
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
    if opts.size % STRIDE or opts.tile % STRIDE:
        parser.error(f"--size and --tile must be multiples of the total stride {STRIDE}")
    bands = [(r, min(r + opts.tile, opts.size)) for r in range(0, opts.size, opts.tile)]
    summaries = []
    for r0, r1 in bands:
        # the band plus the rows its receptive field reads (clipped at the true borders)
        s0, s1 = max(r0 - HALO, 0), min(r1 + HALO, opts.size)
        features = feature_extractor(lazy_band(s0, s1, opts.size, opts.tile), weights)
        kept = features[:, :, (r0 - s0) // STRIDE:(r1 - s0) // STRIDE, :]
        summaries.append(da.stack([kept.sum(axis=(0, 2, 3)), kept.max(axis=(0, 2, 3))]))

    gib = opts.size ** 2 * 4 / 2**30
    n_tiles = len(bands) * len(_tiles(opts.size, opts.tile))
    print(f"image (1, 1, {opts.size}, {opts.size}) float32, {gib:.2f} GiB, {n_tiles} tiles of "
          f"{opts.tile}^2 in {len(bands)} bands; features (1, 16, {opts.size // STRIDE}, "
          f"{opts.size // STRIDE}); fastconv threads {fastconv.get_num_threads()}, Dask workers "
          f"{dask.system.CPU_COUNT}")
    start = time.perf_counter()
    total, peak = 0.0, -np.inf
    for number, summary in enumerate(summaries, 1):
        # one band at a time: its tiles are freed before the next; a short refresh interval
        # because the bar's timer thread is joined (up to dt seconds) at the end of each band
        print(f"band {number}/{len(summaries)}")
        with ProgressBar(dt=0.5):
            band_sum, band_max = summary.compute(scheduler="threads")
        total, peak = total + band_sum, np.maximum(peak, band_max)
    mean = total / (opts.size // STRIDE) ** 2
    elapsed = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"per-channel mean {np.round(mean, 3)}")
    print(f"{opts.size ** 2 / 1e6 / elapsed:.1f} megapixels/s ({elapsed:.1f} s); peak memory "
          f"{peak_rss:.2f} GiB for a {gib:.2f} GiB image (bound {opts.max_memory_gib} GiB)")
    return 0 if peak_rss <= opts.max_memory_gib else 1


if __name__ == "__main__":
    sys.exit(main())
