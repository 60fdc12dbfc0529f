"""Checkpoints of the student's training: saving, resuming after a kill, rotation and invalid resumes."""

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import CLASS_NAMES, NEWS_TEXTS, cli_args, write_lines
from safetensors.torch import load_file

import zsdistill
from zsdistill.checkpoints import STATE_FILE, STATE_FILES, read_checkpoint
from zsdistill.cli import build_parser, main
from zsdistill.data import InputError

# Six training texts in batches of 1, summed over 2 accumulation steps, make 3 optimizer steps per epoch. The
# 100 epochs take 300 steps, so the killed run is still training when the kill lands.
SMALL_RUN = (
    "--hypothesis_template",
    "This text is about {}.",
    "--per_device_train_batch_size",
    "1",
    "--gradient_accumulation_steps",
    "2",
    "--validation_split",
    "0.25",
    "--learning_rate",
    "1e-3",
    "--teacher_batch_size",
    "32",
    "--seed",
    "3",
    "--cpu",
)
LONG_RUN = (*SMALL_RUN, "--num_train_epochs", "100")
TOTAL_STEPS = 300
KEPT_CHECKPOINTS = 4


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run torch on one thread, because two made 60 steps take 19 s instead of 1.4 s on 2 busy CPU cores."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def write_inputs(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return write_lines(directory / "texts.txt", NEWS_TEXTS), write_lines(directory / "classes.txt", CLASS_NAMES)


def run_in_process(argv: list[str]) -> int:
    """Run the command in this process, then reset Accelerate's global state for the next run."""
    try:
        return main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def assert_same_weights(first_dir: Path, second_dir: Path, atol: float = 1e-6) -> float:
    """Assert that two saved students have the same tensors to `atol` and return the largest difference."""
    first = load_file(first_dir / "model.safetensors")
    second = load_file(second_dir / "model.safetensors")
    assert first.keys() == second.keys()
    max_difference = 0.0
    for name in first:
        difference = (first[name] - second[name]).abs().max().item()
        assert difference <= atol, f"{name} differs by {difference}"
        max_difference = max(max_difference, difference)
    return max_difference


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def run_and_kill_after_checkpoint(argv: list[str], output_dir: Path, log_file: Path) -> int:
    """Start `python -m zsdistill` and SIGKILL it once a complete checkpoint exists, and return its exit status."""
    # The child imports zsdistill from the same tree as this test, whatever the installed copy is.
    source_root = str(Path(zsdistill.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([source_root, os.environ.get("PYTHONPATH", "")]),
    }
    with log_file.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "zsdistill", *argv], stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 300
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if any(output_dir.glob(f"checkpoints/step_*/{STATE_FILE}")):
                    process.kill()
                    break
                time.sleep(0.01)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    return process.returncode


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, bert_teacher, student) -> dict[str, Path]:
    """An uninterrupted run, and a run of the same setup killed after a checkpoint and resumed from the latest one."""
    root = tmp_path_factory.mktemp("resume")
    data_file, class_file = write_inputs(root)
    uninterrupted = root / "uninterrupted"
    assert run_in_process(cli_args(data_file, class_file, uninterrupted, bert_teacher, student, *LONG_RUN)) == 0

    resumed = root / "resumed"
    checkpointing = ("--checkpointing_steps", "2", "--save_total_limit", str(KEPT_CHECKPOINTS))
    argv = cli_args(data_file, class_file, resumed, bert_teacher, student, *LONG_RUN, *checkpointing)
    log_file = root / "killed.log"
    killed_status = run_and_kill_after_checkpoint(argv, resumed, log_file)
    killed_files = sorted(path.name for path in resumed.iterdir())
    killed_checkpoints = sorted(path.name for path in (resumed / "checkpoints").iterdir())

    resume_status = run_in_process([*argv, "--resume_from_checkpoint", "latest"])
    return {
        "root": root,
        "data_file": data_file,
        "class_file": class_file,
        "uninterrupted": uninterrupted,
        "resumed": resumed,
        "killed_status": killed_status,
        "killed_log": log_file.read_text(),
        "killed_files": killed_files,
        "killed_checkpoints": killed_checkpoints,
        "resume_status": resume_status,
    }


