"""Agreement between the student's and the teacher's decisions."""

import torch


def agreement_per_example(logits: torch.Tensor, soft_labels: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Return, per example, the share of decisions on which student and teacher agree.

    Single-label: 1.0 where the student's top class is the teacher's. Multi-label: the share of classes on which
    both are on the same side of 0.5.
    """
    if multi_label:
        student = torch.sigmoid(logits.float()) > 0.5
        teacher = soft_labels > 0.5
        return (student == teacher).float().mean(dim=-1)
    return (logits.argmax(dim=-1) == soft_labels.argmax(dim=-1)).float()
