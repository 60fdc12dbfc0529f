"""Compare zsdistill's teacher pass with transformers' zero-shot pipeline on the same model, texts and machine.

Both run in this one process, in float32 and, where the device supports it natively, in bfloat16 weights. The
pipeline gets its best batch size from a short trial; zsdistill runs its own loop (pairs sorted by length, inputs
tokenized in bulk, the last layer on the first token only where the model allows it, on CPUs without AMX its
matmul attention), as it is and compiled with torch.compile (`--teacher_compile yes`). Both keep freed memory in the
process, as zsdistill's command line does. For each run the script prints pairs per second, the share of padding
tokens, peak memory and the FLOP rate it computed as a share of the matrix-multiply rate measured in the same run,
and for compiled runs the time the first call took. It then checks that every run produces the pipeline's scores.

    python benchmarks/teacher_throughput.py                      # offline MiniLM NLI teacher, 400 AG News texts
    python benchmarks/teacher_throughput.py --device cuda --teacher roberta-large-mnli --num_texts 4000
"""

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from ag_news import read_test_split
from measure import describe_model, first_token_savings, forward_flops, measure_matmul_rate, time_repeats
from records import command_line, library_versions, load_average, machine_info, utc_timestamp, write_json
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from zsdistill.allocator import keep_freed_memory
from zsdistill.models import max_input_length, resolve_teacher_dtype
from zsdistill.soft_labels import soft_labels_from_logits
from zsdistill.teacher import (
    PairScorer,
    build_hypotheses,
    find_nli_label_ids,
    logits_to_teacher_logits,
    tokenize_pairs,
)

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_TEACHER = REPOSITORY / "benchmarks" / "models" / "minilm-nli"
DEFAULT_DATA_DIR = REPOSITORY.parent / "shared" / "data" / "ag_news"
DEFAULT_CLASSES = ["the world", "sports", "business", "science/tech"]
DEFAULT_TEMPLATE = "This text is about {}."
# Tolerances on the soft labels of the two runs: bfloat16 rounds each logit to about 3 significant digits.
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}

console = Console(stderr=True, width=160)


@dataclass
class Measurement:
    """One timed run of one implementation in one dtype."""

    implementation: str
    dtype: str
    compiled: bool
    batch_size: int
    # The warm-up call on a few texts, which includes compiling when the run is compiled.
    first_call_seconds: float | None
    seconds: float
    pairs_per_second: float
    padding_share: float
    peak_memory_increase_mib: float | None
    flop_rate: float
    share_of_peak: float
    # The largest difference from the float32 pipeline's scores, for runs in another dtype: its rounding error.
    max_abs_difference_from_float32: float | None = None
    # Whether the teacher's last layer ran on the first token only. The FLOP rate counts the FLOPs each run computed.
    last_layer_first_token: bool = False
    # Whether the teacher's attention was zsdistill's matmul attention rather than the model's own.
    matmul_attention: bool = False


def pipeline_padding_share(tokenizer, texts, hypotheses, max_length, batch_size) -> tuple[float, list[int]]:
    """Return the padding share of the pipeline's batches, which take the pairs in input order, and the lengths."""
    lengths = [len(ids) for ids in tokenize_pairs(tokenizer, texts, hypotheses, max_length)["input_ids"]]
    padded = sum(
        max(lengths[start : start + batch_size]) * len(lengths[start : start + batch_size])
        for start in range(0, len(lengths), batch_size)
    )
    return 1 - sum(lengths) / padded, lengths


def run_pipeline(model, tokenizer, texts, class_names, template, batch_size, device) -> torch.Tensor:
    classifier = pipeline("zero-shot-classification", model=model, tokenizer=tokenizer, device=device)
    results = classifier(texts, candidate_labels=class_names, hypothesis_template=template, batch_size=batch_size)
    rows = []
    for result in results:
        by_label = dict(zip(result["labels"], result["scores"], strict=True))
        rows.append([by_label[name] for name in class_names])
    return torch.tensor(rows)


