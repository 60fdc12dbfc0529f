"""The last layer on the first token only: the same logits, less work, and other models left alone."""

import copy

import pytest
import torch
from accelerate import Accelerator
from conftest import NEWS_TEXTS, build_tokenizer
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from zsdistill.first_token import run_last_layer_on_first_token
from zsdistill.teacher import PairScorer, find_nli_label_ids

DIMS = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def padded_batch(tokenizer, num_texts: int = 4) -> dict:
    # Texts of different lengths, so the batch has padding and the mask is not skipped.
    return tokenizer(
        NEWS_TEXTS[:num_texts], ["This text is about sports."] * num_texts, padding=True, return_tensors="pt"
    )


def assert_same_logits(model: torch.nn.Module, batch: dict) -> None:
    unchanged = copy.deepcopy(model)
    assert run_last_layer_on_first_token(model)
    with torch.no_grad():
        expected = unchanged(**batch).logits
        logits = model(**batch).logits
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("teacher", ["bert_teacher", "roberta_teacher"])
def test_saved_teachers_same_logits(request, teacher, attention):
    path = request.getfixturevalue(teacher)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation=attention).eval()
    batch = padded_batch(tokenizer)
    assert batch["attention_mask"].min() == 0
    assert_same_logits(model, batch)


@pytest.mark.parametrize(
    ("config_class", "model_class"),
    [
        (ElectraConfig, ElectraForSequenceClassification),
        (XLMRobertaConfig, XLMRobertaForSequenceClassification),
    ],
)
def test_other_heads_same_logits(config_class, model_class):
    tokenizer = build_tokenizer(token_type_ids=config_class is ElectraConfig)
    extra = {"embedding_size": 32} if config_class is ElectraConfig else {"pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    config = config_class(vocab_size=len(tokenizer), max_position_embeddings=80, num_labels=3, **DIMS, **extra)
    model = model_class(config).eval()
    assert_same_logits(model, padded_batch(tokenizer))


def test_bfloat16_close_to_unchanged(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    batch = padded_batch(tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher, dtype=torch.bfloat16).eval()
    unchanged = copy.deepcopy(model)
    assert run_last_layer_on_first_token(model)
    with torch.no_grad():
        expected = unchanged(**batch).logits.float()
        logits = model(**batch).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, atol=2e-2, rtol=0)


def test_autocast_same_as_without(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    batch = padded_batch(tokenizer)
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher).eval()
    unchanged = copy.deepcopy(model)
    assert run_last_layer_on_first_token(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = unchanged(**batch).logits.float()
        logits = model(**batch).logits.float()
    torch.testing.assert_close(logits, expected, atol=2e-2, rtol=0)


def test_last_layer_returns_first_position(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher).eval()
    run_last_layer_on_first_token(model)
    batch = padded_batch(tokenizer, num_texts=3)
    with torch.no_grad():
        hidden = model.bert(**batch).last_hidden_state
    assert hidden.shape == (3, 1, model.config.hidden_size)


def test_second_call_changes_nothing(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher).eval()
    batch = padded_batch(tokenizer)
    assert run_last_layer_on_first_token(model)
    with torch.no_grad():
        once = model(**batch).logits
    assert run_last_layer_on_first_token(model)
    with torch.no_grad():
        twice = model(**batch).logits
    torch.testing.assert_close(twice, once, atol=0, rtol=0)


def test_model_in_training_mode_left_alone(bert_teacher):
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher).train()
    assert not run_last_layer_on_first_token(model)
    assert "forward" not in vars(model.bert.encoder.layer[-1])


def test_head_over_every_token_left_alone(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    model = AutoModelForTokenClassification.from_pretrained(bert_teacher).eval()
    batch = padded_batch(tokenizer, num_texts=2)
    assert not run_last_layer_on_first_token(model)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape


def test_unlisted_architecture_left_alone():
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=3)
    assert not run_last_layer_on_first_token(DistilBertForSequenceClassification(config).eval())


def test_decoder_left_alone():
    config = BertConfig(vocab_size=64, is_decoder=True, num_labels=3, **DIMS)
    assert not run_last_layer_on_first_token(BertForSequenceClassification(config).eval())


def test_other_attention_left_alone(bert_teacher):
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher, attn_implementation="flex_attention")
    assert not run_last_layer_on_first_token(model.eval())


def test_scorer_runs_first_token_only(bert_teacher):
    model = AutoModelForSequenceClassification.from_pretrained(bert_teacher)
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    scorer = PairScorer(
        Accelerator(cpu=True), model, tokenizer, ["It is sports."], find_nli_label_ids(model.config), 4, 64
    )
    assert scorer.first_token_only
    assert model.bert.encoder.layer[-1].runs_on_first_token
