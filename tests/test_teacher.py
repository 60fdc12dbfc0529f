import pytest
import torch
from accelerate import Accelerator
from conftest import CLASS_NAMES, NEWS_TEXTS, save_teacher
from transformers import AutoConfig, pipeline

from zsdistill.data import InputError
from zsdistill.models import (
    cpu_has,
    load_config_and_tokenizer,
    load_teacher,
    max_input_length,
    resolve_teacher_dtype,
    warn_if_float16_is_slow,
)
from zsdistill.soft_labels import soft_labels_from_logits
from zsdistill.teacher import (
    NLILabelIds,
    PairScorer,
    build_hypotheses,
    check_hypotheses_fit,
    find_nli_label_ids,
    plan_batches,
    score_pairs,
)

TEMPLATE = "This text is about {}."


def run_teacher(teacher_dir, texts, class_names, batch_size=3, template=TEMPLATE, max_length=None, **id_overrides):
    config, tokenizer = load_config_and_tokenizer(str(teacher_dir), "teacher")
    label_ids = find_nli_label_ids(config, **id_overrides)
    limit = max_input_length(tokenizer, config, max_length)
    hypotheses = build_hypotheses(template, class_names)
    check_hypotheses_fit(tokenizer, hypotheses, class_names, limit)
    model = load_teacher(str(teacher_dir))
    return score_pairs(Accelerator(cpu=True), model, tokenizer, texts, hypotheses, label_ids, batch_size, limit)


def pipeline_scores(teacher_dir, texts, class_names, multi_label, template=TEMPLATE) -> torch.Tensor:
    """The zero-shot pipeline's scores as an (N, K) tensor in class-name order."""
    classifier = pipeline("zero-shot-classification", model=str(teacher_dir), device="cpu")
    rows = []
    for text in texts:
        result = classifier(text, candidate_labels=class_names, hypothesis_template=template, multi_label=multi_label)
        by_label = dict(zip(result["labels"], result["scores"], strict=True))
        rows.append([by_label[name] for name in class_names])
    return torch.tensor(rows, dtype=torch.float32)


