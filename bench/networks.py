"""Whole networks through fastconv.torch against PyTorch, side by side in one process.

    python bench/networks.py [--nets resnet50 resnet50_b1 mobilenet_v2 vgg11 unet conv3d tcn]
                             [--batch N] [--size S] [--formats contiguous channels_last]
                             [--rounds 5] [--train]

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
"""
import argparse
import statistics
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
    opts = parser.parse_args()
    threads = fastconv.get_num_threads()
    torch.set_num_threads(threads)
    print(f"threads {threads}; float32")
    for name in opts.nets:
        build, shape, batch = NETS[name]
        batch = opts.batch or batch
        if opts.size:
            shape = shape[:-2] + (opts.size, opts.size) if len(shape) == 3 else shape
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
                for m in models.values():
                    step(m, x, train)           # warm up
                times = {k: [] for k in models}
                for _ in range(opts.rounds):
                    for k, m in models.items():
                        t0 = time.perf_counter()
                        step(m, x, train)
                        times[k].append(time.perf_counter() - t0)
                med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
                spread = {k: (min(v) * 1e3, max(v) * 1e3) for k, v in times.items()}
                print(f"{name:13s} {fmt:13s} {'train' if train else 'infer':5s} "
                      f"torch {med['torch']:8.1f} ms ({spread['torch'][0]:.0f}-"
                      f"{spread['torch'][1]:.0f})  fastconv {med['fastconv']:8.1f} ms "
                      f"({spread['fastconv'][0]:.0f}-{spread['fastconv'][1]:.0f})  "
                      f"ratio {med['torch'] / med['fastconv']:.2f}")


if __name__ == "__main__":
    main()