def test_killed_run_resumes_to_same_weights(resumed_run):
    assert resumed_run["killed_status"] == -9, "the run was not killed by SIGKILL:\n" + resumed_run["killed_log"]
    # The run was killed while training, after the teacher pass and before the student was saved.
    assert "model.safetensors" not in resumed_run["killed_files"]
    assert "zsdistill_run.json" not in resumed_run["killed_files"]
    assert resumed_run["killed_checkpoints"], "no checkpoint before the kill"
    assert resumed_run["resume_status"] == 0

    max_difference = assert_same_weights(resumed_run["uninterrupted"], resumed_run["resumed"])
    print(f"largest weight difference after resuming: {max_difference}")


def test_resumed_run_records_checkpoint_and_epochs(resumed_run):
    uninterrupted = read_json(resumed_run["uninterrupted"] / "zsdistill_run.json")
    resumed = read_json(resumed_run["resumed"] / "zsdistill_run.json")
    assert uninterrupted["resumed_from"] is None
    assert 2 <= resumed["resumed_from"]["optimizer_steps"] < TOTAL_STEPS
    assert Path(resumed["resumed_from"]["checkpoint"]).parent == resumed_run["resumed"] / "checkpoints"
    # The loss sums of a partly trained epoch are saved in the checkpoint, so every epoch's loss is as uninterrupted.
    assert resumed["epochs"] == uninterrupted["epochs"]
    assert resumed["agreement"] == uninterrupted["agreement"]


def test_resumed_run_keeps_newest_checkpoints(resumed_run):
    names = sorted((resumed_run["resumed"] / "checkpoints").iterdir(), key=lambda path: int(path.name.split("_")[1]))
    steps = [int(path.name.split("_")[1]) for path in names]
    assert steps == list(range(TOTAL_STEPS - 2 * (KEPT_CHECKPOINTS - 1), TOTAL_STEPS + 1, 2))
    for path in names:
        assert (path / STATE_FILE).is_file()
        assert (path / "model.safetensors").is_file()


@pytest.mark.parametrize(("step", "epoch_finished"), [(294, True), (298, False)])
def test_resume_from_checkpoint_path(resumed_run, bert_teacher, student, step, epoch_finished):
    """Resume from a given directory. Step 294 ends epoch 98, and step 298 is 2 batches into epoch 100."""
    checkpoint = resumed_run["resumed"] / "checkpoints" / f"step_{step}"
    progress = read_json(checkpoint / STATE_FILE)["progress"]
    assert progress["epoch_finished"] is epoch_finished
    assert progress["optimizer_steps"] == step

    output_dir = resumed_run["root"] / f"from_step_{step}"
    argv = cli_args(resumed_run["data_file"], resumed_run["class_file"], output_dir, bert_teacher, student, *LONG_RUN)
    assert run_in_process([*argv, "--resume_from_checkpoint", str(checkpoint)]) == 0
    assert_same_weights(resumed_run["uninterrupted"], output_dir)
    run = read_json(output_dir / "zsdistill_run.json")
    assert run["resumed_from"] == {"checkpoint": str(checkpoint), "optimizer_steps": step}
    assert run["epochs"] == read_json(resumed_run["uninterrupted"] / "zsdistill_run.json")["epochs"]


def test_mismatched_setup_rejected_before_teacher(resumed_run, bert_teacher, student, capsys):
    checkpoint = resumed_run["resumed"] / "checkpoints" / f"step_{TOTAL_STEPS}"
    output_dir = resumed_run["root"] / "other_learning_rate"
    argv = cli_args(resumed_run["data_file"], resumed_run["class_file"], output_dir, bert_teacher, student, *LONG_RUN)
    assert run_in_process([*argv, "--learning_rate", "2e-3", "--resume_from_checkpoint", str(checkpoint)]) == 2
    error = capsys.readouterr().err
    assert "--learning_rate is 0.001 in the checkpoint and 0.002 now" in error
    assert str(checkpoint) in error
    assert not (output_dir / "teacher_predictions.safetensors").exists()


def test_mismatched_precision_rejected(resumed_run, bert_teacher, student, capsys):
    checkpoint = resumed_run["resumed"] / "checkpoints" / f"step_{TOTAL_STEPS}"
    output_dir = resumed_run["root"] / "other_precision"
    argv = cli_args(resumed_run["data_file"], resumed_run["class_file"], output_dir, bert_teacher, student, *LONG_RUN)
    assert run_in_process([*argv, "--mixed_precision", "bf16", "--resume_from_checkpoint", str(checkpoint)]) == 2
    assert "--mixed_precision is 'no' in the checkpoint and 'bf16' now" in capsys.readouterr().err
    assert not (output_dir / "model.safetensors").exists()


