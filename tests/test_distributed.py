"""Two processes on the CPU through `accelerate launch` with accelerate_configs/cpu_2_processes.yaml.

One launch of tests/distributed_driver.py runs the main job and then every teacher case, so that the processes
start once. Its results are compared with the same work done in this single process.
"""

import json
import math
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.commands.config.config_args import load_config_from_file
from conftest import CLASS_NAMES, NEWS_TEXTS, cli_args, write_lines
from distributed_driver import score_cases
from safetensors.torch import load_file
from transformers import pipeline

from zsdistill.cli import main
from zsdistill.predictions import TEACHER_PREDICTIONS_FILE, load_teacher_predictions
from zsdistill.soft_labels import soft_labels_from_logits

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "accelerate_configs"
DRIVER = Path(__file__).resolve().parent / "distributed_driver.py"
WORLD_SIZE = 2
BATCH_SIZES = (2, 3)
TEMPLATE = "This text is about {}."
# A hang in a collective fails the test after this long instead of blocking the run.
LAUNCH_TIMEOUT_S = 240
TOLERANCE = 1e-6
MAIN_JOB_TEXTS = (11, 1)


def distinct_texts(num_texts: int) -> list[str]:
    """Return `num_texts` texts that all differ, so that rows in the wrong order cannot match by chance."""
    return [f"{NEWS_TEXTS[i % len(NEWS_TEXTS)]} {i}" for i in range(num_texts)]


def teacher_cases() -> list[dict]:
    """Each batch size with 1, 2, 3, WORLD_SIZE × batch and WORLD_SIZE × batch + 1 texts, for 1 and 3 classes.

    With one class the texts are the pairs, so 1 text is fewer pairs than processes.
    """
    cases = []
    for batch_size in BATCH_SIZES:
        for class_names in (["sports"], CLASS_NAMES[:3]):
            for num_texts in (1, 2, 3, WORLD_SIZE * batch_size, WORLD_SIZE * batch_size + 1):
                name = f"batch{batch_size}_classes{len(class_names)}_texts{num_texts}"
                texts = distinct_texts(num_texts)
                case = {"name": name, "texts": texts, "class_names": class_names, "batch_size": batch_size}
                cases.append({**case, "hypothesis_template": TEMPLATE})
    return cases


def main_job_args(work_dir: Path, num_texts: int, teacher: Path, student: Path) -> list[str]:
    """Arguments of a short main job on `num_texts` texts, whose data files it writes into `work_dir`."""
    data_file = write_lines(work_dir / f"texts{num_texts}.txt", distinct_texts(num_texts))
    class_file = write_lines(work_dir / "classes.txt", CLASS_NAMES)
    output_dir = work_dir / f"out{num_texts}"
    small_run = [
        "--hypothesis_template",
        TEMPLATE,
        "--teacher_batch_size",
        "3",
        "--per_device_train_batch_size",
        "2",
        "--per_device_eval_batch_size",
        "2",
        "--num_train_epochs",
        "2",
        "--validation_split",
        "0.3",
        "--teacher_dtype",
        "float32",
        # Several chunks, so that resuming and gathering are exercised across chunk boundaries too.
        "--teacher_chunk_size",
        "16",
    ]
    # Without --cpu, the run also checks that zsdistill picks the CPU by itself on a machine without a GPU.
    if torch.accelerator.is_available():
        small_run.append("--cpu")
    return cli_args(data_file, class_file, output_dir, teacher, student, *small_run)


def output_dir_of(argv: list[str]) -> Path:
    return Path(argv[argv.index("--output_dir") + 1])


@dataclass
class Launch:
    returncode: int
    output: str
    results_dir: Path
    main_jobs: list[list[str]]

    def read_json(self, name: str):
        return json.loads((self.results_dir / name).read_text(encoding="utf-8"))


def launch(command: list[str], timeout: float) -> tuple[int, str]:
    """Run `command` in a process group of its own, and kill the whole group if it runs past `timeout` seconds."""
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": python_path}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # The launcher's workers are its children, and a stuck one would outlive the launcher alone.
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} timed out after {timeout} s, a process may wait in a collective:\n{output}")
    return process.returncode, output


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, bert_teacher, student) -> Launch:
    """Launch the driver once: the main job on 11 texts and on 1 text, then every teacher case."""
    work_dir = tmp_path_factory.mktemp("two_processes")
    results_dir = work_dir / "results"
    results_dir.mkdir()
    # 11 texts split unevenly into teacher batches, training batches and held-out batches. 1 text is fewer
    # training examples than processes, with none held out.
    main_jobs = [main_job_args(work_dir, num_texts, bert_teacher, student) for num_texts in MAIN_JOB_TEXTS]
    spec = {"teacher": str(bert_teacher), "cases": teacher_cases(), "main_jobs": main_jobs}
    spec_file = work_dir / "spec.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")

    command = ["accelerate", "launch", "--config_file", str(CONFIGS / "cpu_2_processes.yaml")]
    returncode, output = launch([*command, str(DRIVER), str(spec_file), str(results_dir)], LAUNCH_TIMEOUT_S)
    return Launch(returncode, output, results_dir, main_jobs)


