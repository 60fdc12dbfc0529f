"""The teacher pass's on-disk chunks: reuse, resumption after a kill, and rejection of predictions for other inputs."""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import CLASS_NAMES, NEWS_TEXTS, write_lines

from zsdistill.cli import main
from zsdistill.data import find_distinct_texts
from zsdistill.predictions import TeacherCache, load_teacher_predictions
from zsdistill.teacher_pass import chunk_bounds

TEMPLATE = "This text is about {}."


def teacher_argv(data_file, class_file, output_dir, teacher, *extra: str) -> list[str]:
    return [
        "teacher",
        "--data_file",
        str(data_file),
        "--class_names_file",
        str(class_file),
        "--output_dir",
        str(output_dir),
        "--teacher_name_or_path",
        str(teacher),
        "--hypothesis_template",
        TEMPLATE,
        "--teacher_batch_size",
        "3",
        "--teacher_dtype",
        "float32",
        "--cpu",
        *extra,
    ]


def load_logits(output_dir):
    logits, _ = load_teacher_predictions(output_dir / "teacher_predictions.safetensors")
    return logits


def many_texts(count: int) -> list[str]:
    """Distinct texts of varied length, so that sorting by length reorders them."""
    return [f"{NEWS_TEXTS[i % len(NEWS_TEXTS)]} {' '.join(['item'] * (i % 7))} number {i}" for i in range(count)]


def test_find_distinct_texts_maps_duplicates():
    distinct = find_distinct_texts(["a", "b", "a", "c", "b"])
    assert distinct.texts == ["a", "b", "c"]
    assert distinct.index_of_example == [0, 1, 0, 2, 1]


def test_chunk_bounds_cover_texts():
    assert chunk_bounds(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert chunk_bounds(2, 5) == [(0, 2)]


def test_duplicates_scored_once_and_copied(tmp_path, bert_teacher, capsys, caplog):
    caplog.set_level(logging.INFO)
    texts = NEWS_TEXTS + NEWS_TEXTS[:3]
    data_file = write_lines(tmp_path / "texts.txt", texts)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    output_dir = tmp_path / "out"
    assert main(teacher_argv(data_file, class_file, output_dir, bert_teacher)) == 0

    logits = load_logits(output_dir)
    assert logits.entailment.shape == (len(texts), len(CLASS_NAMES))
    for copy, original in zip(range(len(NEWS_TEXTS), len(texts)), range(3), strict=True):
        assert torch.equal(logits.entailment[copy], logits.entailment[original])
        assert torch.equal(logits.contradiction[copy], logits.contradiction[original])
    assert f"{len(NEWS_TEXTS)} distinct" in capsys.readouterr().err
    assert f"{len(NEWS_TEXTS) * len(CLASS_NAMES)} pairs scored" in caplog.text


def test_chunked_pass_equals_single_chunk(tmp_path, bert_teacher):
    data_file = write_lines(tmp_path / "texts.txt", many_texts(30))
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    assert main(teacher_argv(data_file, class_file, tmp_path / "one", bert_teacher)) == 0
    assert main(teacher_argv(data_file, class_file, tmp_path / "many", bert_teacher, "--teacher_chunk_size", "8")) == 0

    one, many = load_logits(tmp_path / "one"), load_logits(tmp_path / "many")
    torch.testing.assert_close(many.entailment, one.entailment, atol=1e-6, rtol=0)
    torch.testing.assert_close(many.contradiction, one.contradiction, atol=1e-6, rtol=0)
    # The chunks are merged into the final file and removed.
    assert not (tmp_path / "many" / "teacher_chunks").exists()


def test_complete_predictions_reused_without_teacher(tmp_path, bert_teacher, news_files, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    output_dir = tmp_path / "out"
    assert main(teacher_argv(*news_files, output_dir, bert_teacher)) == 0
    first = load_logits(output_dir)

    def fail_to_load(*args, **kwargs):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr("zsdistill.distill.load_teacher", fail_to_load)
    caplog.clear()
    assert main(teacher_argv(*news_files, output_dir, bert_teacher)) == 0
    assert "the teacher is not loaded" in caplog.text
    assert torch.equal(load_logits(output_dir).entailment, first.entailment)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("template", "hypothesis template"),
        ("classes", "class names"),
        ("data", "texts of the data file"),
        ("teacher", "teacher"),
        ("max_length", "max length"),
    ],
)
def test_other_inputs_stop_run(tmp_path, bert_teacher, roberta_teacher, capsys, change, named):
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    output_dir = tmp_path / "out"
    assert main(teacher_argv(data_file, class_file, output_dir, bert_teacher)) == 0

    teacher, extra = bert_teacher, []
    if change == "template":
        extra = ["--hypothesis_template", "The topic is {}."]
    elif change == "classes":
        write_lines(class_file, [*CLASS_NAMES, "weather"])
    elif change == "data":
        write_lines(data_file, [*NEWS_TEXTS[:-1], "A different last line."])
    elif change == "teacher":
        teacher = roberta_teacher
    elif change == "max_length":
        extra = ["--max_length", "32"]
    capsys.readouterr()
    assert main(teacher_argv(data_file, class_file, output_dir, teacher) + extra) == 2
    error = capsys.readouterr().err
    assert f"the {named} (" in error
    assert "--recompute_teacher" in error

    assert main(teacher_argv(data_file, class_file, output_dir, teacher, "--recompute_teacher") + extra) == 0