def test_changed_texts_rejected(resumed_run, bert_teacher, student, capsys, tmp_path):
    checkpoint = resumed_run["resumed"] / "checkpoints" / f"step_{TOTAL_STEPS}"
    data_file = write_lines(tmp_path / "texts.txt", [*NEWS_TEXTS[:-1], "A different last line about the weather."])
    argv = cli_args(data_file, resumed_run["class_file"], tmp_path / "out", bert_teacher, student, *LONG_RUN)
    assert run_in_process([*argv, "--resume_from_checkpoint", str(checkpoint)]) == 2
    error = capsys.readouterr().err
    assert "the texts of --data_file differ" in error
    assert "--learning_rate" not in error


def short_run(tmp_path, bert_teacher, student, *extra) -> tuple[int, Path]:
    """Run two epochs of 3 optimizer steps each, on six training texts in batches of 2."""
    data_file, class_file = write_inputs(tmp_path)
    output_dir = tmp_path / "out"
    flags = (*SMALL_RUN, "--gradient_accumulation_steps", "1", "--per_device_train_batch_size", "2")
    argv = cli_args(data_file, class_file, output_dir, bert_teacher, student, *flags, "--num_train_epochs", "2")
    return run_in_process([*argv, *extra]), output_dir


def checkpoint_names(output_dir: Path) -> list[str]:
    directory = output_dir / "checkpoints"
    if not directory.exists():
        return []
    return sorted((path.name for path in directory.iterdir()), key=lambda name: int(name.split("_")[1]))


def test_save_total_limit_keeps_newest(tmp_path, bert_teacher, student):
    status, output_dir = short_run(
        tmp_path, bert_teacher, student, "--checkpointing_steps", "1", "--save_total_limit", "2"
    )
    assert status == 0
    assert checkpoint_names(output_dir) == ["step_5", "step_6"]


def test_save_total_limit_zero_keeps_none(tmp_path, bert_teacher, student, caplog):
    caplog.set_level(logging.INFO, logger="zsdistill")
    status, output_dir = short_run(
        tmp_path, bert_teacher, student, "--checkpointing_steps", "1", "--save_total_limit", "0"
    )
    assert status == 0
    assert not (output_dir / "checkpoints").exists()
    # They were written while training ran.
    assert sum("Saved checkpoint" in record.getMessage() for record in caplog.records) == 6


def test_checkpoint_every_epoch(tmp_path, bert_teacher, student):
    status, output_dir = short_run(tmp_path, bert_teacher, student, "--checkpointing_steps", "epoch")
    assert status == 0
    assert checkpoint_names(output_dir) == ["step_3", "step_6"]
    for epoch, name in enumerate(checkpoint_names(output_dir), start=1):
        progress = read_json(output_dir / "checkpoints" / name / STATE_FILE)["progress"]
        assert progress["epoch"] == epoch
        assert progress["epoch_finished"] is True
        assert progress["batches_in_epoch"] == 3
        assert len(progress["epochs"]) == epoch


def test_checkpoint_file_contents(tmp_path, bert_teacher, student):
    status, output_dir = short_run(tmp_path, bert_teacher, student, "--checkpointing_steps", "2")
    assert status == 0
    # Without --save_total_limit every checkpoint is kept, also after the run.
    assert checkpoint_names(output_dir) == ["step_2", "step_4", "step_6"]
    state = read_json(output_dir / "checkpoints" / "step_2" / STATE_FILE)
    assert state["progress"]["optimizer_steps"] == 2
    assert state["progress"]["epoch"] == 1
    assert state["progress"]["batches_in_epoch"] == 2
    assert state["progress"]["epoch_finished"] is False
    # Four texts of the first epoch are trained on, with a mean loss that is finite and positive.
    assert state["progress"]["epoch_loss_count"] == 4
    assert state["progress"]["epoch_loss_sum"] > 0
    setup = state["setup"]
    assert setup["seed"] == 3
    assert setup["num_training_examples"] == 6
    assert setup["per_device_train_batch_size"] == 2
    assert setup["gradient_accumulation_steps"] == 1
    assert setup["num_train_epochs"] == 2.0
    assert setup["learning_rate"] == 1e-3
    assert setup["num_processes"] == 1
    assert setup["class_names"] == CLASS_NAMES
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        assert (output_dir / "checkpoints" / "step_2" / name).is_file(), name


