"""Backward passes as plain functions of arrays and shapes, with the signatures of
``torch.nn.grad`` where PyTorch has one.

Each operator family defines its gradients next to its forward pass; this module gathers them
under one name so users find every backward pass in ``fastconv.grad``.
"""
__all__ = []
