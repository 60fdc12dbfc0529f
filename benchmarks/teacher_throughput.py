"""Compare zsdistill's teacher pass with transformers' zero-shot pipeline on the same model, texts and machine.

Both run in this one process, in float32 and, where the device supports it natively, in bfloat16 weights. The
pipeline gets its best batch size from a short trial; zsdistill runs its own loop (pairs sorted by length, inputs
tokenized in bulk). For each run the script prints pairs per second, the share of padding tokens, peak memory and
the achieved FLOP rate as a share of the matrix-multiply rate measured in the same run. It then checks that both
produce the same scores.

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
from measure import describe_model, forward_flops, measure_matmul_rate, time_repeats
from records import command_line, library_versions, load_average, machine_info, utc_timestamp, write_json
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from zsdistill.models import resolve_teacher_dtype
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

console = Console(stderr=True, width=140)


@dataclass
class Measurement:
    """One timed run of one implementation in one dtype."""

    implementation: str
    dtype: str
    batch_size: int
    seconds: float
    pairs_per_second: float
    padding_share: float
    peak_memory_increase_mib: float | None
    flop_rate: float
    share_of_peak: float


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


def run_zsdistill(
    accelerator, model, tokenizer, texts, hypotheses, batch_size, max_tokens
) -> tuple[torch.Tensor, float]:
    label_ids = find_nli_label_ids(model.config)
    scorer = PairScorer(accelerator, model, tokenizer, hypotheses, label_ids, batch_size, 512, max_tokens)
    logits = scorer.score(texts)
    soft_labels = soft_labels_from_logits(logits_to_teacher_logits(logits), multi_label=False)
    return soft_labels, 1 - scorer.real_tokens / scorer.padded_tokens


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
        "--pipeline_batch_sizes", default="8,16,32,64", help="pipeline batch sizes to try (default: 8,16,32,64)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each, the median reported (default: 3)")
    parser.add_argument(
        "--output_json",
        default=str(REPOSITORY / "benchmarks" / "results" / "teacher_throughput.json"),
        help="where to write every figure",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    class_names = args.class_names.split(",")
    hypotheses = build_hypotheses(args.hypothesis_template, class_names)
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
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        model = AutoModelForSequenceClassification.from_pretrained(args.teacher, dtype=dtype).to(device).eval()
        peak_rate = measure_matmul_rate(device, dtype, size=2048)["flop_rate"]
        candidates = [int(size) for size in args.pipeline_batch_sizes.split(",")]
        pipeline_batch = tune_pipeline_batch_size(
            model, tokenizer, texts, class_names, args.hypothesis_template, device, candidates
        )
        pipeline_padding, lengths = pipeline_padding_share(tokenizer, texts, hypotheses, 512, pipeline_batch)
        flops = forward_flops(describe_model(model), lengths)

        def pipeline_run(model=model, batch=pipeline_batch):
            return run_pipeline(model, tokenizer, texts, class_names, args.hypothesis_template, batch, device)

        def zsdistill_run(model=model):
            return run_zsdistill(accelerator, model, tokenizer, texts, hypotheses, args.batch_size, args.max_tokens)

        # Warm up both on a few texts, so that one-time costs (allocator, kernels) stay out of the timings.
        run_pipeline(model, tokenizer, texts[:8], class_names, args.hypothesis_template, pipeline_batch, device)
        run_zsdistill(accelerator, model, tokenizer, texts[:8], hypotheses, args.batch_size, args.max_tokens)

        seconds, pipeline_scores, peak = time_median(pipeline_run, args.repeats, device)
        measurements.append(
            make_measurement(
                "pipeline", dtype_name, pipeline_batch, seconds, num_pairs, pipeline_padding, peak, flops, peak_rate
            )
        )
        seconds, (zsdistill_scores, padding), peak = time_median(zsdistill_run, args.repeats, device)
        measurements.append(
            make_measurement(
                "zsdistill", dtype_name, args.batch_size, seconds, num_pairs, padding, peak, flops, peak_rate
            )
        )

        difference = (zsdistill_scores - pipeline_scores).abs().max().item()
        checks.append({"dtype": dtype_name, "max_abs_difference": difference, "tolerance": TOLERANCE[dtype_name]})
        console.print(
            f"{dtype_name}: matrix-multiply rate {peak_rate / 1e9:,.0f} GFLOP/s; max score difference {difference:.2e}"
        )
        del model

    best = {
        name: max(m.pairs_per_second for m in measurements if m.implementation == name)
        for name in ("pipeline", "zsdistill")
    }
    ratio = best["zsdistill"] / best["pipeline"]
    print_results(measurements, checks, ratio)
    write_record(Path(args.output_json), args, measurements, checks, ratio, device)
    failed = [check for check in checks if check["max_abs_difference"] > check["tolerance"]]
    if failed:
        console.print(f"[red]Scores differ beyond tolerance: {failed}[/red]")
        return 1
    return 0


def make_measurement(implementation, dtype, batch_size, seconds, num_pairs, padding, peak, flops, peak_rate):
    return Measurement(
        implementation=implementation,
        dtype=dtype,
        batch_size=batch_size,
        seconds=seconds,
        pairs_per_second=num_pairs / seconds,
        padding_share=padding,
        peak_memory_increase_mib=None if peak is None else peak / 2**20,
        flop_rate=flops / seconds,
        share_of_peak=flops / seconds / peak_rate,
    )


def print_results(measurements: list[Measurement], checks: list[dict], ratio: float) -> None:
    table = Table(title="Teacher pass throughput")
    for column in ("run", "batch", "time (s)", "pairs/s", "padding", "memory rise", "GFLOP/s", "share of peak"):
        table.add_column(column, justify="right")
    for m in measurements:
        memory = "n/a" if m.peak_memory_increase_mib is None else f"{m.peak_memory_increase_mib:,.0f} MiB"
        table.add_row(
            f"{m.implementation} {m.dtype}",
            str(m.batch_size),
            f"{m.seconds:.2f}",
            f"{m.pairs_per_second:,.1f}",
            f"{m.padding_share:.1%}",
            memory,
            f"{m.flop_rate / 1e9:,.1f}",
            f"{m.share_of_peak:.1%}",
        )
    console.print(table)
    console.print(f"zsdistill's best over the pipeline's best: {ratio:.2f}×")


def write_record(path: Path, args, measurements, checks, ratio, device) -> None:
    write_json(
        path,
        {
            "benchmark": "teacher_throughput",
            "created": utc_timestamp(),
            "command": command_line(),
            "arguments": vars(args),
            "machine": machine_info(device),
            "load_average_end": load_average(),
            "versions": library_versions(),
            "measurements": [asdict(m) for m in measurements],
            "score_checks": checks,
            "ratio_best_zsdistill_to_best_pipeline": ratio,
        },
    )
    console.print(f"Wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
