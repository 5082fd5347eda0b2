"""Whole networks through fastconv.torch against PyTorch, side by side in one process.

    python bench/networks.py [--nets resnet50 mobilenet_v2] [--batch 8] [--size 224]
                             [--formats contiguous channels_last] [--rounds 5] [--train]

Builds ResNet-50 and MobileNetV2 with torch.nn (no torchvision needed), then a copy whose
convolution and pooling layers are fastconv.torch's (the same classes' subclasses, the same
parameters), and times both interleaved, round by round, at the same thread count. Prints
medians and the ratio PyTorch time / fastconv time (above 1: fastconv is faster).
"""
import argparse
import copy
import statistics
import time

import torch
from torch import nn

import fastconv
from fastconv import torch as fnn


def _bn_relu(conv, channels, relu=True):
    layers = [conv, nn.BatchNorm2d(channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


class Bottleneck(nn.Module):
    def __init__(self, c_in, width, stride):
        super().__init__()
        c_out = width * 4
        self.body = nn.Sequential(
            *_bn_relu(nn.Conv2d(c_in, width, 1, bias=False), width),
            *_bn_relu(nn.Conv2d(width, width, 3, stride, 1, bias=False), width),
            *_bn_relu(nn.Conv2d(width, c_out, 1, bias=False), c_out, relu=False))
        self.skip = None
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                      nn.BatchNorm2d(c_out))

    def forward(self, x):
        return torch.relu(self.body(x) + (x if self.skip is None else self.skip(x)))


def resnet50(classes=1000):
    layers = [*_bn_relu(nn.Conv2d(3, 64, 7, 2, 3, bias=False), 64), nn.MaxPool2d(3, 2, 1)]
    c_in = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            layers.append(Bottleneck(c_in, width, stride if i == 0 else 1))
            c_in = width * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c_in, classes))


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, expand):
        super().__init__()
        hidden = c_in * expand
        layers = []
        if expand != 1:
            layers += _bn_relu(nn.Conv2d(c_in, hidden, 1, bias=False), hidden)
        layers += _bn_relu(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                           hidden)
        layers += _bn_relu(nn.Conv2d(hidden, c_out, 1, bias=False), c_out, relu=False)
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(classes=1000):
    layers = _bn_relu(nn.Conv2d(3, 32, 3, 2, 1, bias=False), 32)
    c_in = 32
    for expand, c_out, repeats, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                           (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                           (6, 320, 1, 1)]:
        for i in range(repeats):
            layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
            c_in = c_out
    layers += _bn_relu(nn.Conv2d(c_in, 1280, 1, bias=False), 1280)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(1280, classes))


NETS = {"resnet50": resnet50, "mobilenet_v2": mobilenet_v2}
# torch.nn classes and the fastconv.torch classes that replace them
SWAPS = {nn.Conv2d: fnn.Conv2d, nn.MaxPool2d: fnn.MaxPool2d,
         nn.AdaptiveAvgPool2d: fnn.AdaptiveAvgPool2d}


def with_fastconv_layers(model):
    """A copy of `model` whose conv and pooling layers run fastconv (same parameters)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) in SWAPS:
            module.__class__ = SWAPS[type(module)]
    return model


def step(model, x, train):
    if not train:
        with torch.no_grad():
            return model(x)
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="*", default=list(NETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--formats", nargs="*", default=["contiguous", "channels_last"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train", action="store_true", help="time a training step too")
    opts = parser.parse_args()
    threads = fastconv.get_num_threads()
    torch.set_num_threads(threads)
    print(f"threads {threads}; batch {opts.batch}; {opts.size}x{opts.size}; float32")
    for name in opts.nets:
        torch.manual_seed(0)
        base = NETS[name]().eval()
        for fmt in opts.formats:
            memory_format = getattr(torch, "channels_last" if fmt == "channels_last"
                                    else "contiguous_format")
            models = {"torch": base.to(memory_format=memory_format)}
            models["fastconv"] = with_fastconv_layers(models["torch"])
            x = torch.randn(opts.batch, 3, opts.size, opts.size).to(memory_format=memory_format)
            for train in ([False, True] if opts.train else [False]):
                for m in models.values():
                    m.train(train)
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
