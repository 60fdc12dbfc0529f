"""The matmul attention for CPUs: the logits of SDPA, its masks, and which models and devices use it."""

import copy

import pytest
import torch
from accelerate import Accelerator
from conftest import NEWS_TEXTS
from test_first_token import DIMS, padded_batch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
)
from transformers.masking_utils import and_masks, bidirectional_mask_function, causal_mask_function

from zsdistill.cpu_attention import (
    MATMUL_ATTENTION,
    matmul_attention,
    padding_bias,
    prefers_matmul_attention,
    use_matmul_attention,
)
from zsdistill.teacher import PairScorer, find_nli_label_ids


def logits_of(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits.float()


@pytest.mark.parametrize("teacher", ["bert_teacher", "roberta_teacher"])
def test_same_logits_as_sdpa(request, teacher):
    path = request.getfixturevalue(teacher)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa").eval()
    batch = padded_batch(tokenizer)
    assert batch["attention_mask"].min() == 0
    expected = logits_of(model, batch)

    assert use_matmul_attention(model)
    assert model.config._attn_implementation == MATMUL_ATTENTION
    torch.testing.assert_close(logits_of(model, batch), expected, atol=1e-5, rtol=0)


def test_bfloat16_error_close_to_sdpa(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    batch = padded_batch(tokenizer)
    reference = logits_of(AutoModelForSequenceClassification.from_pretrained(bert_teacher).eval(), batch)
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher, dtype=torch.bfloat16).eval()
    sdpa_error = (logits_of(model, batch) - reference).abs().max()

    assert use_matmul_attention(model)
    matmul_error = (logits_of(model, batch) - reference).abs().max()
    assert matmul_error < 2e-2
    assert matmul_error <= 2 * sdpa_error + 1e-3


def test_boolean_mask_same_as_additive():
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 3, 5, 4) for _ in range(3))
    allowed = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    allowed[0, :, :, 3:] = False
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    module = torch.nn.Module().eval()

    with_boolean, weights = matmul_attention(module, query, key, value, allowed)
    with_additive, _ = matmul_attention(module, query, key, value, additive)
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=allowed)
    assert weights is None
    assert with_boolean.shape == (2, 5, 3, 4)
    torch.testing.assert_close(with_boolean, with_additive, atol=0, rtol=0)
    torch.testing.assert_close(with_boolean, expected.transpose(1, 2), atol=1e-6, rtol=0)


def test_padding_bias_one_row_per_sequence():
    padding = torch.tensor([[True, True, False], [True, True, True]])
    bias = padding_bias(batch_size=2, q_length=3, kv_length=3, attention_mask=padding)
    assert bias.shape == (2, 1, 1, 3)
    assert bias.dtype == torch.float32
    assert bias[0, 0, 0, 2] == torch.finfo(torch.float32).min
    assert torch.count_nonzero(bias) == 1


def test_padding_bias_none_without_padding_mask():
    assert padding_bias(batch_size=2, q_length=3, kv_length=3, attention_mask=None) is None


@pytest.mark.parametrize(
    "mask_function",
    [causal_mask_function, and_masks(bidirectional_mask_function, lambda b, h, q, kv: kv <= q + 1)],
    ids=["causal", "combined"],
)
def test_padding_bias_other_masks_full(mask_function):
    padding = torch.tensor([[True, True, False], [True, True, True]])
    bias = padding_bias(batch_size=2, q_length=3, kv_length=3, mask_function=mask_function, attention_mask=padding)
    assert bias.shape == (2, 1, 3, 3)
    assert bias.dtype == torch.float32
    # The second sequence's first query may not attend to its last key under either mask.
    assert bias[1, 0, 0, 2] == torch.finfo(torch.float32).min
    assert bias[1, 0, 0, 0] == 0


@pytest.mark.parametrize(
    ("device", "dtype", "compiled", "amx", "expected"),
    [
        ("cpu", torch.bfloat16, True, False, True),
        ("cpu", torch.float16, True, False, True),
        ("cpu", torch.bfloat16, True, True, False),
        ("cpu", torch.bfloat16, False, False, False),
        ("cpu", torch.float32, True, False, False),
        ("cuda", torch.bfloat16, True, False, False),
    ],
)
def test_prefers_matmul_attention(monkeypatch, device, dtype, compiled, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert prefers_matmul_attention(torch.device(device), dtype, compiled) is expected


def test_decoder_left_alone():
    model = BertForSequenceClassification(BertConfig(vocab_size=64, is_decoder=True, num_labels=3, **DIMS)).eval()
    assert not use_matmul_attention(model)
    assert model.config._attn_implementation == "sdpa"


def test_other_attention_left_alone(bert_teacher):
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher, attn_implementation="flex_attention")
    assert not use_matmul_attention(model)
    assert model.config._attn_implementation == "flex_attention"


def test_model_without_attention_registry_left_alone(bert_teacher, monkeypatch):
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher)
    monkeypatch.setattr(type(model), "_supports_attention_backend", False)
    assert not use_matmul_attention(model)
    assert model.config._attn_implementation == "sdpa"


def make_scorer(teacher_dir, matmul_attention):
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    hypotheses = ["It is sports.", "It is business."]
    label_ids = find_nli_label_ids(model.config)
    return PairScorer(
        Accelerator(cpu=True), model, tokenizer, hypotheses, label_ids, 3, 64, matmul_attention=matmul_attention
    )


def test_scorer_same_logits_either_attention(bert_teacher):
    plain = make_scorer(bert_teacher, matmul_attention=False)
    matmul = make_scorer(bert_teacher, matmul_attention=True)
    assert not plain.matmul_attention
    assert matmul.matmul_attention
    # The last layer runs on the first token with either attention.
    assert plain.first_token_only
    assert matmul.first_token_only
    torch.testing.assert_close(matmul.score(NEWS_TEXTS), plain.score(NEWS_TEXTS), atol=1e-5, rtol=0)


@pytest.mark.parametrize("preferred", [False, True])
def test_scorer_default_follows_preference(bert_teacher, monkeypatch, preferred):
    calls = []

    def prefers(device, dtype, compiled):
        calls.append((device.type, dtype, compiled))
        return preferred

    monkeypatch.setattr("zsdistill.teacher.prefers_matmul_attention", prefers)
    scorer = make_scorer(bert_teacher, matmul_attention=None)
    assert scorer.matmul_attention is preferred
    assert calls == [("cpu", torch.float32, False)]


def test_switch_keeps_a_copy_unchanged(bert_teacher):
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher)
    pipeline_copy = copy.deepcopy(model)
    assert use_matmul_attention(model)
    assert pipeline_copy.config._attn_implementation == "sdpa"
