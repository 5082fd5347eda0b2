"""Whole networks through fastconv.torch against PyTorch, side by side in one process.

    python bench/networks.py [--nets resnet50 resnet50_b1 mobilenet_v2 vgg11 unet conv3d tcn]
                             [--batch N] [--size S] [--formats contiguous channels_last]
                             [--rounds 5] [--train] [--processes [--steps 3]]

Builds the networks with torch.nn (no torchvision needed): ResNet-50 (batch 8 and 1,
224x224), MobileNetV2 (8, 224x224), VGG-11 (4, 128x128), a UNet (2, 128x128: 3x3 layers,
max pooling, transposed-convolution upsampling), a 3-D conv net (2, 16x64x64) and a TCN
(8 sequences of 4000 steps, dilated causal conv1d); then a copy whose convolution, transposed
convolution and pooling layers are fastconv.torch's (the same classes' subclasses, the same
parameters). Before timing, the two copies' outputs (and with --train their input
gradients) are checked to agree. Both are timed interleaved, round by round, at the same
thread count. Prints medians and the ratio PyTorch time / fastconv time (above 1: fastconv
is faster). --batch and --size override every network's own; --formats channels_last
applies to the 2-d networks.

With --processes each timing runs in a fresh process that builds one copy (the same seed,
so the same weights and input), warms it up and times --steps steps, the two libraries'
processes alternating for --rounds rounds: what a user's script sees. In one process the
two copies (and the float64 agreement check before them) share the C heap, and how much
memory glibc keeps between steps, so how many pages each step faults in afresh, depends on
what ran before: PyTorch's channels-last MobileNetV2 inference took 54 ms there and
117-124 ms in a process of its own (44,000 page faults a step; Zen 4). Each row also gives
both libraries' page faults per step (medians): in one process a step of either copy pays
about 1.2 us a fault for every page of a large PyTorch allocation (a batch-norm output of
38.5 MB: 9,409 faults, 11 ms) that glibc could not serve from its free chunks that step.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

import fastconv
from fastconv.benchmarks.models import NETS, check_agreement, step, with_fastconv_layers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="*", default=list(NETS))
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--formats", nargs="*", default=["contiguous", "channels_last"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train", action="store_true", help="time a training step too")
    parser.add_argument("--processes", action="store_true",
                        help="time each library in fresh processes, alternating")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed steps per process with --processes")
    parser.add_argument("--child", nargs=4, metavar=("NET", "FORMAT", "MODE", "LIBRARY"),
                        help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        return time_in_this_process(opts)
    threads = fastconv.get_num_threads()
    torch.set_num_threads(threads)
    print(f"threads {threads}; float32")
    for name in opts.nets:
        build, shape, batch = network(name, opts)
        torch.manual_seed(0)
        base = build().eval()
        formats = opts.formats if len(shape) == 3 else ["contiguous"]
        for fmt in formats:
            memory_format = getattr(torch, "channels_last" if fmt == "channels_last"
                                    else "contiguous_format")
            models = {"torch": base.to(memory_format=memory_format)}
            models["fastconv"] = with_fastconv_layers(models["torch"])
            x = torch.randn((batch,) + shape).to(memory_format=memory_format)
            print(f"{name}: input {tuple(x.shape)}")
            for train in ([False, True] if opts.train else [False]):
                for m in models.values():
                    m.train(train)
                errors = check_agreement(models, x, train)
                print("  agreement with float64 (relative, PyTorch / fastconv): " + ", ".join(
                    f"{k} {t:.1e} / {f:.1e}" for k, (t, f) in errors.items()))
                mode = "train" if train else "infer"
                if opts.processes:
                    times, faults = time_in_processes(name, fmt, mode, opts)
                else:
                    times, faults = time_interleaved(models, x, train, opts.rounds)
                med = {k: statistics.median(v) for k, v in times.items()}
                spread = {k: (min(v), max(v)) for k, v in times.items()}
                print(f"{name:13s} {fmt:13s} {mode:5s} "
                      f"torch {med['torch']:8.1f} ms ({spread['torch'][0]:.0f}-"
                      f"{spread['torch'][1]:.0f})  fastconv {med['fastconv']:8.1f} ms "
                      f"({spread['fastconv'][0]:.0f}-{spread['fastconv'][1]:.0f})  "
                      f"ratio {med['torch'] / med['fastconv']:.2f}" + (
                          f"  page faults/step torch {statistics.median(faults['torch']):.0f}"
                          f" fastconv {statistics.median(faults['fastconv']):.0f}"))


def network(name, opts):
    """(builder, input shape without the batch, batch) of network `name`, --batch and --size
    applied."""
    build, shape, batch = NETS[name]
    if opts.size and len(shape) == 3:
        shape = shape[:-2] + (opts.size, opts.size)
    return build, shape, opts.batch or batch


def time_interleaved(models, x, train, rounds):
    """({library: step times (ms)}, {library: page faults per step}): both copies in this
    process, step by step."""
    for m in models.values():
        step(m, x, train)           # warm up
    times, faults = {k: [] for k in models}, {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            step(m, x, train)
            times[k].append((time.perf_counter() - t0) * 1e3)
            faults[k].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return times, faults


def time_in_processes(name, fmt, mode, opts):
    """({library: per-process median step times (ms)}, {library: page faults per step}):
    each library in a fresh process per round, the two alternating."""
    times, faults = {"torch": [], "fastconv": []}, {"torch": [], "fastconv": []}
    sizes = (["--batch", str(opts.batch)] if opts.batch else []) \
        + (["--size", str(opts.size)] if opts.size else [])
    for _ in range(opts.rounds):
        for library in times:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", name, fmt, mode, library,
                 "--steps", str(opts.steps)] + sizes,
                check=True, capture_output=True, text=True).stdout.split()
            times[library].append(float(out[0]))
            faults[library].append(float(out[1]))
    return times, faults


def time_in_this_process(opts):
    """--child: build one library's copy as the parent builds it, warm it up, time
    --steps steps; print the median time (ms) and the median page faults per step."""
    name, fmt, mode, library = opts.child
    torch.set_num_threads(fastconv.get_num_threads())
    build, shape, batch = network(name, opts)
    torch.manual_seed(0)
    memory_format = getattr(torch, "channels_last" if fmt == "channels_last"
                            else "contiguous_format")
    model = build().eval().to(memory_format=memory_format)
    if library == "fastconv":
        model = with_fastconv_layers(model)
    x = torch.randn((batch,) + shape).to(memory_format=memory_format)
    train = mode == "train"
    model.train(train)
    for _ in range(2):
        step(model, x, train)       # warm up
    times, faults = [], []
    for _ in range(opts.steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        step(model, x, train)
        times.append((time.perf_counter() - t0) * 1e3)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(statistics.median(times), statistics.median(faults))


if __name__ == "__main__":
    main()