def test_launch_succeeds(two_processes):
    assert two_processes.returncode == 0, two_processes.output
    for rank in range(WORLD_SIZE):
        assert two_processes.read_json(f"exit_rank{rank}.json") == [0] * len(MAIN_JOB_TEXTS)


def test_launch_runs_two_processes(two_processes):
    assert two_processes.returncode == 0, two_processes.output
    for argv in two_processes.main_jobs:
        run_record = json.loads((output_dir_of(argv) / "zsdistill_run.json").read_text(encoding="utf-8"))
        assert run_record["num_processes"] == WORLD_SIZE


def test_teacher_cases_match_one_process(two_processes, bert_teacher):
    assert two_processes.returncode == 0, two_processes.output
    gathered = load_file(two_processes.results_dir / "teacher_cases.safetensors")
    cases = teacher_cases()
    expected = score_cases(Accelerator(cpu=True), str(bert_teacher), cases)
    for case in cases:
        num_texts, num_classes = len(case["texts"]), len(case["class_names"])
        for tensor in ("entailment", "contradiction", "soft_labels"):
            name = f"{case['name']}.{tensor}"
            assert gathered[name].shape == (num_texts, num_classes), name
            difference = (gathered[name] - expected[name]).abs().max().item()
            assert difference <= TOLERANCE, f"{name}: max difference {difference:.3g} from one process"


def test_teacher_rows_in_input_order(two_processes, bert_teacher):
    assert two_processes.returncode == 0, two_processes.output
    gathered = load_file(two_processes.results_dir / "teacher_cases.safetensors")
    largest = max(teacher_cases(), key=lambda case: len(case["texts"]) * len(case["class_names"]))
    rows = gathered[f"{largest['name']}.entailment"]
    # Rows that all differ, so that a swap of two rows cannot go unnoticed.
    assert len({tuple(row.tolist()) for row in rows}) == len(rows)

    # Each text scored on its own, on one process, gives the row at its index.
    alone_cases = [{**largest, "name": f"text{i}", "texts": [text]} for i, text in enumerate(largest["texts"])]
    alone = score_cases(Accelerator(cpu=True), str(bert_teacher), alone_cases)
    for i in range(len(largest["texts"])):
        difference = (rows[i] - alone[f"text{i}.entailment"][0]).abs().max().item()
        assert difference <= TOLERANCE, f"row {i} differs by {difference:.3g} from text {i} scored alone"


@pytest.mark.parametrize("job", range(len(MAIN_JOB_TEXTS)), ids=[f"texts{n}" for n in MAIN_JOB_TEXTS])
def test_main_job_predictions_match_one_process(two_processes, tmp_path, job):
    assert two_processes.returncode == 0, two_processes.output
    argv = list(two_processes.main_jobs[job])
    two_process_dir = output_dir_of(argv)
    one_process_dir = tmp_path / "one_process"
    argv[argv.index("--output_dir") + 1] = str(one_process_dir)
    assert main([*argv, "--cpu"]) == 0

    two_logits, _ = load_teacher_predictions(two_process_dir / TEACHER_PREDICTIONS_FILE)
    one_logits, _ = load_teacher_predictions(one_process_dir / TEACHER_PREDICTIONS_FILE)
    two_soft_labels = soft_labels_from_logits(two_logits, multi_label=False)
    one_soft_labels = soft_labels_from_logits(one_logits, multi_label=False)
    assert two_soft_labels.shape == (MAIN_JOB_TEXTS[job], len(CLASS_NAMES))
    pairs = [
        ("soft labels", two_soft_labels, one_soft_labels),
        ("entailment logits", two_logits.entailment, one_logits.entailment),
        ("contradiction logits", two_logits.contradiction, one_logits.contradiction),
    ]
    for name, two, one in pairs:
        assert two.shape == one.shape, name
        difference = (two - one).abs().max().item()
        assert difference <= TOLERANCE, f"{name}: max difference {difference:.3g} from one process"