def test_new_run_deletes_earlier_checkpoints(tmp_path, bert_teacher, student):
    status, output_dir = short_run(tmp_path, bert_teacher, student, "--checkpointing_steps", "2")
    assert status == 0
    assert checkpoint_names(output_dir) == ["step_2", "step_4", "step_6"]
    status, output_dir = short_run(
        tmp_path, bert_teacher, student, "--overwrite_output_dir", "--checkpointing_steps", "5"
    )
    assert status == 0
    assert checkpoint_names(output_dir) == ["step_5"]


def test_resume_of_finished_run_trains_nothing(tmp_path, bert_teacher, student):
    status, output_dir = short_run(tmp_path, bert_teacher, student, "--checkpointing_steps", "3")
    assert status == 0
    finished = tmp_path / "finished"
    shutil.copytree(output_dir, finished)
    status, output_dir = short_run(tmp_path, bert_teacher, student, "--resume_from_checkpoint", "latest")
    assert status == 0
    assert_same_weights(finished, output_dir, atol=0)
    assert read_json(output_dir / "zsdistill_run.json")["resumed_from"]["optimizer_steps"] == 6


def test_resume_missing_path_rejected(tmp_path, bert_teacher, student, capsys):
    missing = tmp_path / "missing"
    status, output_dir = short_run(tmp_path, bert_teacher, student, "--resume_from_checkpoint", str(missing))
    assert status == 2
    error = capsys.readouterr().err
    assert f"--resume_from_checkpoint {missing} not found" in error
    assert "latest" in error
    assert not output_dir.exists()


def test_resume_latest_without_checkpoints_rejected(tmp_path, bert_teacher, student, capsys):
    status, output_dir = short_run(tmp_path, bert_teacher, student, "--resume_from_checkpoint", "latest")
    assert status == 2
    error = capsys.readouterr().err
    assert f"--resume_from_checkpoint latest found no checkpoint in {output_dir / 'checkpoints'}" in error
    assert "--checkpointing_steps" in error


def test_resume_from_incomplete_checkpoint_rejected(tmp_path, bert_teacher, student, capsys):
    # A directory without the JSON file, as a save killed part way leaves it.
    incomplete = tmp_path / "out" / "checkpoints" / "step_4"
    incomplete.mkdir(parents=True)
    (incomplete / "model.safetensors").write_bytes(b"")
    status, _ = short_run(tmp_path, bert_teacher, student, "--resume_from_checkpoint", str(incomplete))
    assert status == 2
    assert f"--resume_from_checkpoint {incomplete} is not a complete zsdistill checkpoint" in capsys.readouterr().err

    status, _ = short_run(tmp_path, bert_teacher, student, "--resume_from_checkpoint", "latest")
    assert status == 2
    assert "found no checkpoint" in capsys.readouterr().err


def test_non_empty_output_dir_without_resume_rejected(tmp_path, bert_teacher, student, capsys):
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    status, _ = short_run(tmp_path, bert_teacher, student)
    assert status == 2
    assert "--resume_from_checkpoint latest" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--checkpointing_steps", "0", "must be a positive integer or 'epoch', got '0'"),
        ("--checkpointing_steps", "epochs", "must be a positive integer or 'epoch', got 'epochs'"),
        ("--save_total_limit", "-1", "must be zero or a positive integer, got -1"),
    ],
)
def test_checkpoint_option_messages(capsys, flag, value, message):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--data_file", "d", "--class_names_file", "c", "--output_dir", "o", flag, value])
    assert message in capsys.readouterr().err


def test_checkpoint_options_parsed():
    required = ["--data_file", "d", "--class_names_file", "c", "--output_dir", "o"]
    args = build_parser().parse_args(required)
    assert args.checkpointing_steps is None
    assert args.resume_from_checkpoint is None
    assert args.save_total_limit is None
    args = build_parser().parse_args([*required, "--checkpointing_steps", "epoch", "--save_total_limit", "0"])
    assert args.checkpointing_steps == "epoch"
    assert args.save_total_limit == 0
    assert build_parser().parse_args([*required, "--checkpointing_steps", "50"]).checkpointing_steps == 50
    help_text = build_parser().format_help()
    for flag in ("--checkpointing_steps", "--resume_from_checkpoint", "--save_total_limit"):
        assert flag in help_text, flag


def test_checkpoint_missing_state_file_rejected(tmp_path):
    checkpoint = tmp_path / "step_4"
    checkpoint.mkdir()
    for name in STATE_FILES:
        if name != "optimizer.bin":
            (checkpoint / name).write_bytes(b"")
    with pytest.raises(InputError, match="optimizer.bin missing"):
        read_checkpoint(checkpoint)
