"""Losses between the student's logits and the teacher's soft labels, computed in float32.

With `reduction="mean"` each loss is averaged over the batch. With `reduction="none"` it returns one value per
example, of shape (batch,), whose mean is the "mean" loss.
"""

import torch
import torch.nn.functional as F


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against a probability distribution over the classes."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return _reduce(-(soft_labels.float() * log_probs).sum(dim=-1), reduction)


def soft_binary_cross_entropy(
    logits: torch.Tensor, soft_labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Binary cross-entropy of each class's sigmoid against its soft label, averaged over the classes."""
    per_class = F.binary_cross_entropy_with_logits(logits.float(), soft_labels.float(), reduction="none")
    return _reduce(per_class.mean(dim=-1), reduction)


def distillation_loss(
    logits: torch.Tensor, soft_labels: torch.Tensor, multi_label: bool, reduction: str = "mean"
) -> torch.Tensor:
    """Compute the student's loss: soft-target cross-entropy for single-label, binary cross-entropy for multi-label."""
    if multi_label:
        return soft_binary_cross_entropy(logits, soft_labels, reduction)
    return soft_cross_entropy(logits, soft_labels, reduction)