@pytest.mark.parametrize("job", range(len(MAIN_JOB_TEXTS)), ids=[f"texts{n}" for n in MAIN_JOB_TEXTS])
def test_student_saved_once_and_classifies(two_processes, job):
    assert two_processes.returncode == 0, two_processes.output
    writes = [write for rank in range(WORLD_SIZE) for write in two_processes.read_json(f"writes_rank{rank}.json")[job]]
    assert writes.count(["safetensors.torch.save_file", "model.safetensors"]) == 1

    output_dir = output_dir_of(two_processes.main_jobs[job])
    run_record = json.loads((output_dir / "zsdistill_run.json").read_text(encoding="utf-8"))
    assert [epoch["epoch"] for epoch in run_record["epochs"]] == [1, 2]
    for epoch in run_record["epochs"]:
        assert math.isfinite(epoch["train_loss"])
        assert epoch["agreement"] is None or 0.0 <= epoch["agreement"] <= 1.0

    classifier = pipeline("text-classification", model=str(output_dir), top_k=None, device="cpu")
    result = classifier(["The team won the match.", "Shares fell."])
    assert len(result) == 2
    for scores in result:
        assert sorted(score["label"] for score in scores) == sorted(CLASS_NAMES)
        assert sum(score["score"] for score in scores) == pytest.approx(1.0, abs=1e-5)


def test_only_main_process_writes_output(two_processes):
    assert two_processes.returncode == 0, two_processes.output
    for job in range(len(MAIN_JOB_TEXTS)):
        assert two_processes.read_json("writes_rank1.json")[job] == []
        written = {path for _, path in two_processes.read_json("writes_rank0.json")[job]}
        for name in ("model.safetensors", "config.json", TEACHER_PREDICTIONS_FILE, "README.md", "zsdistill_run.json"):
            assert name in written, name


def test_same_collectives_on_every_process(two_processes):
    assert two_processes.returncode == 0, two_processes.output
    counts = [two_processes.read_json(f"collectives_rank{rank}.json") for rank in range(WORLD_SIZE)]
    assert counts[0].get("barrier", 0) > 0
    assert counts[0].get("all_gather_into_tensor", 0) + counts[0].get("all_gather", 0) > 0
    for rank in range(1, WORLD_SIZE):
        assert counts[rank] == counts[0], f"process {rank} called {counts[rank]}, process 0 called {counts[0]}"


def test_logs_from_main_process_only(two_processes):
    assert two_processes.returncode == 0, two_processes.output
    assert two_processes.output.count("epoch 1: train loss") == len(MAIN_JOB_TEXTS)
    assert two_processes.output.count("held-out examples") == len(MAIN_JOB_TEXTS)
    assert "[RANK 1]" not in two_processes.output


@pytest.mark.parametrize(
    ("file_name", "distributed_type", "num_processes", "num_machines", "mixed_precision"),
    [
        ("cpu_2_processes.yaml", "MULTI_GPU", 2, 1, "no"),
        ("one_gpu.yaml", "NO", 1, 1, "no"),
        ("one_machine_all_gpus_bf16.yaml", "MULTI_GPU", 8, 1, "bf16"),
        ("two_machines_8_gpus.yaml", "MULTI_GPU", 16, 2, "bf16"),
        ("fsdp_large_teacher.yaml", "FSDP", 8, 1, "bf16"),
    ],
)
def test_accelerate_config_loads(file_name, distributed_type, num_processes, num_machines, mixed_precision):
    # Accelerate rejects a config with a key it does not know.
    config = load_config_from_file(str(CONFIGS / file_name))
    assert config.distributed_type == distributed_type
    assert config.num_processes == num_processes
    assert config.num_machines == num_machines
    assert config.mixed_precision == mixed_precision


def test_fsdp_config_shards_teacher():
    fsdp = load_config_from_file(str(CONFIGS / "fsdp_large_teacher.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2
    assert fsdp["fsdp_reshard_after_forward"] is True
    # `accelerate launch` rejects CPU-RAM-efficient loading without module state syncing.
    assert not fsdp["fsdp_cpu_ram_efficient_loading"] or fsdp["fsdp_sync_module_states"]


def test_unjoined_processes_rejected(news_files, tmp_path, monkeypatch, capsys, bert_teacher, student):
    # A device that Accelerate has no distributed backend for leaves each launched process on its own.
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = cli_args(*news_files, tmp_path / "out", bert_teacher, student)
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "The launcher started 2 processes (WORLD_SIZE=2), but Accelerate found no distributed backend" in error
    assert "Pass --cpu" in error
    assert not (tmp_path / "out" / TEACHER_PREDICTIONS_FILE).exists()
