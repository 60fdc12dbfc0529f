import math

import pytest
import torch

from zsdistill.losses import distillation_loss, soft_binary_cross_entropy, soft_cross_entropy
from zsdistill.metrics import agreement_per_example
from zsdistill.soft_labels import soft_labels_from_logits
from zsdistill.teacher import TeacherLogits

ENTAILMENT = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
CONTRADICTION = torch.tensor([[-1.0, 1.0, 0.0], [0.0, 2.0, -2.0]])


def test_single_label_softmax_over_classes():
    soft = soft_labels_from_logits(TeacherLogits(ENTAILMENT, CONTRADICTION), multi_label=False)
    denominator = math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)
    assert soft[0, 0].item() == pytest.approx(math.exp(2.0) / denominator)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(2))


def test_multi_label_entailment_against_contradiction():
    soft = soft_labels_from_logits(TeacherLogits(ENTAILMENT, CONTRADICTION), multi_label=True)
    # softmax([c, e])[1] is the sigmoid of e - c.
    expected = torch.sigmoid(ENTAILMENT - CONTRADICTION)
    torch.testing.assert_close(soft, expected)


def test_temperature_smooths_and_sharpens():
    logits = TeacherLogits(ENTAILMENT, CONTRADICTION)
    plain = soft_labels_from_logits(logits, multi_label=False)
    smooth = soft_labels_from_logits(logits, multi_label=False, temperature=4.0)
    sharp = soft_labels_from_logits(logits, multi_label=False, temperature=0.25)
    assert smooth[0].max() < plain[0].max() < sharp[0].max()
    torch.testing.assert_close(smooth, torch.softmax(ENTAILMENT / 4.0, dim=-1))


def test_temperature_in_multi_label():
    soft = soft_labels_from_logits(TeacherLogits(ENTAILMENT, CONTRADICTION), multi_label=True, temperature=2.0)
    torch.testing.assert_close(soft, torch.sigmoid((ENTAILMENT - CONTRADICTION) / 2.0))


def test_single_class_uses_per_class_form():
    logits = TeacherLogits(ENTAILMENT[:, :1], CONTRADICTION[:, :1])
    soft = soft_labels_from_logits(logits, multi_label=False)
    torch.testing.assert_close(soft, torch.sigmoid(ENTAILMENT[:, :1] - CONTRADICTION[:, :1]))


def test_soft_labels_float32_from_half_logits():
    logits = TeacherLogits(ENTAILMENT.half(), CONTRADICTION.half())
    assert soft_labels_from_logits(logits, multi_label=False).dtype == torch.float32
    assert soft_labels_from_logits(logits, multi_label=True).dtype == torch.float32


def test_multi_label_without_contradiction_rejected():
    with pytest.raises(ValueError, match="contradiction"):
        soft_labels_from_logits(TeacherLogits(ENTAILMENT, None), multi_label=True)


def test_soft_cross_entropy_equals_hard_for_one_hot():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    targets = torch.tensor([1, 2])
    one_hot = torch.nn.functional.one_hot(targets, 3).float()
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot), torch.nn.functional.cross_entropy(logits, targets))


def test_soft_cross_entropy_minimal_at_target():
    target = torch.tensor([[0.7, 0.2, 0.1]])
    at_target = soft_cross_entropy(target.log(), target)
    elsewhere = soft_cross_entropy(torch.tensor([[0.0, 0.0, 0.0]]), target)
    assert at_target < elsewhere


def test_losses_in_float32_from_bfloat16():
    logits = torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16)
    targets = torch.tensor([[0.3, 0.7]])
    assert soft_cross_entropy(logits, targets).dtype == torch.float32
    assert soft_binary_cross_entropy(logits, targets).dtype == torch.float32


def test_distillation_loss_picks_by_mode():
    logits = torch.tensor([[1.0, -1.0]])
    targets = torch.tensor([[0.9, 0.4]])
    torch.testing.assert_close(
        distillation_loss(logits, targets, multi_label=True), soft_binary_cross_entropy(logits, targets)
    )
    torch.testing.assert_close(
        distillation_loss(logits, targets, multi_label=False), soft_cross_entropy(logits, targets)
    )


@pytest.mark.parametrize("multi_label", [False, True])
def test_per_example_loss_mean_is_loss(multi_label):
    logits = torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -2.0]])
    targets = torch.tensor([[0.9, 0.4, 0.1], [0.2, 0.5, 0.3]])
    per_example = distillation_loss(logits, targets, multi_label, reduction="none")
    assert per_example.shape == (2,)
    torch.testing.assert_close(per_example.mean(), distillation_loss(logits, targets, multi_label))
    torch.testing.assert_close(per_example[1], distillation_loss(logits[1:], targets[1:], multi_label))


def test_loss_invalid_reduction():
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none', got 'sum'"):
        soft_cross_entropy(torch.zeros(1, 2), torch.full((1, 2), 0.5), reduction="sum")


def test_agreement_single_label():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    teacher = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    torch.testing.assert_close(
        agreement_per_example(logits, teacher, multi_label=False), torch.tensor([1.0, 0.0, 1.0])
    )


def test_agreement_multi_label_per_class():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    teacher = torch.tensor([[0.9, 0.1, 0.2, 0.4]])
    torch.testing.assert_close(agreement_per_example(logits, teacher, multi_label=True), torch.tensor([0.75]))
