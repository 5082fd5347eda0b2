"""Whole networks: built with torch.nn, then a copy with fastconv.torch's layers, timed side by
side (``python -m fastconv bench --cases models``; ``bench/networks.py`` for rounds, memory
formats and other sizes).

The networks (no torchvision needed): ResNet-50 (batch 8 and 1, 224x224), MobileNetV2 (8,
224x224), VGG-11 (4, 128x128), a UNet (2, 128x128: 3x3 layers, max pooling,
transposed-convolution upsampling), a 3-D conv net (2, 16x64x64) and a TCN (8 sequences of
4000 steps, dilated causal conv1d). The fastconv copy has the same parameters; its
convolution, transposed convolution and pooling layers are fastconv.torch's. Each case checks,
before it is timed, that both copies agree with a float64 run of the network (outputs, and
input gradients for a training step).
"""
import copy

import torch   # without PyTorch this module does not import: no models cases
from torch import nn

import fastconv
from fastconv import torch as fnn
from fastconv.benchmarks import Case, torch_threads


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


def vgg11(classes=1000):
    layers, c_in = [], 3
    for c_out in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if c_out == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, classes))


def _double_conv(c_in, c_out):
    return nn.Sequential(*_bn_relu(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), c_out),
                         *_bn_relu(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), c_out))


class UNet(nn.Module):
    """The UNet of Ronneberger et al. with 'same' padding, 4 levels from 64 channels."""

    def __init__(self, c_in=3, classes=2, width=64, levels=4):
        super().__init__()
        widths = [width * 2 ** i for i in range(levels + 1)]
        self.down = nn.ModuleList([_double_conv(c_in, widths[0])] + [
            _double_conv(widths[i], widths[i + 1]) for i in range(levels)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(levels))])
        self.merge = nn.ModuleList([_double_conv(2 * widths[i], widths[i])
                                    for i in reversed(range(levels))])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def conv3d_net(classes=10):
    """A small video/volume classifier: 3x3x3 convolutions and 3-d max pooling."""
    layers, c_in = [], 3
    for c_out, pool in [(32, (1, 2, 2)), (64, 2), (128, 2), (256, 2)]:
        layers += [nn.Conv3d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm3d(c_out),
                   nn.ReLU(inplace=True), nn.MaxPool3d(pool)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                         nn.Linear(c_in, classes))


class TemporalBlock(nn.Module):
    """Two dilated causal convolutions with a residual (Bai et al., 2018)."""

    def __init__(self, c_in, c_out, dilation, kernel=3):
        super().__init__()
        self.pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, dilation=dilation)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x):
        y = torch.relu(self.conv1(nn.functional.pad(x, (self.pad, 0))))
        y = torch.relu(self.conv2(nn.functional.pad(y, (self.pad, 0))))
        return torch.relu(y + (x if self.skip is None else self.skip(x)))


def tcn(c_in=16, width=128, levels=6, classes=10):
    blocks = [TemporalBlock(c_in if i == 0 else width, width, 2 ** i) for i in range(levels)]
    return nn.Sequential(*blocks, nn.Conv1d(width, classes, 1))


# name: (builder, input shape (without the batch), batch)
NETS = {
    "resnet50": (resnet50, (3, 224, 224), 8),
    "resnet50_b1": (resnet50, (3, 224, 224), 1),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224), 8),
    "vgg11": (vgg11, (3, 128, 128), 4),
    "unet": (UNet, (3, 128, 128), 2),
    "conv3d": (conv3d_net, (3, 16, 64, 64), 2),
    "tcn": (tcn, (16, 4000), 8),
}
# torch.nn classes and the fastconv.torch classes that replace them
SWAPS = {nn.Conv1d: fnn.Conv1d, nn.Conv2d: fnn.Conv2d, nn.Conv3d: fnn.Conv3d,
         nn.ConvTranspose2d: fnn.ConvTranspose2d, nn.MaxPool2d: fnn.MaxPool2d,
         nn.MaxPool3d: fnn.MaxPool3d, nn.AdaptiveAvgPool2d: fnn.AdaptiveAvgPool2d,
         nn.AdaptiveAvgPool3d: fnn.AdaptiveAvgPool3d}


