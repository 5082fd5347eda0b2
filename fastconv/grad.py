"""Backward passes as plain functions of arrays and shapes, with the signatures of
``torch.nn.grad`` where PyTorch has one.

Each operator family defines its gradients next to its forward pass; this module gathers them
under one name so users find every backward pass in ``fastconv.grad``.
"""
from fastconv.pooling import (  # noqa: E402
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
from fastconv.resample import interpolate_backward as interpolate  # noqa: E402

__all__ = [
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_unpool1d", "max_unpool2d", "max_unpool3d", "interpolate",
]
