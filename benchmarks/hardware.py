"""Measurements shared by the benchmarks: the machine's matrix-multiply rate, model FLOPs and peak memory."""

import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_rate(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Return the best rate, in FLOP/s, of a `size` × `size` matrix product in `dtype` on `device`.

    The best of `repeats` timings serves as the hardware's peak, as nanoGPT's MFU uses the vendor's peak.
    """
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def encoder_forward_flops(model: torch.nn.Module, lengths: list[int]) -> float:
    """Estimate the FLOPs of one forward pass of a transformer encoder over sequences of the given lengths.

    Per sequence of L tokens: 2 × (parameters outside the embeddings) × L for the matrix products with weights, plus
    4 × layers × L² × hidden size for the attention scores and their weighted sum. Padding tokens are not counted, so
    the rate derived from this is the useful work done.
    """
    config = model.config
    embedding_parameters = sum(
        module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Embedding)
    )
    matmul_parameters = sum(parameter.numel() for parameter in model.parameters()) - embedding_parameters
    hidden_size = getattr(config, "hidden_size", None) or config.dim
    num_layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    total_tokens = sum(lengths)
    squared_tokens = sum(length * length for length in lengths)
    return 2 * matmul_parameters * total_tokens + 4 * num_layers * hidden_size * squared_tokens


class PeakMemory:
    """Peak memory over a block: accelerator memory on CUDA, the process's resident set size on Linux CPUs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif Path("/proc/self/clear_refs").exists():
            # Writing 5 resets the kernel's high-water mark of the resident set size (VmHWM).
            Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        status = Path("/proc/self/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_bytes = int(line.split()[1]) * 1024


def machine_facts(device: torch.device) -> dict[str, object]:
    """Describe the machine and library versions behind a measurement."""
    cpu_model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    facts = {
        "cpu": cpu_model,
        "cpu_cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "accelerate": version("accelerate"),
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def bfloat16_supported(device: torch.device) -> bool:
    """Return whether the device runs bfloat16 natively, by the same rule as zsdistill's `--teacher_dtype auto`."""
    from zsdistill.models import resolve_teacher_dtype

    return resolve_teacher_dtype("auto", device) == torch.bfloat16