def zsdistill_scorer(accelerator, model, tokenizer, hypotheses, max_length, batch_size, max_tokens, compile_teacher):
    label_ids = find_nli_label_ids(model.config)
    return PairScorer(
        accelerator,
        model,
        tokenizer,
        hypotheses,
        label_ids,
        batch_size,
        max_length,
        max_tokens,
        compile_teacher=compile_teacher,
    )


def run_zsdistill(scorer: PairScorer, texts: list[str]) -> torch.Tensor:
    logits = scorer.score(texts)
    return soft_labels_from_logits(logits_to_teacher_logits(logits), multi_label=False)


def time_median(run, repeats: int, device: torch.device) -> tuple[float, object, int | None]:
    """Run `run` `repeats` times; return the median seconds, the last result and the peak rise in memory."""
    results = []
    timing = time_repeats(lambda: results.append(run()), repeats, device)
    return timing.median_seconds, results[-1], timing.peak_increase_bytes


def tune_pipeline_batch_size(model, tokenizer, texts, class_names, template, device, candidates) -> int:
    """Return the pipeline batch size with the highest throughput on a short sample of the texts."""
    sample = texts[: max(16, len(texts) // 8)]
    rates = {}
    for batch_size in candidates:
        run_pipeline(model, tokenizer, sample[:4], class_names, template, batch_size, device)
        start = time.perf_counter()
        run_pipeline(model, tokenizer, sample, class_names, template, batch_size, device)
        rates[batch_size] = len(sample) / (time.perf_counter() - start)
    console.print(f"pipeline batch size trial (texts/s): { {size: round(rate, 1) for size, rate in rates.items()} }")
    return max(rates, key=rates.get)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER), help="NLI model, local path or Hub name")
    parser.add_argument(
        "--data_dir", default=str(DEFAULT_DATA_DIR), help="folder that contains AG News test.csv (no header)"
    )
    parser.add_argument("--num_texts", type=int, default=400, help="texts to score (default: 400)")
    parser.add_argument("--class_names", default=",".join(DEFAULT_CLASSES), help="comma-separated class names")
    parser.add_argument("--hypothesis_template", default=DEFAULT_TEMPLATE)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--dtypes", default="float32,bfloat16", help="weight dtypes to run; bfloat16 is skipped where not native"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="zsdistill's pairs per batch (default: 32)")
    parser.add_argument("--max_tokens", type=int, default=None, help="zsdistill's token budget per batch")
    parser.add_argument(
        "--compile",
        choices=["no", "yes", "both"],
        default="both",
        help="run zsdistill as it is, compiled with torch.compile, or both (default: both)",
    )
    parser.add_argument(
        "--pipeline_batch_sizes", default="8,16,32,64", help="pipeline batch sizes to try (default: 8,16,32,64)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, the median reported (default: 3)")
    parser.add_argument(
        "--profile", action="store_true", help="after each zsdistill run, print torch.profiler's table of one more run"
    )
    parser.add_argument(
        "--output_json",
        default=str(REPOSITORY / "benchmarks" / "results" / "teacher_throughput.json"),
        help="where to write every figure",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    # Set before the first run, so that the pipeline reuses freed memory as zsdistill's command line does.
    freed_memory_kept = keep_freed_memory()
    class_names = args.class_names.split(",")
    texts = read_test_split(Path(args.data_dir)).texts[: args.num_texts]
    num_pairs = len(texts) * len(class_names)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    accelerator = Accelerator(cpu=device.type == "cpu")

    bfloat16_native = resolve_teacher_dtype("auto", device) == torch.bfloat16
    dtypes = [name for name in args.dtypes.split(",") if name != "bfloat16" or bfloat16_native]
    console.print(
        f"{args.teacher}: {len(texts)} texts × {len(class_names)} classes = {num_pairs:,} pairs on {device}, "
        f"dtypes {', '.join(dtypes)}, {torch.get_num_threads()} threads"
    )
    measurements, checks = [], []
    # The float32 pipeline's scores, which the bfloat16 runs are also compared with to show their rounding error.
    float32_scores = None
    for dtype_name in dtypes:
        model = AutoModelForSequenceClassification.from_pretrained(args.teacher, dtype=getattr(torch, dtype_name))
        model = model.to(device).eval()
        dtype_measurements, dtype_checks, pipeline_scores = measure_dtype(
            args, accelerator, model, tokenizer, texts, class_names, dtype_name, device, float32_scores
        )
        if dtype_name == "float32":
            float32_scores = pipeline_scores
        measurements += dtype_measurements
        checks += dtype_checks
        del model

    ratios = {
        "best": best_ratio(measurements, compiled=(False, True)),
        "uncompiled": best_ratio(measurements, compiled=(False,)),
        "compiled": best_ratio(measurements, compiled=(True,)),
    }
    print_results(measurements, ratios)
    write_record(Path(args.output_json), args, measurements, checks, ratios, device, freed_memory_kept)
    failed = [check for check in checks if check["max_abs_difference"] > check["tolerance"]]
    if failed:
        console.print(f"[red]Scores differ beyond tolerance: {failed}[/red]")
        return 1
    return 0


def measure_dtype(args, accelerator, model, tokenizer, texts, class_names, dtype_name, device, float32_scores):
    """Time the pipeline and zsdistill's pass with the teacher in one dtype.

    Return the measurements, the score checks and the pipeline's scores. Each check compares a zsdistill run with the
    pipeline in the same dtype. When `float32_scores` is given, each measurement records its difference from them.
    """
    num_pairs = len(texts) * len(class_names)
    hypotheses = build_hypotheses(args.hypothesis_template, class_names)
    peak_rate = measure_matmul_rate(device, getattr(torch, dtype_name), size=2048)["flop_rate"]
    console.print(f"{dtype_name}: matrix-multiply rate {peak_rate / 1e9:,.0f} GFLOP/s")
    candidates = [int(size) for size in args.pipeline_batch_sizes.split(",")]
    pipeline_batch = tune_pipeline_batch_size(
        model, tokenizer, texts, class_names, args.hypothesis_template, device, candidates
    )
    # The token limit the pipeline truncates at: the tokenizer's and the position embeddings'.
    max_length = max_input_length(tokenizer, model.config, None)
    pipeline_padding, lengths = pipeline_padding_share(tokenizer, texts, hypotheses, max_length, pipeline_batch)
    model_info = describe_model(model)
    flops = forward_flops(model_info, lengths)

    def measurement(
        implementation, compiled, batch_size, first_call, seconds, padding, peak, run_flops
    ) -> Measurement:
        return Measurement(
            implementation=implementation,
            dtype=dtype_name,
            compiled=compiled,
            batch_size=batch_size,
            first_call_seconds=first_call,
            seconds=seconds,
            pairs_per_second=num_pairs / seconds,
            padding_share=padding,
            peak_memory_increase_mib=None if peak is None else peak / 2**20,
            flop_rate=run_flops / seconds,
            share_of_peak=run_flops / seconds / peak_rate,
        )

    # A warm-up on a few texts keeps one-time costs (allocator, kernels) out of the timings.
    run_pipeline(model, tokenizer, texts[:8], class_names, args.hypothesis_template, pipeline_batch, device)
    seconds, pipeline_scores, peak = time_median(
        lambda: run_pipeline(model, tokenizer, texts, class_names, args.hypothesis_template, pipeline_batch, device),
        args.repeats,
        device,
    )
    measurements = [measurement("pipeline", False, pipeline_batch, None, seconds, pipeline_padding, peak, flops)]
    measurements[-1].max_abs_difference_from_float32 = difference_from(float32_scores, pipeline_scores)

    checks = []
    for compiled in {"no": [False], "yes": [True], "both": [False, True]}[args.compile]:
        scorer = zsdistill_scorer(
            accelerator, model, tokenizer, hypotheses, max_length, args.batch_size, args.max_tokens, compiled
        )
        # The warm-up call is where torch.compile compiles, so it is timed on its own.
        start = time.perf_counter()
        run_zsdistill(scorer, texts[:8])
        first_call = time.perf_counter() - start
        scorer.real_tokens = scorer.padded_tokens = 0
        seconds, scores, peak = time_median(lambda scorer=scorer: run_zsdistill(scorer, texts), args.repeats, device)
        padding = 1 - scorer.real_tokens / scorer.padded_tokens
        # The FLOPs this run computed, which are fewer than the pipeline's when its last layer ran on one token.
        run_flops = flops - first_token_savings(model_info, lengths) if scorer.first_token_only else flops
        measurements.append(
            measurement("zsdistill", compiled, args.batch_size, first_call, seconds, padding, peak, run_flops)
        )
        measurements[-1].last_layer_first_token = scorer.first_token_only
        measurements[-1].matmul_attention = scorer.matmul_attention
        measurements[-1].max_abs_difference_from_float32 = difference_from(float32_scores, scores)
        difference = (scores - pipeline_scores).abs().max().item()
        tolerance = TOLERANCE[dtype_name]
        checks.append(
            {"dtype": dtype_name, "compiled": compiled, "max_abs_difference": difference, "tolerance": tolerance}
        )
        label = f"zsdistill {dtype_name}{' compiled' if compiled else ''}"
        console.print(f"{label}: max score difference from the pipeline {difference:.2e} (tolerance {tolerance})")
        if args.profile:
            with torch.profiler.profile() as profile:
                run_zsdistill(scorer, texts)
            console.print(f"{label}, by operator:")
            console.print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return measurements, checks, pipeline_scores


def difference_from(reference: torch.Tensor | None, scores: torch.Tensor) -> float | None:
    return None if reference is None else (scores - reference).abs().max().item()


def best_ratio(measurements: list[Measurement], compiled: tuple[bool, ...]) -> float | None:
    """Return zsdistill's best pairs/s over the pipeline's best, among runs compiled as in `compiled`, or None."""
    ours = [m.pairs_per_second for m in measurements if m.implementation == "zsdistill" and m.compiled in compiled]
    pipeline = max(m.pairs_per_second for m in measurements if m.implementation == "pipeline")
    return max(ours) / pipeline if ours else None


def print_results(measurements: list[Measurement], ratios: dict[str, float | None]) -> None:
    table = Table(title="Teacher pass throughput")
    columns = ("run", "batch", "first call (s)", "time (s)", "pairs/s", "padding", "memory rise", "GFLOP/s")
    for column in (*columns, "share of peak", "diff. from float32"):
        table.add_column(column, justify="right")
    for m in measurements:
        memory = "n/a" if m.peak_memory_increase_mib is None else f"{m.peak_memory_increase_mib:,.0f} MiB"
        table.add_row(
            f"{m.implementation} {m.dtype}{' compiled' if m.compiled else ''}",
            str(m.batch_size),
            "" if m.first_call_seconds is None else f"{m.first_call_seconds:.1f}",
            f"{m.seconds:.2f}",
            f"{m.pairs_per_second:,.1f}",
            f"{m.padding_share:.1%}",
            memory,
            f"{m.flop_rate / 1e9:,.1f}",
            f"{m.share_of_peak:.1%}",
            "" if m.max_abs_difference_from_float32 is None else f"{m.max_abs_difference_from_float32:.1e}",
        )
    console.print(table)
    for name, ratio in ratios.items():
        if ratio is not None and name != "best":
            console.print(f"zsdistill's best {name} run over the pipeline's best: {ratio:.2f}×")
    console.print(f"zsdistill's best over the pipeline's best: {ratios['best']:.2f}×")


def write_record(path: Path, args, measurements, checks, ratios, device, freed_memory_kept) -> None:
    write_json(
        path,
        {
            "benchmark": "teacher_throughput",
            "created": utc_timestamp(),
            "command": command_line(),
            "arguments": vars(args),
            "machine": machine_info(device) | {"freed_memory_kept": freed_memory_kept},
            "load_average_end": load_average(),
            "versions": library_versions(),
            "measurements": [asdict(m) for m in measurements],
            "score_checks": checks,
            "ratio_best_zsdistill_to_best_pipeline": ratios["best"],
            "ratio_best_uncompiled_zsdistill_to_best_pipeline": ratios["uncompiled"],
            "ratio_best_compiled_zsdistill_to_best_pipeline": ratios["compiled"],
        },
    )
    console.print(f"Wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
