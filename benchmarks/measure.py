"""Measurements shared by the benchmarks: wall time, peak memory, the machine's matmul rate and forward FLOPs."""

import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel

MATMUL_REPEATS = 10


def count_non_embedding_parameters(model: PreTrainedModel) -> int:
    embeddings = getattr(model.base_model, "embeddings", None)
    if embeddings is None:
        embeddings = model.get_input_embeddings()
    embedding_ids = {id(parameter) for parameter in embeddings.parameters()}
    return sum(parameter.numel() for parameter in model.parameters() if id(parameter) not in embedding_ids)


def describe_model(model: PreTrainedModel) -> dict:
    config = model.config
    return {
        "model_type": config.model_type,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "non_embedding_parameters": count_non_embedding_parameters(model),
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "parameter_bytes": sum(parameter.numel() * parameter.element_size() for parameter in model.parameters()),
    }


def forward_flops(model_info: dict, sequence_lengths: list[int]) -> int:
    """Estimate the FLOPs of encoder forward passes over sequences of the given token counts.

    FLOPs = 2 * P * T + 4 * layers * hidden * sum(L^2), with P the non-embedding parameters, T the tokens and L each
    sequence's length. Each weight takes part in one multiply-add (2 FLOPs) per token, and per layer attention's
    QK^T and its product with V cost 2 * L^2 * hidden each. This is the forward third of the PaLM estimate that
    nanoGPT reports MFU with (6N + 12 * layers * hidden * T per token for forward and backward). It leaves out
    softmax, normalization and activations. It counts the pooler and classification head on every token, although
    they run on one token per sequence, and they are under 2% of P for the models that speed.py times.
    """
    tokens = sum(sequence_lengths)
    squares = sum(length * length for length in sequence_lengths)
    layers, hidden = model_info["num_hidden_layers"], model_info["hidden_size"]
    return 2 * model_info["non_embedding_parameters"] * tokens + 4 * layers * hidden * squares


def first_token_savings(model_info: dict, sequence_lengths: list[int]) -> int:
    """Estimate the FLOPs saved when the last layer runs on the first token only (zsdistill/first_token.py).

    A full layer costs 2 * W * L + 4 * hidden * L^2 for a sequence of L tokens, with W its weights, as in
    `forward_flops`. The first-token layer applies every weight to one token (2 * W), and each of its heads takes
    two products of width hidden with the L hidden states (4 * heads * hidden * L). A layer's weights are taken as
    the non-embedding parameters divided by the layer count, so the pooler and head are spread over the layers.
    """
    layers, hidden = model_info["num_hidden_layers"], model_info["hidden_size"]
    heads = model_info["num_attention_heads"]
    weights = model_info["non_embedding_parameters"] / layers
    return int(
        sum(
            2 * weights * (length - 1) + 4 * hidden * (length * length - heads * length) for length in sequence_lengths
        )
    )


def padded_lengths(sequence_lengths: list[int], batch_size: int) -> list[int]:
    """Return each sequence's length after padding to the longest in its batch of consecutive sequences.

    The pipelines and the student's loop batch sequences in input order, so this is what they compute.
    NOTE: zsdistill's teacher pass sorts pairs by length and pads far less, so for it this overstates the padding.
    """
    padded = []
    for start in range(0, len(sequence_lengths), batch_size):
        batch = sequence_lengths[start : start + batch_size]
        padded.extend([max(batch)] * len(batch))
    return padded


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_bytes(field: str) -> int | None:
    """Return a memory field of /proc/self/status (Linux only) in bytes, or None where it cannot be read."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def reset_peak_memory(device: torch.device) -> str | None:
    """Start a new peak-memory window and return what the peak will measure, or None where it cannot be measured."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "CUDA allocated memory"
    # Writing 5 to clear_refs resets the process's peak resident set size (VmHWM) on Linux 4.0 and later.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return "resident set size (RSS) of the process"


def current_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _proc_status_bytes("VmRSS")


def read_peak_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _proc_status_bytes("VmHWM")


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand freed memory back to the system, so the next peak starts from what is still in use."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    # glibc keeps freed heap blocks mapped, and malloc_trim returns them to the system. Elsewhere the RSS may stay
    # higher than what is in use.
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class Timing:
    """Wall times of repeated calls, and the largest rise in memory above its level before a call."""

    seconds: list[float]
    memory_kind: str | None
    peak_increase_bytes: int | None

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    def extend(self, other: "Timing") -> None:
        """Add another timing's calls to this one."""
        self.seconds += other.seconds
        increases = [value for value in (self.peak_increase_bytes, other.peak_increase_bytes) if value is not None]
        self.peak_increase_bytes = max(increases) if increases else None


def time_repeats(run: Callable[[], object], repeats: int, device: torch.device) -> Timing:
    """Call `run` `repeats` times and return each call's wall time and the peak memory increase over all of them."""
    release_memory(device)
    memory_kind = reset_peak_memory(device)
    memory_at_start = current_memory(device)
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    peak = read_peak_memory(device)
    increase = None if peak is None or memory_at_start is None else max(0, peak - memory_at_start)
    return Timing(seconds=seconds, memory_kind=memory_kind, peak_increase_bytes=increase)


def measure_matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = MATMUL_REPEATS) -> dict:
    """Time square matrix multiplies and return the best rate in FLOP/s, the peak the models are compared with."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    # Two untimed multiplies let the BLAS library pick its kernels and warm its caches.
    for _ in range(2):
        torch.matmul(a, b)
    timing = time_repeats(lambda: torch.matmul(a, b), repeats, device)
    flops = 2 * size**3
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "size": size,
        "seconds": timing.seconds,
        "flop_rate": flops / min(timing.seconds),
    }