def config_with_labels(labels: list[str]):
    return AutoConfig.for_model(
        "bert", num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_scores_match_zero_shot_pipeline(architecture, multi_label, request):
    teacher_dir = request.getfixturevalue(f"{architecture}_teacher")
    logits = run_teacher(teacher_dir, NEWS_TEXTS, CLASS_NAMES)
    ours = soft_labels_from_logits(logits, multi_label=multi_label)
    expected = pipeline_scores(teacher_dir, NEWS_TEXTS, CLASS_NAMES, multi_label)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_single_class_matches_pipeline(bert_teacher):
    # The pipeline scores a lone class as entailment against contradiction, whatever multi_label is set to.
    logits = run_teacher(bert_teacher, NEWS_TEXTS[:3], ["sports"])
    ours = soft_labels_from_logits(logits, multi_label=False)
    expected = pipeline_scores(bert_teacher, NEWS_TEXTS[:3], ["sports"], multi_label=False)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(ours, torch.ones_like(ours))


def test_single_text_matches_pipeline(roberta_teacher):
    logits = run_teacher(roberta_teacher, NEWS_TEXTS[:1], CLASS_NAMES)
    assert logits.entailment.shape == (1, len(CLASS_NAMES))
    expected = pipeline_scores(roberta_teacher, NEWS_TEXTS[:1], CLASS_NAMES, multi_label=False)
    torch.testing.assert_close(soft_labels_from_logits(logits, multi_label=False), expected, atol=1e-5, rtol=0)


def test_real_contradiction_logit_differs_from_pipeline_guess(tmp_path):
    # With entailment at index 0 the pipeline takes the last logit (here neutral) as contradiction.
    teacher_dir = save_teacher(tmp_path / "ecn", ["entailment", "contradiction", "neutral"], "bert", seed=3)
    logits = run_teacher(teacher_dir, NEWS_TEXTS, CLASS_NAMES)
    ours = soft_labels_from_logits(logits, multi_label=True)
    from_pipeline = pipeline_scores(teacher_dir, NEWS_TEXTS, CLASS_NAMES, multi_label=True)
    assert (ours - from_pipeline).abs().max() > 1e-3

    # Scored with the neutral logit as the contrast, ours equals the pipeline's, so the contrast is the only change.
    logits_with_neutral = run_teacher(teacher_dir, NEWS_TEXTS, CLASS_NAMES, contradiction_id=2)
    torch.testing.assert_close(
        soft_labels_from_logits(logits_with_neutral, multi_label=True), from_pipeline, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_output_order_independent_of_batch_size(bert_teacher, batch_size):
    reference = run_teacher(bert_teacher, NEWS_TEXTS, CLASS_NAMES, batch_size=3)
    logits = run_teacher(bert_teacher, NEWS_TEXTS, CLASS_NAMES, batch_size=batch_size)
    torch.testing.assert_close(logits.entailment, reference.entailment, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits.contradiction, reference.contradiction, atol=1e-5, rtol=0)


def test_each_row_is_its_own_text(bert_teacher):
    # Scoring texts one at a time gives the same rows as scoring them together, so no row belongs to another text.
    together = run_teacher(bert_teacher, NEWS_TEXTS, CLASS_NAMES, batch_size=4)
    for index in (0, 3, len(NEWS_TEXTS) - 1):
        alone = run_teacher(bert_teacher, [NEWS_TEXTS[index]], CLASS_NAMES)
        torch.testing.assert_close(together.entailment[index], alone.entailment[0], atol=1e-5, rtol=0)


def test_long_text_truncated_to_position_limit(tmp_path):
    # This tokenizer sets no limit, so the 64 position embeddings are the limit.
    teacher_dir = save_teacher(
        tmp_path / "nolimit", ["entailment", "neutral", "contradiction"], tokenizer_max_length=None
    )
    long_text = " ".join(["football"] * 500)
    logits = run_teacher(teacher_dir, [long_text, NEWS_TEXTS[0]], CLASS_NAMES)
    assert logits.entailment.shape == (2, len(CLASS_NAMES))
    assert torch.isfinite(logits.entailment).all()


def test_long_text_matches_pipeline_truncation(bert_teacher):
    long_text = " ".join(["market"] * 300)
    logits = run_teacher(bert_teacher, [long_text], CLASS_NAMES)
    expected = pipeline_scores(bert_teacher, [long_text], CLASS_NAMES, multi_label=False)
    torch.testing.assert_close(soft_labels_from_logits(logits, multi_label=False), expected, atol=1e-5, rtol=0)


def test_max_length_flag_lowers_limit(bert_teacher):
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    assert max_input_length(tokenizer, config, None) == 64
    assert max_input_length(tokenizer, config, 16) == 16
    assert max_input_length(tokenizer, config, 1000) == 64


def test_max_length_above_limit_logged(bert_teacher, caplog):
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    with caplog.at_level("WARNING", logger="zsdistill.models"):
        max_input_length(tokenizer, config, 16)
        assert caplog.text == ""
        max_input_length(tokenizer, config, 1000)
    assert "--max_length 1000 is above the limit" in caplog.text
    assert "truncated at 64 tokens" in caplog.text


def test_roberta_position_offset(roberta_teacher):
    config, tokenizer = load_config_and_tokenizer(str(roberta_teacher), "teacher")
    assert config.max_position_embeddings == 65
    assert max_input_length(tokenizer, config, None) == 64


def test_hypothesis_too_long_names_class(bert_teacher):
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    class_names = ["sports", "a very long class name " * 10]
    hypotheses = build_hypotheses(TEMPLATE, class_names)
    with pytest.raises(InputError, match="a very long class name") as raised:
        check_hypotheses_fit(tokenizer, hypotheses, class_names, 32)
    assert "--max_length" in str(raised.value)
    # The message quotes at most 80 characters of the class name and of the hypothesis.
    assert len(str(raised.value)) < 500
    check_hypotheses_fit(tokenizer, hypotheses[:1], class_names[:1], 32)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["entailment", "neutral", "contradiction"], NLILabelIds(0, 2)),
        (["CONTRADICTION", "NEUTRAL", "ENTAILMENT"], NLILabelIds(2, 0)),
        (["Entailment", "Contradiction", "Neutral"], NLILabelIds(0, 1)),
        (["entailment", "not_entailment"], NLILabelIds(0, 1)),
        (["not_entailment", "entailment"], NLILabelIds(1, 0)),
        (["entailment", "neutral"], NLILabelIds(0, None)),
    ],
)
def test_label_ids_found_by_name(labels, expected):
    assert find_nli_label_ids(config_with_labels(labels)) == expected


def test_label_ids_without_entailment_rejected():
    with pytest.raises(InputError, match="no entailment class") as raised:
        find_nli_label_ids(config_with_labels(["LABEL_0", "LABEL_1", "LABEL_2"]))
    assert "--entailment_id" in str(raised.value)
    assert "LABEL_0" in str(raised.value)


def test_label_ids_overridden():
    config = config_with_labels(["LABEL_0", "LABEL_1", "LABEL_2"])
    assert find_nli_label_ids(config, entailment_id=2, contradiction_id=0) == NLILabelIds(2, 0)