def with_fastconv_layers(model):
    """A copy of `model` whose conv and pooling layers run fastconv (same parameters)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) in SWAPS:
            module.__class__ = SWAPS[type(module)]
    return model


# the integer type of each float parameter type's bits (see step)
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


def step(model, x, train):
    """Inference (no autograd), or a training step: forward, backward, then every parameter
    written in place as an optimizer's update writes it, so that no step reuses weights an
    earlier one transformed or packed (fastconv keeps those only while the weights' bytes
    are unchanged). The write flips the lowest bit of each value, a change of one unit in
    the last place that the next step flips back: a real update (SGD on these unnormalised
    losses) made the networks' activations overflow to inf and NaN within two steps, and
    NaN data takes other paths than a training run's."""
    if not train:
        with torch.no_grad():
            return model(x)
    model.zero_grad(set_to_none=True)
    model(x).sum().backward()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.view(_BITS[parameter.dtype]).bitwise_xor_(1)


def check_agreement(models, x, train):
    """The two copies compute the same network: each float32 output (and input gradient when
    training) is compared with a float64 run of the PyTorch copy, and fastconv's error
    (relative to the largest magnitude) must stay within 10x PyTorch's plus 1e-4. Returns the
    errors, (PyTorch's, fastconv's) per quantity."""
    def run(model, inp):
        xi = inp.detach().clone().requires_grad_(train)
        with torch.set_grad_enabled(train):
            y = model(xi)
            if train:
                y.sum().backward()
        return [y.detach()] + ([xi.grad] if train else [])

    exact = run(copy.deepcopy(models["torch"]).double(), x.double())
    got = {name: run(model, x) for name, model in models.items()}
    errors = {}
    for i, what in enumerate(["output", "input gradient"][:len(exact)]):
        scale = exact[i].abs().max().item() or 1.0
        err = {name: (got[name][i].double() - exact[i]).abs().max().item() / scale
               for name in models}
        errors[what] = (err["torch"], err["fastconv"])
        if not err["fastconv"] <= 10 * err["torch"] + 1e-4:
            raise AssertionError(f"fastconv's {what} is off: relative error {err['fastconv']:.2e} "
                             f"against float64 (PyTorch's {err['torch']:.2e})")
    return errors



_BUILT = {}


def _models(name):
    """(PyTorch copy, fastconv copy, input) of network `name`, built once per process."""
    if name not in _BUILT:
        build, shape, batch = NETS[name]
        torch.manual_seed(0)
        base = build().eval()
        _BUILT[name] = {"torch": base, "fastconv": with_fastconv_layers(base),
                        "x": torch.randn((batch,) + shape)}
    return _BUILT[name]


def _impl(name, train, which):
    def make(inp):
        torch_threads(torch, fastconv.get_num_threads())
        built = _models(name)
        models = {k: built[k] for k in ("torch", "fastconv")}
        for model in models.values():
            model.train(train)
        if which == "fastconv":
            check_agreement(models, built["x"], train)
        model, x = models[which], built["x"]
        return lambda: step(model, x, train)
    return make


def _case(name, train):
    _, shape, batch = NETS[name]
    what = "training step (forward + backward)" if train else "inference"
    return Case(name=f"models_{name}_{'train' if train else 'infer'}", family="models",
                description=f"{name}, input {(batch,) + shape}, {what}: fastconv.torch "
                            "layers vs torch.nn",
                make_inputs=lambda: {},
                impls={"fastconv": _impl(name, train, "fastconv"),
                       "torch": _impl(name, train, "torch")})


CASES = [_case(name, train) for name in NETS for train in (False, True)]
