"""Turn the teacher's entailment and contradiction logits into the student's soft labels."""

import torch

from zsdistill.teacher import TeacherLogits


def soft_labels_from_logits(logits: TeacherLogits, multi_label: bool, temperature: float = 1.0) -> torch.Tensor:
    """Return soft labels of shape (N, K) in float32, computed as transformers' zero-shot pipeline scores.

    Single-label: a softmax over the K classes of each text's entailment logits, divided by `temperature`.
    Multi-label: for each class on its own, the softmax of (contradiction, entailment) / `temperature`, which gives
    the probability that the text entails the class's hypothesis. With one class this form is always used, since a
    softmax over one class is 1.0 whatever the logits are.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    entailment = logits.entailment.float() / temperature
    num_classes = entailment.shape[1]

    if not multi_label and num_classes > 1:
        return torch.softmax(entailment, dim=-1)

    if logits.contradiction is None:
        raise ValueError("multi-label soft labels need the teacher's contradiction logits")
    contradiction = logits.contradiction.float() / temperature
    pair = torch.stack([contradiction, entailment], dim=-1)
    return torch.softmax(pair, dim=-1)[..., 1].contiguous()