def test_entailment_override_on_named_contradiction():
    # The names are wrong if entailment is the logit named contradiction, so that name is not used either.
    config = config_with_labels(["entailment", "neutral", "contradiction"])
    assert find_nli_label_ids(config, entailment_id=2) == NLILabelIds(2, None)
    assert find_nli_label_ids(config, entailment_id=1) == NLILabelIds(1, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"entailment_id": 3}, "--entailment_id 3 is out of range"),
        ({"entailment_id": -1}, "--entailment_id -1 is out of range"),
        ({"entailment_id": 0, "contradiction_id": 5}, "--contradiction_id 5 is out of range"),
        ({"entailment_id": 1, "contradiction_id": 1}, "both 1"),
    ],
)
def test_label_id_overrides_checked(overrides, message):
    with pytest.raises(InputError, match=message):
        find_nli_label_ids(config_with_labels(["LABEL_0", "LABEL_1", "LABEL_2"]), **overrides)


def test_missing_teacher_path_rejected(tmp_path):
    with pytest.raises(InputError, match="was not found: no such local directory"):
        load_config_and_tokenizer(str(tmp_path / "no_such_model"), "teacher")


def test_unavailable_hub_teacher_rejected():
    # The tests run with HF_HUB_OFFLINE=1, so a Hub name that is not cached cannot load.
    with pytest.raises(InputError, match="Could not load the teacher 'no-such-org/no-such-model'") as raised:
        load_config_and_tokenizer("no-such-org/no-such-model", "teacher")
    assert "local path" in str(raised.value)


def test_mixed_precision_scores_close(bert_teacher):
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    label_ids = find_nli_label_ids(config)
    hypotheses = build_hypotheses(TEMPLATE, CLASS_NAMES)
    reference = run_teacher(bert_teacher, NEWS_TEXTS, CLASS_NAMES)

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    logits = score_pairs(
        accelerator, load_teacher(str(bert_teacher)), tokenizer, NEWS_TEXTS, hypotheses, label_ids, 4, 64
    )
    assert logits.entailment.dtype == torch.float32
    torch.testing.assert_close(logits.entailment, reference.entailment, atol=5e-2, rtol=0)


def test_non_finite_logits_stop_pass(bert_teacher):
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    model = load_teacher(str(bert_teacher))
    with torch.no_grad():
        model.classifier.bias.fill_(float("inf"))
    hypotheses = build_hypotheses(TEMPLATE, CLASS_NAMES)
    with pytest.raises(FloatingPointError, match="--teacher_dtype float32") as raised:
        score_pairs(Accelerator(cpu=True), model, tokenizer, NEWS_TEXTS, hypotheses, find_nli_label_ids(config), 4, 64)
    named_texts = [text for text in NEWS_TEXTS if repr(text[:40])[1:-1] in str(raised.value)]
    assert len(named_texts) == 1


def test_plan_batches_sorted_longest_first():
    lengths = [5, 9, 2, 9, 7, 3, 1]
    steps = plan_batches(lengths, batch_size=2, max_tokens=None, num_processes=1)
    batches = [batch for step in steps for batch in step]
    assert [[lengths[index] for index in batch] for batch in batches] == [[9, 9], [7, 5], [3, 2], [1]]
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))


def test_plan_batches_token_budget():
    lengths = [10, 10, 10, 4, 4, 4, 4, 4, 30]
    steps = plan_batches(lengths, batch_size=100, max_tokens=20, num_processes=1)
    batches = [batch for step in steps for batch in step]
    # A pair longer than the budget still gets a batch of its own.
    assert [len(batch) for batch in batches] == [1, 2, 2, 4]
    for batch in batches[1:]:
        assert len(batch) * max(lengths[index] for index in batch) <= 20


def test_plan_batches_dealt_to_processes():
    lengths = list(range(1, 12))
    steps = plan_batches(lengths, batch_size=2, max_tokens=None, num_processes=2)
    # Six batches of at most two pairs, two per step: the last step has one batch, for the first process.
    assert [len(step) for step in steps] == [2, 2, 2]
    assert [len(batch) for batch in steps[-1]] == [2, 1]
    assert len(plan_batches(lengths, batch_size=4, max_tokens=None, num_processes=2)[-1]) == 1


