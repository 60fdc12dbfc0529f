"""torch.compile on the teacher: the same scores as without it, and a fallback when compiling fails."""

import logging

import pytest
import torch
from accelerate import Accelerator
from conftest import CLASS_NAMES, NEWS_TEXTS
from safetensors.torch import load_file
from test_teacher_cache import teacher_argv

from zsdistill.cli import COMPILE_MIN_PAIRS, main
from zsdistill.models import load_config_and_tokenizer, load_teacher
from zsdistill.teacher import PairScorer, build_hypotheses, find_nli_label_ids, should_compile_teacher

TEMPLATE = "This text is about {}."


def make_scorer(teacher_dir, compile_teacher, class_names=CLASS_NAMES, batch_size=3, matmul_attention=None):
    config, tokenizer = load_config_and_tokenizer(str(teacher_dir), "teacher")
    model = load_teacher(str(teacher_dir))
    hypotheses = build_hypotheses(TEMPLATE, class_names)
    return PairScorer(
        Accelerator(cpu=True),
        model,
        tokenizer,
        hypotheses,
        find_nli_label_ids(config),
        batch_size,
        64,
        compile_teacher=compile_teacher,
        matmul_attention=matmul_attention,
    )


@pytest.mark.parametrize(
    ("choice", "pairs", "expected"),
    [
        ("auto", COMPILE_MIN_PAIRS - 1, False),
        ("auto", COMPILE_MIN_PAIRS, True),
        ("yes", 1, True),
        ("no", 10 * COMPILE_MIN_PAIRS, False),
    ],
)
def test_compile_choice(choice, pairs, expected):
    assert should_compile_teacher(choice, pairs) is expected


@pytest.mark.parametrize("matmul_attention", [False, True], ids=["sdpa", "matmul"])
def test_compiled_teacher_matches_uncompiled(bert_teacher, matmul_attention):
    eager = make_scorer(bert_teacher, compile_teacher=False, matmul_attention=False)
    compiled = make_scorer(bert_teacher, compile_teacher=True, matmul_attention=matmul_attention)
    assert compiled.compiled_model is not None
    assert compiled.matmul_attention is matmul_attention

    # Batches of several lengths and sizes run through the one compiled graph, including a batch of one pair: the
    # first text's 4 pairs go in batches of 3 and 1.
    torch.testing.assert_close(compiled.score(NEWS_TEXTS), eager.score(NEWS_TEXTS), atol=1e-4, rtol=0)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs >= 1
    for texts in (NEWS_TEXTS[:1], NEWS_TEXTS[2:6]):
        torch.testing.assert_close(compiled.score(texts), eager.score(texts), atol=1e-4, rtol=0)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert compiled.compiled_model is not None


def test_failed_compile_scores_without_it(bert_teacher, monkeypatch, caplog):
    def failing_compile(model, **kwargs):
        def run(**batch):
            raise RuntimeError("no C++ compiler found\nsecond line")

        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    scorer = make_scorer(bert_teacher, compile_teacher=True)
    with caplog.at_level(logging.WARNING):
        logits = scorer.score(NEWS_TEXTS)

    assert scorer.compiled_model is None
    torch.testing.assert_close(logits, make_scorer(bert_teacher, compile_teacher=False).score(NEWS_TEXTS))
    assert "torch.compile failed on the teacher (RuntimeError: no C++ compiler found)" in caplog.text
    assert "second line" not in caplog.text


def test_teacher_command_reports_compiling(tmp_path, news_files, bert_teacher, caplog):
    runs = {}
    for choice in ("yes", "auto"):
        output_dir = tmp_path / choice
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert main(teacher_argv(*news_files, output_dir, bert_teacher, "--teacher_compile", choice)) == 0
        runs[choice] = load_file(output_dir / "teacher_predictions.safetensors")
        if choice == "yes":
            assert "Compiling the teacher with torch.compile for 32 pairs (--teacher_compile yes)" in caplog.text
            assert "because it compiled the teacher" in caplog.text
        else:
            assert "Not compiling the teacher: 32 pairs to score, fewer than the 50,000" in caplog.text
            assert "compiled the teacher" not in caplog.text

    assert runs["yes"].keys() == runs["auto"].keys()
    for name in runs["yes"]:
        torch.testing.assert_close(runs["yes"][name], runs["auto"][name], atol=1e-4, rtol=0)
