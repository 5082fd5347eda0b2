"""Framework cases (float32): the cost of calling fastconv through fastconv.torch and
fastconv.dask, side by side with the direct NumPy call and with PyTorch's own layers.

- ``wrap_*``: one conv2d forward, fastconv on NumPy arrays ("fastconv") against the same call
  through the PyTorch wrapper ("fastconv.torch") and PyTorch's ``F.conv2d`` ("torch").
- ``small_cnn_step``: forward + backward of a small CNN built from ``fastconv.torch`` layers
  ("fastconv") against the same CNN from ``torch.nn`` ("torch").
- ``dask_conv2d_8192``: conv2d over (1, 16, 8192, 8192) with 3x3 weights, in memory
  ("fastconv") against fastconv.dask over 2048 x 2048 chunks on Dask's threads, gathered by
  ``compute()`` ("fastconv.dask") or written block by block with ``da.store`` into one
  preallocated array ("fastconv.dask+store").
  FASTCONV_BENCH_DASK_SIZE shrinks it. Peak memory: ``python -m
  fastconv.benchmarks.frameworks memory`` runs each variant in its own process.
"""
import os
import resource
import subprocess
import sys

import numpy as np

import fastconv
from fastconv.benchmarks import Case, PeerUnavailable, require, torch_threads

DASK_SIZE = int(os.environ.get("FASTCONV_BENCH_DASK_SIZE", "8192"))
DASK_CHUNK = 2048


def _conv_inputs(x_shape, w_shape):
    def make():
        rng = np.random.default_rng(0)
        return {"x": rng.standard_normal(x_shape, dtype=np.float32),
                "w": rng.standard_normal(w_shape, dtype=np.float32) * np.float32(0.1),
                "b": rng.standard_normal(w_shape[0], dtype=np.float32)}
    return make


def _direct(kwargs):
    def make(inp):
        return lambda: fastconv.conv2d(inp["x"], inp["w"], inp["b"], **kwargs)
    return make


def _wrapped(kwargs):
    def make(inp):
        torch = require("torch")
        ft = require("fastconv.torch")
        x, w, b = (torch.from_numpy(inp[k]) for k in "xwb")
        return lambda: ft.conv2d(x, w, b, **kwargs)
    return make


def _torch(kwargs):
    def make(inp):
        torch = require("torch")
        torch_threads(torch, fastconv.get_num_threads())
        x, w, b = (torch.from_numpy(inp[k]) for k in "xwb")
        return lambda: torch.nn.functional.conv2d(x, w, b, **kwargs)
    return make


# fastconv, its PyTorch wrapper and PyTorch share one OpenMP runtime (both load libgomp.so.1):
# no foreign thread pool spins between them, so they are timed back to back in long bursts,
# as a training loop runs, without the runner's settling pauses
BACK_TO_BACK = dict(settle=0.0, burst=0.1)


def _wrap_case(name, x_shape, w_shape, kwargs):
    return Case(name=name, family="frameworks",
                description=f"conv2d {x_shape} * {w_shape} {kwargs}: NumPy call vs torch wrapper",
                make_inputs=_conv_inputs(x_shape, w_shape),
                impls={"fastconv": _direct(kwargs), "fastconv.torch": _wrapped(kwargs),
                       "torch": _torch(kwargs)},
                timing=BACK_TO_BACK)


def small_cnn(nn, torch):
    """The CNN of the model-equivalence test, at benchmark size (batch 32, 1 x 28 x 28)."""
    return torch.nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 10))


def _cnn_step(which):
    def make(inp):
        torch = require("torch")
        torch_threads(torch, fastconv.get_num_threads())
        layers = require("fastconv.torch") if which == "fastconv" else torch.nn
        torch.manual_seed(0)
        model = small_cnn(layers, torch)
        x, labels = torch.from_numpy(inp["x"]), torch.from_numpy(inp["labels"])

        def step():
            model.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            return loss
        return step
    return make


def _cnn_inputs():
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((32, 1, 28, 28), dtype=np.float32),
            "labels": rng.integers(0, 10, 32)}


def _dask_inputs():
    rng = np.random.default_rng(0)
    x = np.empty((1, 16, DASK_SIZE, DASK_SIZE), np.float32)
    for c in range(16):  # channel by channel: no float64 temporary of the whole image
        x[0, c] = rng.standard_normal((DASK_SIZE, DASK_SIZE), dtype=np.float32)
    return {"x": x, "w": rng.standard_normal((16, 16, 3, 3), dtype=np.float32) * 0.1}


