"""Tokenize (text, hypothesis) pairs: each text and each hypothesis once, joined as the tokenizer would join them."""

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

# Pairs of the first texts that are also tokenized the usual way, to check the joined ones against.
_CHECKED_TEXTS = 8


@dataclass(frozen=True)
class PairLayout:
    """The special tokens a tokenizer puts around a pair: prefix, text, middle, hypothesis, suffix."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    # Token type ids of the five parts, or None for a tokenizer without them.
    type_ids: tuple[list[int], int, list[int], int, list[int]] | None


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], hypotheses: list[str], max_length: int
) -> dict[str, list[list[int]]]:
    """Tokenize every (text, hypothesis) pair, without padding, as `tokenizer(text, hypothesis)` would.

    Pair `i` is text `i // K` with hypothesis `i % K`. Only the text (the premise) is truncated, as in transformers'
    zero-shot pipeline, so that every hypothesis stays whole. Each text is tokenized once rather than once per
    hypothesis, and the special tokens are placed as the tokenizer places them around its first pair. The pairs of
    the first texts are also tokenized whole; if any differs, every pair is tokenized whole.
    """
    if not texts:
        return {name: [] for name in tokenizer.model_input_names}
    expected = _tokenize_whole(tokenizer, texts[:_CHECKED_TEXTS], hypotheses, max_length)
    layout = find_pair_layout(tokenizer, expected, texts[0], hypotheses[0])
    if layout is None:
        return _tokenize_whole(tokenizer, texts, hypotheses, max_length)

    joined = _join_pairs(tokenizer, layout, texts, hypotheses, max_length)
    num_checked = len(expected["input_ids"])
    if (
        joined is None
        or joined.keys() != expected.keys()
        or any(joined[name][:num_checked] != expected[name] for name in expected)
    ):
        return _tokenize_whole(tokenizer, texts, hypotheses, max_length)
    return joined


def find_pair_layout(
    tokenizer: PreTrainedTokenizerBase, encodings: dict[str, list[list[int]]], text: str, hypothesis: str
) -> PairLayout | None:
    """Find the special tokens around the first pair of `encodings`, the whole encoding of (text, hypothesis)."""
    ids, types = encodings["input_ids"][0], encodings.get("token_type_ids", [None])[0]
    text_ids = _tokenize_alone(tokenizer, [text])[0]
    hypothesis_ids = _tokenize_alone(tokenizer, [hypothesis])[0]
    # The whole encoding may contain a truncated text. The count of its kept tokens follows from the hypothesis,
    # which is never truncated, and from the number of special tokens.
    num_special = tokenizer.num_special_tokens_to_add(pair=True)
    num_kept = len(ids) - num_special - len(hypothesis_ids)
    if num_kept < 1 or not hypothesis_ids:
        return None
    text_ids = text_ids[:num_kept] if tokenizer.truncation_side == "right" else text_ids[len(text_ids) - num_kept :]

    for prefix_length in range(num_special + 1):
        for suffix_length in range(num_special - prefix_length + 1):
            middle_length = num_special - prefix_length - suffix_length
            text_end = prefix_length + num_kept
            hypothesis_start = text_end + middle_length
            if (
                ids[prefix_length:text_end] != text_ids
                or ids[hypothesis_start : hypothesis_start + len(hypothesis_ids)] != hypothesis_ids
            ):
                continue

            parts = (slice(0, prefix_length), slice(text_end, hypothesis_start), slice(len(ids) - suffix_length, None))
            type_ids = None
            if types is not None:
                type_ids = (
                    types[parts[0]],
                    types[prefix_length],
                    types[parts[1]],
                    types[hypothesis_start],
                    types[parts[2]],
                )
            return PairLayout(ids[parts[0]], ids[parts[1]], ids[parts[2]], type_ids)
    return None


def _join_pairs(tokenizer, layout: PairLayout, texts, hypotheses, max_length) -> dict[str, list[list[int]]] | None:
    """Join each text's tokens with each hypothesis's, truncating the text to fit; None if a hypothesis cannot fit."""
    num_special = len(layout.prefix) + len(layout.middle) + len(layout.suffix)
    text_ids = _tokenize_alone(tokenizer, texts)
    hypothesis_ids = _tokenize_alone(tokenizer, hypotheses)
    budgets = [max_length - num_special - len(ids) for ids in hypothesis_ids]
    if min(budgets) < 1:
        return None
    left = tokenizer.truncation_side == "left"
    input_ids, token_type_ids = [], []
    for ids in text_ids:
        for hypothesis, budget in zip(hypothesis_ids, budgets, strict=True):
            kept_ids = ids
            if len(ids) > budget:
                kept_ids = ids[len(ids) - budget :] if left else ids[:budget]
            input_ids.append(layout.prefix + kept_ids + layout.middle + hypothesis + layout.suffix)
            if layout.type_ids is not None:
                prefix, text_type, middle, hypothesis_type, suffix = layout.type_ids
                token_type_ids.append(
                    prefix + [text_type] * len(kept_ids) + middle + [hypothesis_type] * len(hypothesis) + suffix
                )
    encodings = {"input_ids": input_ids}
    if "attention_mask" in tokenizer.model_input_names:
        encodings["attention_mask"] = [[1] * len(ids) for ids in input_ids]
    if "token_type_ids" in tokenizer.model_input_names:
        if layout.type_ids is None:
            return None
        encodings["token_type_ids"] = token_type_ids
    return encodings


def _tokenize_alone(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    # verbose=False keeps the tokenizer from warning about texts longer than the model's limit: they are truncated
    # when joined.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _tokenize_whole(tokenizer, texts, hypotheses, max_length) -> dict[str, list[list[int]]]:
    num_classes = len(hypotheses)
    encodings = tokenizer(
        [text for text in texts for _ in range(num_classes)],
        hypotheses * len(texts),
        truncation="only_first",
        max_length=max_length,
    )
    return {name: encodings[name] for name in tokenizer.model_input_names if name in encodings}
