"""A test double for a broken exporter (also injected into a real `nas-rl` process by tests/test_export.py)."""

from __future__ import annotations

import copy

import torch


def perturbed(model: torch.nn.Module, amount: float = 0.5) -> torch.nn.Module:
    """A copy of the model whose classifier bias is off by ``amount``: what an exporter with a bug would write."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.bias += amount
    return other