def _dask_in_memory(inp):
    return lambda: fastconv.conv2d(inp["x"], inp["w"], padding=1)


def _dask_chunked(inp):
    try:
        import dask.array as da
        import fastconv.dask as fd
    except ImportError as err:
        raise PeerUnavailable(f"dask is not installed ({err})") from None
    x = da.from_array(inp["x"], chunks=(1, 16, DASK_CHUNK, DASK_CHUNK))
    y = fd.conv2d(x, inp["w"], padding=1)
    return lambda: y.compute(scheduler="threads")


def _dask_stored(inp):
    # da.store writes each block into one preallocated array: no final concatenation copy
    try:
        import dask.array as da
        import fastconv.dask as fd
    except ImportError as err:
        raise PeerUnavailable(f"dask is not installed ({err})") from None
    x = da.from_array(inp["x"], chunks=(1, 16, DASK_CHUNK, DASK_CHUNK))
    y = fd.conv2d(x, inp["w"], padding=1)

    def run():
        out = np.empty(y.shape, y.dtype)
        da.store(y, out, lock=False, scheduler="threads")
        return out
    return run


CASES = [
    _wrap_case("wrap_resnet_3x3_64", (1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    _wrap_case("wrap_small", (1, 4, 8, 8), (4, 4, 3, 3), dict(padding=1)),
    Case(name="small_cnn_step", family="frameworks",
         description="forward + backward, 3-conv CNN, batch 32 x 1 x 28 x 28: "
                     "fastconv.torch layers vs torch.nn",
         make_inputs=_cnn_inputs,
         impls={"fastconv": _cnn_step("fastconv"), "torch": _cnn_step("torch")},
         timing=BACK_TO_BACK),
    Case(name=f"dask_conv2d_{DASK_SIZE}", family="frameworks",
         description=f"conv2d (1, 16, {DASK_SIZE}, {DASK_SIZE}) * (16, 16, 3, 3): in memory vs "
                     f"fastconv.dask, chunks {DASK_CHUNK}^2, threads scheduler",
         make_inputs=_dask_inputs,
         impls={"fastconv": _dask_in_memory, "fastconv.dask": _dask_chunked,
                "fastconv.dask+store": _dask_stored}),
]


# ---------------------------------------------------------------------------------------------
# Peak memory of the Dask case, each variant in a fresh process (ru_maxrss is per process)

def _peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _memory_variant(variant):
    import time
    w = np.random.default_rng(0).standard_normal((16, 16, 3, 3), dtype=np.float32) * 0.1
    shape = (1, 16, DASK_SIZE, DASK_SIZE)
    start = time.perf_counter()
    if variant == "in-memory":
        x = _dask_inputs()["x"]
        y = fastconv.conv2d(x, w, padding=1)
        checksum = float(y[0, :, ::97, ::89].sum())
    else:
        import dask.array as da
        import fastconv.dask as fd

        def block(block_info=None):
            # each input chunk generated where it is used: the image never exists whole
            loc = block_info[None]["array-location"]
            seed = loc[2][0] * 7919 + loc[3][0]
            shape = tuple(hi - lo for lo, hi in loc)
            return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)

        x = da.map_blocks(block, chunks=((1,), (16,)) + ((DASK_CHUNK,) * (DASK_SIZE
                                                                           // DASK_CHUNK),) * 2,
                          dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32))
        y = fd.conv2d(x, w, padding=1)
        # the output is consumed block by block (as a store to disk would), never gathered
        checksum = float(y[:, :, ::97, ::89].sum().compute(scheduler="threads"))
    elapsed = time.perf_counter() - start
    print(f"{variant}: {elapsed:.2f} s (input generation included), peak RSS "
          f"{_peak_rss_bytes() / 2**30:.2f} GiB, image {np.prod(shape) * 4 / 2**30:.2f} GiB, "
          f"checksum {checksum:.3f}")


def memory_report():
    for variant in ("in-memory", "dask"):
        subprocess.run([sys.executable, "-m", "fastconv.benchmarks.frameworks", "memory-one",
                        variant], check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["memory-one"]:
        _memory_variant(sys.argv[2])
    else:
        memory_report()
