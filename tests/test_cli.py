"""The command as users start it: the console script, `python -m` and `accelerate launch`."""

import json
import os
import subprocess
import sys

import pytest
from conftest import CLASS_NAMES, NEWS_TEXTS, cli_args, write_lines

from zsdistill.cli import build_parser

FLAGS = [
    "--data_file",
    "--class_names_file",
    "--output_dir",
    "--teacher_name_or_path",
    "--student_name_or_path",
    "--hypothesis_template",
    "--multi_label",
    "--multi_class",
    "--temperature",
    "--teacher_batch_size",
    "--per_device_train_batch_size",
    "--per_device_eval_batch_size",
    "--learning_rate",
    "--weight_decay",
    "--num_train_epochs",
    "--warmup_ratio",
    "--gradient_accumulation_steps",
    "--max_grad_norm",
    "--seed",
    "--mixed_precision",
    "--fp16",
    "--cpu",
    "--max_length",
    "--overwrite_output_dir",
    "--validation_split",
    "--entailment_id",
    "--contradiction_id",
]


def test_help_lists_every_flag():
    help_text = build_parser().format_help()
    for flag in FLAGS:
        assert flag in help_text, flag


def test_defaults_match_original_script():
    args = build_parser().parse_args(["--data_file", "d", "--class_names_file", "c", "--output_dir", "o"])
    assert args.teacher_name_or_path == "roberta-large-mnli"
    assert args.student_name_or_path == "distilbert-base-uncased"
    assert args.hypothesis_template == "This example is {}."
    assert args.temperature == 1.0
    assert args.teacher_batch_size == 32
    assert args.multi_label is False


def test_fp16_alias():
    args = build_parser().parse_args(["--data_file", "d", "--class_names_file", "c", "--output_dir", "o", "--fp16"])
    assert args.mixed_precision == "fp16"


def test_multi_class_alias(capsys):
    argv = ["--data_file", "d", "--class_names_file", "c", "--output_dir", "o", "--multi_class"]
    args = build_parser().parse_args(argv)
    assert args.multi_label is True
    assert "--multi_class is deprecated, use --multi_label" in capsys.readouterr().err
    # The aliases set other flags and leave no entry of their own in the recorded arguments.
    assert not hasattr(args, "multi_class")
    assert not hasattr(args, "fp16")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--temperature", "abc", "must be a number, got 'abc'"),
        ("--teacher_batch_size", "1.5", "must be an integer, got '1.5'"),
        ("--entailment_id", "x", "must be an integer, got 'x'"),
        ("--seed", "-1", "must be an integer from 0 to 4294967295"),
        ("--seed", str(2**32), "must be an integer from 0 to 4294967295"),
    ],
)
def test_option_value_messages(capsys, flag, value, message):
    argv = ["--data_file", "d", "--class_names_file", "c", "--output_dir", "o", flag, value]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    error = capsys.readouterr().err
    assert message in error
    assert "invalid _" not in error


def test_command_recorded_with_launcher(tmp_path, bert_teacher, student):
    result = run([sys.executable, "-m", "zsdistill", *distill_argv(tmp_path, bert_teacher, student), "--cpu"])
    assert result.returncode == 0, result.stderr
    run_record = json.loads((tmp_path / "out" / "zsdistill_run.json").read_text())
    assert run_record["command"].startswith("python -m zsdistill --data_file")


def distill_argv(tmp_path, teacher, student) -> list[str]:
    data_file = write_lines(tmp_path / "texts.txt", NEWS_TEXTS)
    class_file = write_lines(tmp_path / "classes.txt", CLASS_NAMES)
    return cli_args(data_file, class_file, tmp_path / "out", teacher, student, "--num_train_epochs", "1")


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_python_m_runs_main_job(tmp_path, bert_teacher, student):
    result = run([sys.executable, "-m", "zsdistill", *distill_argv(tmp_path, bert_teacher, student), "--cpu"])
    assert result.returncode == 0, result.stderr
    assert "Teacher pass" in result.stderr
    assert "pairs/s" in result.stderr
    run_record = json.loads((tmp_path / "out" / "zsdistill_run.json").read_text())
    assert run_record["num_pairs"] == len(NEWS_TEXTS) * len(CLASS_NAMES)


def test_python_m_input_error_exit_status(tmp_path):
    result = run([sys.executable, "-m", "zsdistill", *distill_argv(tmp_path, "t", "s"), "--hypothesis_template", "x"])
    assert result.returncode == 2
    assert "zsdistill: error: Invalid --hypothesis_template" in result.stderr
    assert "Traceback" not in result.stderr


def test_accelerate_launch_one_process(tmp_path, bert_teacher, student):
    command = ["accelerate", "launch", "--cpu", "--num_processes", "1", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zsdistill"]
    result = run([*command, *distill_argv(tmp_path, bert_teacher, student)])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_console_script_help():
    result = run(["zsdistill", "--help"])
    assert result.returncode == 0, result.stderr
    assert "--data_file" in result.stdout


DESTROY_AT_EXIT_SCRIPT = """
import atexit, sys, tempfile
import torch.distributed as dist
from zsdistill.cli import main

store = tempfile.NamedTemporaryFile(delete=False).name
dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
# Exit handlers run last registered first, so this one runs after the handler that main registers.
atexit.register(lambda: print(f"initialized at exit: {dist.is_initialized()}"))
status = main(["predict", "--model", sys.argv[1], "--data_file", sys.argv[1], "--output_file", sys.argv[1]])
print(f"status {status}, initialized after main: {dist.is_initialized()}")
"""


def test_process_group_destroyed_at_exit_not_on_return(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", DESTROY_AT_EXIT_SCRIPT, str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # The group stays for later jobs of the same process and is gone before the interpreter shuts down.
    assert "status 2, initialized after main: True" in result.stdout
    assert "initialized at exit: False" in result.stdout