def test_partial_chunk_files_recomputed(tmp_path, bert_teacher, caplog):
    caplog.set_level(logging.INFO)
    data_file = write_lines(tmp_path / "texts.txt", many_texts(12))
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    reference_dir, output_dir = tmp_path / "reference", tmp_path / "out"
    chunking = ("--teacher_chunk_size", "8")
    assert main(teacher_argv(data_file, class_file, reference_dir, bert_teacher, *chunking)) == 0

    # Rebuild the state of a pass killed during its third chunk: two whole chunks, and a temporary file.
    cache = TeacherCache(output_dir)
    assert main(teacher_argv(data_file, class_file, output_dir, bert_teacher, *chunking)) == 0
    reference = load_logits(reference_dir)
    cache.predictions_path.unlink()
    distinct_logits = torch.stack([reference.entailment, reference.contradiction], dim=-1)
    for index in range(2):
        cache.write_chunk(index, distinct_logits[index * 2 : index * 2 + 2])
    cache.chunk_path(2).with_name(cache.chunk_path(2).name + ".tmp").write_bytes(b"half a file")
    # A chunk whose final-name file is damaged is computed again too.
    cache.chunk_path(3).write_bytes(b"not a safetensors file")

    caplog.clear()
    assert main(teacher_argv(data_file, class_file, output_dir, bert_teacher, *chunking)) == 0
    assert "Reusing 2 of 6 teacher chunks (16 pairs)" in caplog.text
    torch.testing.assert_close(load_logits(output_dir).entailment, reference.entailment, atol=1e-6, rtol=0)


def test_killed_pass_resumes(tmp_path, bert_teacher):
    data_file = write_lines(tmp_path / "texts.txt", many_texts(400))
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    reference_dir, output_dir = tmp_path / "reference", tmp_path / "out"
    # One text per chunk, so that the pass writes many chunks before it is killed.
    chunking = ("--teacher_chunk_size", "4")
    assert main(teacher_argv(data_file, class_file, reference_dir, bert_teacher)) == 0

    command = [sys.executable, "-m", "zsdistill", *teacher_argv(data_file, class_file, output_dir, bert_teacher)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([*command, *chunking], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks_dir = output_dir / "teacher_chunks"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if chunks_dir.is_dir() and len(list(chunks_dir.glob("*.safetensors"))) >= 20:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the teacher pass finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert not (output_dir / "teacher_predictions.safetensors").exists()

    resumed = subprocess.run([*command, *chunking], env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    reused = int(resumed.stderr.split("Reusing ")[1].split(" of 400 teacher chunks")[0])
    assert 20 <= reused < 400
    assert f"{(400 - reused) * len(CLASS_NAMES):,} pairs scored" in resumed.stderr
    expected = load_logits(reference_dir)
    torch.testing.assert_close(load_logits(output_dir).entailment, expected.entailment, atol=1e-6, rtol=0)
    torch.testing.assert_close(load_logits(output_dir).contradiction, expected.contradiction, atol=1e-6, rtol=0)


def test_unreadable_record_stops_run(tmp_path, bert_teacher, news_files, capsys):
    output_dir = tmp_path / "out"
    assert main(teacher_argv(*news_files, output_dir, bert_teacher)) == 0
    (output_dir / "teacher_predictions.json").write_text("{broken", encoding="utf-8")
    capsys.readouterr()
    assert main(teacher_argv(*news_files, output_dir, bert_teacher)) == 2
    error = capsys.readouterr().err
    assert "teacher_predictions.json cannot be read" in error
    assert "--recompute_teacher" in error
    assert main(teacher_argv(*news_files, output_dir, bert_teacher, "--recompute_teacher")) == 0
