"""Backward passes as plain functions of arrays and shapes, with the signatures of
``torch.nn.grad`` where PyTorch has one.

Each operator family defines its gradients next to its forward pass; this module gathers them
under one name so users find every backward pass in ``fastconv.grad``.
"""
from fastconv._ops.conv_grad import (
    conv1d_input, conv2d_input, conv3d_input, conv1d_weight, conv2d_weight, conv3d_weight,
    conv1d_backward, conv2d_backward, conv3d_backward, conv_bias,
)
from fastconv._ops.conv_transpose import (
    conv_transpose1d_input, conv_transpose2d_input, conv_transpose3d_input,
    conv_transpose1d_weight, conv_transpose2d_weight, conv_transpose3d_weight,
)
from fastconv._ops.locally_connected import (
    locally_connected1d_input, locally_connected2d_input, locally_connected1d_weight,
    locally_connected2d_weight, locally_connected_bias,
)

from fastconv._ops.pooling import (  # noqa: E402
    adaptive_avg_pool1d_backward as adaptive_avg_pool1d,
    adaptive_avg_pool2d_backward as adaptive_avg_pool2d,
    adaptive_avg_pool3d_backward as adaptive_avg_pool3d,
    adaptive_max_pool1d_backward as adaptive_max_pool1d,
    adaptive_max_pool2d_backward as adaptive_max_pool2d,
    adaptive_max_pool3d_backward as adaptive_max_pool3d,
    avg_pool1d_backward as avg_pool1d,
    avg_pool2d_backward as avg_pool2d,
    avg_pool3d_backward as avg_pool3d,
    max_pool1d_backward as max_pool1d,
    max_pool2d_backward as max_pool2d,
    max_pool3d_backward as max_pool3d,
    max_unpool1d_backward as max_unpool1d,
    max_unpool2d_backward as max_unpool2d,
    max_unpool3d_backward as max_unpool3d,
)
from fastconv._ops.interpolate import interpolate_backward as interpolate  # noqa: E402

__all__ = [
    "conv1d_input", "conv2d_input", "conv3d_input", "conv1d_weight", "conv2d_weight",
    "conv3d_weight", "conv1d_backward", "conv2d_backward", "conv3d_backward", "conv_bias",
    "conv_transpose1d_input", "conv_transpose2d_input", "conv_transpose3d_input",
    "conv_transpose1d_weight", "conv_transpose2d_weight", "conv_transpose3d_weight",
    "locally_connected1d_input", "locally_connected2d_input", "locally_connected1d_weight",
    "locally_connected2d_weight", "locally_connected_bias",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_unpool1d", "max_unpool2d", "max_unpool3d", "interpolate",
]
