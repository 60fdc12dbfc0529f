"""Losses between the student's logits and the teacher's soft labels, computed in float32."""

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability distribution over the classes, averaged over the batch."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return -(soft_labels.float() * log_probs).sum(dim=-1).mean()


def soft_binary_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each class's sigmoid against its soft label, averaged over classes and batch."""
    return F.binary_cross_entropy_with_logits(logits.float(), soft_labels.float())


def distillation_loss(logits: torch.Tensor, soft_labels: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Compute the student's loss: soft-target cross-entropy for single-label, binary cross-entropy for multi-label."""
    if multi_label:
        return soft_binary_cross_entropy(logits, soft_labels)
    return soft_cross_entropy(logits, soft_labels)
