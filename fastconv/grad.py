"""Backward passes as plain functions of arrays and shapes, with the signatures of
``torch.nn.grad`` where PyTorch has one.

Each operator family defines its gradients next to its forward pass; this module gathers them
under one name so users find every backward pass in ``fastconv.grad``.
"""
from fastconv.conv_grad import (
    conv1d_input, conv2d_input, conv3d_input, conv1d_weight, conv2d_weight, conv3d_weight,
    conv_bias,
)
from fastconv.conv_transpose import (
    conv_transpose1d_input, conv_transpose2d_input, conv_transpose3d_input,
    conv_transpose1d_weight, conv_transpose2d_weight, conv_transpose3d_weight,
)
from fastconv.locally_connected import (
    locally_connected1d_input, locally_connected2d_input, locally_connected1d_weight,
    locally_connected2d_weight, locally_connected_bias,
)

__all__ = [
    "conv1d_input", "conv2d_input", "conv3d_input", "conv1d_weight", "conv2d_weight",
    "conv3d_weight", "conv_bias",
    "conv_transpose1d_input", "conv_transpose2d_input", "conv_transpose3d_input",
    "conv_transpose1d_weight", "conv_transpose2d_weight", "conv_transpose3d_weight",
    "locally_connected1d_input", "locally_connected2d_input", "locally_connected1d_weight",
    "locally_connected2d_weight", "locally_connected_bias",
]