@pytest.mark.parametrize("max_tokens", [None, 60])
def test_token_budget_keeps_scores(bert_teacher, max_tokens):
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    hypotheses = build_hypotheses(TEMPLATE, CLASS_NAMES)
    model = load_teacher(str(bert_teacher))
    label_ids = find_nli_label_ids(config)
    expected = run_teacher(bert_teacher, NEWS_TEXTS, CLASS_NAMES, batch_size=1)
    logits = score_pairs(
        Accelerator(cpu=True), model, tokenizer, NEWS_TEXTS, hypotheses, label_ids, 16, 64, max_tokens=max_tokens
    )
    torch.testing.assert_close(logits.entailment, expected.entailment, atol=1e-5, rtol=0)


def test_pairs_over_token_budget_warned_once(bert_teacher, caplog):
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    hypotheses = build_hypotheses(TEMPLATE, CLASS_NAMES)
    model = load_teacher(str(bert_teacher))
    scorer = PairScorer(
        Accelerator(cpu=True), model, tokenizer, hypotheses, find_nli_label_ids(config), 16, 64, max_tokens=3
    )
    with caplog.at_level("WARNING"):
        first = scorer.score(NEWS_TEXTS[:2])
        scorer.score(NEWS_TEXTS[2:4])
    warnings = [record.message for record in caplog.records if "--teacher_max_tokens 3" in record.message]
    assert len(warnings) == 1
    assert f"{2 * len(CLASS_NAMES)} of {2 * len(CLASS_NAMES)} pairs are longer" in warnings[0]
    expected = run_teacher(bert_teacher, NEWS_TEXTS[:2], CLASS_NAMES, batch_size=1)
    torch.testing.assert_close(first[..., 0], expected.entailment, atol=1e-5, rtol=0)


def test_out_of_memory_halves_batch(bert_teacher, caplog):
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    model = load_teacher(str(bert_teacher))
    forward = model.forward
    batch_sizes = []

    def forward_with_memory_limit(input_ids, **inputs):
        batch_sizes.append(len(input_ids))
        if len(input_ids) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(input_ids=input_ids, **inputs)

    model.forward = forward_with_memory_limit
    hypotheses = build_hypotheses(TEMPLATE, CLASS_NAMES)
    logits = score_pairs(
        Accelerator(cpu=True), model, tokenizer, NEWS_TEXTS, hypotheses, find_nli_label_ids(config), 8, 64
    )
    assert batch_sizes[:2] == [8, 4]
    assert max(batch_sizes[2:]) == 2
    assert "retrying with 2 pairs per batch" in caplog.text
    expected = run_teacher(bert_teacher, NEWS_TEXTS, CLASS_NAMES)
    torch.testing.assert_close(logits.entailment, expected.entailment, atol=1e-5, rtol=0)


@pytest.mark.parametrize("supported", [False, True])
def test_cpu_has_follows_torch_check(monkeypatch, supported):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: supported, raising=False)
    assert cpu_has("_is_amx_tile_supported") is supported


def test_cpu_has_missing_check_false(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert cpu_has("_is_amx_tile_supported") is False


@pytest.mark.parametrize(
    ("dtype", "device", "amx_fp16", "warned"),
    [
        (torch.float16, "cpu", False, True),
        (torch.float16, "cpu", True, False),
        (torch.bfloat16, "cpu", False, False),
        (torch.float16, "cuda", False, False),
    ],
)
def test_float16_on_cpu_warning(monkeypatch, caplog, dtype, device, amx_fp16, warned):
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: amx_fp16)
    with caplog.at_level("WARNING", logger="zsdistill.models"):
        warn_if_float16_is_slow(dtype, torch.device(device))
    assert ("this CPU has no AMX-FP16" in caplog.text) == warned


def test_teacher_dtype_resolution():
    assert resolve_teacher_dtype("float16", torch.device("cpu")) == torch.float16
    assert resolve_teacher_dtype("float32", torch.device("cuda")) == torch.float32
    assert resolve_teacher_dtype("auto", torch.device("mps")) == torch.float32
    assert resolve_teacher_dtype("auto", torch.device("cpu")) in (torch.bfloat16, torch.float32)


def test_teacher_loaded_in_bfloat16(bert_teacher):
    model = load_teacher(str(bert_teacher), torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    config, tokenizer = load_config_and_tokenizer(str(bert_teacher), "teacher")
    hypotheses = build_hypotheses(TEMPLATE, CLASS_NAMES)
    logits = score_pairs(
        Accelerator(cpu=True), model, tokenizer, NEWS_TEXTS, hypotheses, find_nli_label_ids(config), 4, 64
    )
    assert logits.entailment.dtype == torch.float32
    expected = run_teacher(bert_teacher, NEWS_TEXTS, CLASS_NAMES)
    torch.testing.assert_close(logits.entailment, expected.entailment, atol=5e-2, rtol=0)
