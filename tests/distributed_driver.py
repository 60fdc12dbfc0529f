"""Run the main job and then the teacher on many inputs, on every process of an `accelerate launch`.

    accelerate launch --config_file accelerate_configs/cpu_2_processes.yaml tests/distributed_driver.py SPEC RESULTS

SPEC is a JSON file with the command-line arguments of each main job, the teacher's path and the teacher cases
(texts, class names, batch size). The driver writes into the RESULTS directory:

- `exit_rank<R>.json`: the exit status of each main job on process R;
- `writes_rank<R>.json`: for each main job, the files that process R created, changed or removed inside its
  --output_dir;
- `teacher_cases.safetensors` (main process): each case's logits and soft labels, named `<case>.<tensor>`;
- `collectives_rank<R>.json`: how many times process R called each torch.distributed collective, in both parts.

Launching one driver for all cases costs one start of the processes instead of one per case.
"""

import json
import os
import sys
from collections import Counter
from pathlib import Path

# Patched before torch.distributed's users (accelerate, transformers) are imported, so that they call the wrappers.
import safetensors.torch
import torch
import torch.distributed

COLLECTIVES = [
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "gather_object",
    "reduce",
]
collective_calls: Counter = Counter()


def _count_calls(name: str):
    original = getattr(torch.distributed, name)

    def counted(*args, **kwargs):
        collective_calls[name] += 1
        return original(*args, **kwargs)

    return counted


for _name in COLLECTIVES:
    setattr(torch.distributed, _name, _count_calls(_name))


class WriteRecorder:
    """Record each file that this process creates, changes or removes under one directory.

    Python's audit events cover files written from Python. safetensors and torch.save write from native code, so
    their save functions are wrapped as well.
    """

    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self):
        self.directory: Path | None = None
        self.writes: list[list[str]] = []

    def record(self, event: str, path) -> None:
        if self.directory is None or not isinstance(path, (str, bytes, os.PathLike)):
            return
        resolved = Path(os.fsdecode(path)).resolve()
        if resolved != self.directory and self.directory in resolved.parents:
            self.writes.append([event, str(resolved.relative_to(self.directory))])

    def audit(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & self.WRITE_FLAGS)
            if writes:
                self.record("open", path)
        elif event in ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.truncate"):
            self.record(event, args[0])
            if event == "os.rename":
                self.record(event, args[1])

    def wrap(self, module, name: str) -> None:
        original = getattr(module, name)

        def recorded(obj, path, *args, **kwargs):
            self.record(f"{module.__name__}.{name}", path)
            return original(obj, path, *args, **kwargs)

        setattr(module, name, recorded)


recorder = WriteRecorder()
sys.addaudithook(recorder.audit)
recorder.wrap(safetensors.torch, "save_file")
recorder.wrap(torch, "save")

from accelerate import Accelerator  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from zsdistill.models import load_config_and_tokenizer, load_teacher, max_input_length  # noqa: E402
from zsdistill.soft_labels import soft_labels_from_logits  # noqa: E402
from zsdistill.teacher import build_hypotheses, find_nli_label_ids, score_pairs  # noqa: E402


def score_cases(accelerator: Accelerator, teacher: str, cases: list[dict]) -> dict[str, torch.Tensor]:
    """Score each case's texts against its class names, and return the tensors named `<case name>.<tensor name>`."""
    config, tokenizer = load_config_and_tokenizer(teacher, "teacher")
    label_ids = find_nli_label_ids(config)
    max_length = max_input_length(tokenizer, config, None)
    model = load_teacher(teacher)
    results = {}
    for case in cases:
        hypotheses = build_hypotheses(case["hypothesis_template"], case["class_names"])
        logits = score_pairs(
            accelerator, model, tokenizer, case["texts"], hypotheses, label_ids, case["batch_size"], max_length
        )
        multi_label = len(case["class_names"]) == 1
        results[f"{case['name']}.entailment"] = logits.entailment
        results[f"{case['name']}.contradiction"] = logits.contradiction
        results[f"{case['name']}.soft_labels"] = soft_labels_from_logits(logits, multi_label)
    return results


def run_main_job(argv: list[str]) -> tuple[int, list[list[str]]]:
    """Run `python -m zsdistill` with `argv` in this process, and return its exit status and its writes."""
    import runpy

    recorder.directory = Path(argv[argv.index("--output_dir") + 1]).resolve()
    recorder.writes = []
    sys.argv = ["zsdistill", *argv]
    exit_status = 0
    try:
        runpy.run_module("zsdistill", run_name="__main__", alter_sys=True)
    except SystemExit as exit_request:
        exit_status = exit_request.code if isinstance(exit_request.code, int) else 1
    finally:
        recorder.directory = None
    return exit_status, recorder.writes


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    results_dir = Path(sys.argv[2])
    # The main jobs run first, so that they set up the processes' distributed state themselves, as the command does.
    exit_statuses, writes = [], []
    for argv in spec["main_jobs"]:
        exit_status, job_writes = run_main_job(argv)
        exit_statuses.append(exit_status)
        writes.append(job_writes)
        if exit_status != 0:
            break
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    (results_dir / f"exit_rank{rank}.json").write_text(json.dumps(exit_statuses), encoding="utf-8")
    (results_dir / f"writes_rank{rank}.json").write_text(json.dumps(writes), encoding="utf-8")
    if any(exit_statuses):
        return 1

    results = score_cases(accelerator, spec["teacher"], spec["cases"])
    if accelerator.is_main_process:
        tensors = {name: tensor for name, tensor in results.items() if tensor is not None}
        save_file(tensors, results_dir / "teacher_cases.safetensors")
    accelerator.wait_for_everyone()
    (results_dir / f"collectives_rank{rank}.json").write_text(json.dumps(collective_calls), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
