"""A dispatcher constant's values against each other inside a whole network, in one process.

    python bench/compare_rules.py NET NAME VALUE [VALUE ...] [--rounds 6] [--infer]
                                  [--format channels_last]

NAME is a module-level constant of fastconv._plan.dispatch, fastconv._plan.tiling,
fastconv._ops.conv or fastconv._runtime.memory (for example WINOGRAD_MIN_TILES,
PHASE_GRID_MAX_WEIGHT_GRAD, COL2IM_BAND_MAX_BYTES, _NHWC_PACK_PER_CALL_TILES,
COLD_AFTER_BYTES); each VALUE is
a Python literal. Every round times one step of the network (bench/networks.py's, a training
step unless --infer) for PyTorch and for fastconv under each value, the plans recomputed
after each change and one untimed step run first; the order rotates from round to round, so
that no value always runs right after PyTorch's step (which leaves the caches cold: in a
fixed order the first value read 12% slower than the same value later in the round). Prints
the medians and the ratios PyTorch time / fastconv time. Measuring a constant inside the
network, where its layers' weights and activations come from memory, is what the
dispatcher's rules are for: alone, with warm caches, Winograd on 8 tiles looked like a tie;
inside a UNet it cost a fifth of the inference.
"""
import argparse
import ast
import statistics
import time

import torch

import fastconv
from fastconv._ops import conv as ops_conv
from fastconv._plan import dispatch, tiling
from fastconv._runtime import memory
from fastconv.benchmarks.models import NETS, step, with_fastconv_layers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("net", choices=sorted(NETS))
    parser.add_argument("name")
    parser.add_argument("values", nargs="+", type=ast.literal_eval)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--infer", action="store_true", help="time inference, not training")
    parser.add_argument("--format", choices=["contiguous", "channels_last"],
                        default="contiguous", help="the 2-d networks' memory format")
    opts = parser.parse_args()
    module = next((m for m in (dispatch, tiling, ops_conv, memory)
                   if hasattr(m, opts.name)), None)
    if module is None:
        parser.error(f"no constant {opts.name} in fastconv._plan.dispatch, tiling, "
                     f"fastconv._ops.conv or fastconv._runtime.memory")
    original = getattr(module, opts.name)
    torch.set_num_threads(fastconv.get_num_threads())
    build, shape, batch = NETS[opts.net]
    torch.manual_seed(0)
    memory_format = torch.channels_last if opts.format == "channels_last" and len(shape) == 3 \
        else torch.contiguous_format
    base = build().to(memory_format=memory_format)
    models = {"torch": base, "fastconv": with_fastconv_layers(base)}
    x = torch.randn((batch,) + shape).to(memory_format=memory_format)
    train = not opts.infer

    def timed(model):
        t0 = time.perf_counter()
        step(model, x, train)
        return time.perf_counter() - t0

    def with_value(value):
        setattr(module, opts.name, value)
        dispatch.forget_plans()
        ops_conv._nhwc_gemm_tiling.cache_clear()
        step(models["fastconv"], x, train)      # plans made, buffers reused from here on
        return timed(models["fastconv"])

    times = {i: [] for i in range(len(opts.values))}
    torch_times = []
    step(models["torch"], x, train)
    order = ["torch"] + list(range(len(opts.values)))
    try:
        for r in range(opts.rounds):
            for which in order[r % len(order):] + order[:r % len(order)]:
                if which == "torch":
                    torch_times.append(timed(models["torch"]))
                else:
                    times[which].append(with_value(opts.values[which]))
    finally:
        setattr(module, opts.name, original)
        dispatch.forget_plans()
    reference = statistics.median(torch_times)
    print(f"{opts.net} {opts.format} {'training step' if train else 'inference'}, "
          f"{fastconv.get_num_threads()} threads: PyTorch {reference * 1e3:.1f} ms")
    for i, value in enumerate(opts.values):
        median = statistics.median(times[i])
        print(f"  {opts.name} = {value!r}: {median * 1e3:.1f} ms "
              f"({min(times[i]) * 1e3:.1f}-{max(times[i]) * 1e3:.1f}), "
              f"ratio {reference / median:.2f}")


if __name__ == "__main__":
    main()
