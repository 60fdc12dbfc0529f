"""The NLI teacher: find its entailment and contradiction logits, and score every (text, hypothesis) pair."""

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, is_compiled_module
from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from zsdistill.cli import COMPILE_MIN_PAIRS
from zsdistill.cpu_attention import prefers_matmul_attention, use_matmul_attention
from zsdistill.data import InputError
from zsdistill.first_token import run_last_layer_on_first_token
from zsdistill.pair_tokenization import tokenize_pairs
from zsdistill.progress import make_progress

logger = get_logger(__name__)

_CONTRADICTION_NAMES = ("contradiction", "not_entailment", "non_entailment", "not entailment", "non-entailment")

# Padded lengths are rounded up to a multiple of this, which leaves fewer distinct batch shapes, so the kernels that
# oneDNN and cuBLAS choose per shape are reused more often, at the cost of a few padding tokens. A multiple of 16
# makes PyTorch's CPU attention kernel faster, but the extra padding costs the matrix products as much. With
# zsdistill's matmul attention the lengths are not rounded, because that made the compiled pass about 2% faster.
PAD_MULTIPLE = 8


@dataclass(frozen=True)
class NLILabelIds:
    """Indices of the teacher's entailment logit and of the logit that entailment is contrasted with."""

    entailment: int
    contradiction: int | None


@dataclass
class TeacherLogits:
    """The teacher's raw logits for every (example, class) pair, shape (N, K), float32, in input order."""

    entailment: torch.Tensor
    contradiction: torch.Tensor | None


def find_nli_label_ids(
    config: PretrainedConfig, entailment_id: int | None = None, contradiction_id: int | None = None
) -> NLILabelIds:
    """Find the entailment and contradiction logits by name in `config.label2id`, unless given explicitly.

    Names match case-insensitively. A binary `entailment` / `not_entailment` model uses `not_entailment` as the
    contradiction. Raise InputError when no label is named as entailment, rather than guess an index.
    """
    num_labels = config.num_labels
    for flag, value in (("--entailment_id", entailment_id), ("--contradiction_id", contradiction_id)):
        if value is not None and not 0 <= value < num_labels:
            raise InputError(
                f"{flag} {value} is out of range: the teacher has {num_labels} labels, 0 to {num_labels - 1}."
            )

    label2id = {name.lower(): index for name, index in (config.label2id or {}).items()}
    labels_text = ", ".join(f"{index}: {name}" for name, index in sorted(config.label2id.items(), key=lambda x: x[1]))

    if entailment_id is None:
        entailment_id = next((index for name, index in label2id.items() if name.startswith("entail")), None)
    if entailment_id is None:
        raise InputError(
            f"The teacher's labels ({labels_text}) name no entailment class, so its entailment logit is unknown. "
            f"Use an NLI model, or pass --entailment_id (and --contradiction_id for --multi_label) with the "
            f"indices of its entailment and contradiction logits."
        )

    if contradiction_id is None:
        contradiction_id = next((label2id[name] for name in _CONTRADICTION_NAMES if name in label2id), None)
        # An explicit --entailment_id that points at the label named contradiction means the names are wrong, so the
        # contradiction found by name is dropped rather than used for both.
        if contradiction_id == entailment_id:
            contradiction_id = None
    if contradiction_id == entailment_id:
        raise InputError(
            f"--entailment_id and --contradiction_id are both {entailment_id}. They must name two different logits "
            f"of the teacher ({labels_text})."
        )
    return NLILabelIds(entailment=entailment_id, contradiction=contradiction_id)


def should_compile_teacher(choice: str, pairs_to_score: int) -> bool:
    """Resolve --teacher_compile: `yes` and `no` as given, `auto` when there are COMPILE_MIN_PAIRS pairs or more."""
    if choice == "auto":
        return pairs_to_score >= COMPILE_MIN_PAIRS
    return choice == "yes"


def build_hypotheses(hypothesis_template: str, class_names: list[str]) -> list[str]:
    """Fill the template with each class name, as transformers' zero-shot pipeline does."""
    return [hypothesis_template.format(name) for name in class_names]


def check_hypotheses_fit(
    tokenizer: PreTrainedTokenizerBase, hypotheses: list[str], class_names: list[str], max_length: int
) -> None:
    """Raise InputError if a hypothesis leaves no room for even one token of the text, naming its class."""
    special_tokens = tokenizer.num_special_tokens_to_add(pair=True)
    for name, hypothesis in zip(class_names, hypotheses, strict=True):
        # verbose=False keeps the tokenizer from warning that a long hypothesis exceeds the model's limit.
        length = len(tokenizer(hypothesis, add_special_tokens=False, verbose=False)["input_ids"])
        if length + special_tokens + 1 > max_length:
            raise InputError(
                f"The hypothesis for class {_shorten(name)!r} ({_shorten(hypothesis)!r}) is {length} tokens long. "
                f"With {special_tokens} special tokens it leaves no room for the text within the limit of "
                f"{max_length} tokens. Shorten the class name or the template, or raise --max_length if the "
                f"teacher allows it."
            )


def _shorten(text: str, max_chars: int = 80) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def plan_batches(
    lengths: list[int], batch_size: int, max_tokens: int | None, num_processes: int
) -> list[list[list[int]]]:
    """Group pair indices into batches of similar length and deal them out to the processes.

    Returns one entry per step, each holding up to `num_processes` batches: process `r` runs the `r`-th batch of
    every step, or none when a step has fewer. Pairs are sorted longest first, so a batch pads to almost nothing.
    The largest batch runs first, so a batch that does not fit in memory fails at once. The batches of one step
    contain about as many tokens each, which keeps the processes in step. A batch contains at most `batch_size`
    pairs and, when `max_tokens` is set, at most `max_tokens` tokens after padding, but always at least one pair.
    """
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    batches: list[list[int]] = []
    batch: list[int] = []
    for index in order:
        # The first pair of a batch is its longest, so the padded size of the batch is its length times the count.
        full = len(batch) == batch_size or (
            max_tokens is not None and bool(batch) and (len(batch) + 1) * lengths[batch[0]] > max_tokens
        )
        if batch and full:
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return [batches[start : start + num_processes] for start in range(0, len(batches), num_processes)]


def padded_length(length: int, multiple: int) -> int:
    """Return `length` rounded up to a multiple of `multiple`."""
    return -(-length // multiple) * multiple


def _pad(sequences: list[list[int]], pad_value: int, padding_side: str, multiple: int) -> torch.Tensor:
    lengths = torch.tensor([len(sequence) for sequence in sequences])
    width = padded_length(int(lengths.max()), multiple)
    positions = torch.arange(width)
    if padding_side == "left":
        filled = positions >= width - lengths[:, None]
    else:
        filled = positions < lengths[:, None]
    padded = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    # A boolean mask assigns in row-major order, which is the order of the concatenated sequences.
    padded[filled] = torch.tensor(list(itertools.chain.from_iterable(sequences)), dtype=torch.long)
    return padded


class PairScorer:
    """The teacher prepared on its device, scoring (text, hypothesis) pairs in length-sorted batches.

    Every process calls `score` with the same texts. Each runs its share of the batches, and the results of every
    step are gathered, so that every process returns all the logits.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        hypotheses: list[str],
        label_ids: NLILabelIds,
        batch_size: int,
        max_length: int,
        max_tokens: int | None = None,
        compile_teacher: bool = False,
        matmul_attention: bool | None = None,
    ):
        self.accelerator = accelerator
        self.tokenizer = tokenizer
        self.hypotheses = hypotheses
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_tokens = max_tokens
        self.columns = [label_ids.entailment]
        if label_ids.contradiction is not None:
            self.columns.append(label_ids.contradiction)
        self.pad_values = {
            "input_ids": tokenizer.pad_token_id,
            "attention_mask": 0,
            "token_type_ids": tokenizer.pad_token_type_id,
        }

        model.requires_grad_(False)
        model.eval()
        # Whether the teacher's attention is zsdistill.cpu_attention's, by default where it measured faster than
        # PyTorch's fused kernel.
        if matmul_attention is None:
            matmul_attention = prefers_matmul_attention(accelerator.device, model.dtype, compile_teacher)
        self.matmul_attention = matmul_attention and use_matmul_attention(model)
        self.pad_multiple = 1 if self.matmul_attention else PAD_MULTIPLE
        # Whether the last layer computes only the first token, the one the classification head reads.
        self.first_token_only = run_last_layer_on_first_token(model)
        if accelerator.distributed_type == DistributedType.FSDP:
            # Sharding the teacher's weights is what lets a teacher too large for one device run.
            # NOTE: the tests run on CPUs only, so this branch and saving the student under FSDP have not been run.
            self.model = accelerator.prepare(model)
        else:
            # The teacher is never trained, so it is prepared in evaluation mode: moved to the device and given
            # mixed-precision autocast, but not wrapped in DistributedDataParallel. A plain prepare() on MULTI_CPU
            # wraps even a model without trainable parameters in DDP (Accelerate 1.16), and DDP raises for it.
            self.model = accelerator.prepare_model(model, evaluation_mode=True)

        # The compiled teacher, or None. A model that Accelerate's dynamo settings compiled is left as it is, and
        # so is a teacher sharded by FSDP, whose forward gathers its weights.
        self.compiled_model = None
        sharded = accelerator.distributed_type == DistributedType.FSDP
        if compile_teacher and not sharded and not is_compiled_module(self.model):
            # One graph with dynamic shapes serves every batch, so no batch waits for a recompile. Freezing turns the
            # frozen weights into constants: on CPUs, inductor then prepacks them for oneDNN and fuses the bias and
            # the activation into each matrix product.
            from torch._inductor import config as inductor_config

            self.compiled_model = torch.compile(self.model, dynamic=True)
            # Inductor reads the setting when it compiles, at the first call. Passed through torch.compile's
            # `options`, it is not applied (PyTorch 2.13), so every compiled call runs under a patched config.
            self._compile_config = inductor_config.patch(freezing=True)

        # Seconds of the first compiled batch, almost all of them compiling, or None until that batch has run.
        self.compile_seconds = None
        self.pairs_scored = 0
        self.padded_tokens = 0
        self.real_tokens = 0
        # Whether the warning about pairs longer than max_tokens was given, so that later chunks do not repeat it.
        self._warned_max_tokens = False

    def score(self, texts: list[str], on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        """Return the logits of every pair of `texts`, shape (len(texts), K, C), float32, on the CPU, in input order.

        C is 2 (entailment, contradiction) when the teacher has a contradiction label, else 1. `on_step` is called
        with the number of pairs finished after every step. A batch that does not fit in memory on any process
        makes every process halve its batch size and start these texts again.
        """
        encodings = tokenize_pairs(self.tokenizer, texts, self.hypotheses, self.max_length)
        lengths = [len(ids) for ids in encodings["input_ids"]]
        longest = max(lengths, default=0)
        if self.max_tokens is not None and longest > self.max_tokens and not self._warned_max_tokens:
            self._warned_max_tokens = True
            over = sum(length > self.max_tokens for length in lengths)
            logger.warning(
                f"{over:,} of {len(lengths):,} pairs are longer than --teacher_max_tokens {self.max_tokens:,} (the "
                f"longest has {longest:,} tokens), so each of them runs in a batch of its own. Raise "
                f"--teacher_max_tokens to at least the longest pair to batch them."
            )
        while True:
            logits = self._score_encoded(encodings, lengths, on_step, lambda pair: texts[pair // len(self.hypotheses)])
            if logits is not None:
                return logits.view(len(texts), len(self.hypotheses), len(self.columns))
            if self.batch_size == 1:
                raise RuntimeError(
                    "A single (text, hypothesis) pair does not fit in the accelerator's memory. Lower --max_length, "
                    "load the teacher in half precision with --teacher_dtype, or shard it with an FSDP config."
                )
            self.batch_size = max(1, self.batch_size // 2)
            if self.max_tokens is not None:
                self.max_tokens = max(1, self.max_tokens // 2)
            logger.warning(f"A teacher batch ran out of memory: retrying with {self.batch_size} pairs per batch")

    def _score_encoded(self, encodings, lengths, on_step, texts_of_pairs) -> torch.Tensor | None:
        """Run the planned steps; return the logits, or None when some process ran out of memory."""
        accelerator = self.accelerator
        num_pairs = len(lengths)
        steps = plan_batches(lengths, self.batch_size, self.max_tokens, accelerator.num_processes)
        logits_out = torch.empty(num_pairs, len(self.columns), dtype=torch.float32)
        times_received = torch.zeros(num_pairs, dtype=torch.long)
        scored_here = 0
        for step in steps:
            # A process left without a batch in the last step scores one pair and discards it: under FSDP every
            # process must run each forward, because the forward gathers the sharded weights from all of them.
            own = step[accelerator.process_index] if accelerator.process_index < len(step) else step[0][:1]
            keep = accelerator.process_index < len(step)
            pair_index = torch.tensor(own if keep else [-1], device=accelerator.device)

            out_of_memory = torch.zeros(1, dtype=torch.long, device=accelerator.device)
            try:
                logits = self._forward(encodings, own)
            except RuntimeError as error:
                if not should_reduce_batch_size(error):
                    raise
                out_of_memory += 1
                logits = torch.zeros(len(own), len(self.columns), device=accelerator.device)

            # Every process joins the same collectives at every step, whatever its own batch did, so that an uneven
            # last step or a failed batch cannot leave one process waiting for the others.
            pair_index, logits = accelerator.pad_across_processes((pair_index, logits), dim=0, pad_index=-1)
            pair_index, logits, out_of_memory = accelerator.gather((pair_index, logits, out_of_memory))
            if out_of_memory.any():
                del logits
                clear_device_cache(garbage_collection=True)
                if on_step is not None:
                    on_step(-scored_here)
                return None
            found = pair_index >= 0
            pair_index, logits = pair_index[found].cpu(), logits[found].cpu()

            # Every process checks the same gathered values, so all of them stop together.
            if not torch.isfinite(logits).all():
                first = pair_index[~torch.isfinite(logits).all(dim=1)][0].item()
                text, hypothesis = texts_of_pairs(first), self.hypotheses[first % len(self.hypotheses)]
                raise FloatingPointError(
                    f"The teacher returned a non-finite logit for the text {_shorten(text)!r} with the hypothesis "
                    f"{hypothesis!r}. Half precision overflows in some models: run with --teacher_dtype float32 "
                    f"and --mixed_precision no."
                )
            logits_out[pair_index] = logits
            times_received.index_add_(0, pair_index, torch.ones_like(pair_index))
            scored_here += len(pair_index)
            if on_step is not None:
                on_step(len(pair_index))

        # Every process checks the same gathered indices, so all of them stop together. A missing pair would leave
        # an uninitialized row in the output.
        if not (times_received == 1).all():
            missing = (times_received == 0).sum().item()
            repeated = (times_received > 1).sum().item()
            raise RuntimeError(
                f"The gathered teacher logits cover {num_pairs - missing:,} of {num_pairs:,} pairs, {repeated:,} of "
                f"them more than once, on {accelerator.num_processes} processes. Every pair must arrive exactly "
                f"once. Run on one process to get correct results."
            )
        self.pairs_scored += num_pairs
        for step in steps:
            for batch in step:
                self.real_tokens += sum(lengths[index] for index in batch)
                self.padded_tokens += len(batch) * padded_length(lengths[batch[0]], self.pad_multiple)
        return logits_out

    def _forward(self, encodings: dict[str, list[list[int]]], indices: list[int]) -> torch.Tensor:
        num_real = len(indices)
        if self.compiled_model is not None and num_real == 1:
            # A batch of one would make torch.compile specialize on it and compile again, so the pair goes twice.
            indices = indices * 2
        padding_side = self.tokenizer.padding_side
        batch = {
            name: _pad(
                [values[index] for index in indices], self.pad_values.get(name, 0), padding_side, self.pad_multiple
            ).to(self.accelerator.device)
            for name, values in encodings.items()
        }
        with torch.inference_mode():
            if self.compiled_model is not None:
                try:
                    start = time.perf_counter()
                    with self._compile_config:
                        logits = self.compiled_model(**batch).logits
                    if self.compile_seconds is None:
                        self.compile_seconds = time.perf_counter() - start
                except Exception as error:
                    if should_reduce_batch_size(error):
                        raise
                    # torch.compile needs a working C++ compiler on CPUs and Triton on GPUs. Without them, the
                    # teacher runs uncompiled.
                    summary = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    logger.warning(
                        f"torch.compile failed on the teacher ({type(error).__name__}: {_shorten(summary, 200)}); "
                        f"scoring without it. Pass --teacher_compile no to skip the attempt."
                    )
                    self.compiled_model = None
                    logits = self.model(**batch).logits
            else:
                logits = self.model(**batch).logits
            # The softmax that turns these logits into soft labels runs in float32, whatever the teacher's dtype.
            return logits[:num_real, self.columns].float()


def score_pairs(
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    hypotheses: list[str],
    label_ids: NLILabelIds,
    batch_size: int,
    max_length: int,
    *,
    max_tokens: int | None = None,
) -> TeacherLogits:
    """Run every (text, hypothesis) pair through the teacher and return its logits in input order.

    The pairs are scored in memory in one go. The teacher pass of a run goes through `zsdistill.teacher_pass`
    instead, which splits a data file into chunks saved as they finish.
    """
    scorer = PairScorer(accelerator, model, tokenizer, hypotheses, label_ids, batch_size, max_length, max_tokens)
    num_pairs = len(texts) * len(hypotheses)
    with make_progress(accelerator, unit="pairs") as progress:
        task = progress.add_task("Teacher pass", total=num_pairs)
        logits = scorer.score(texts, on_step=lambda pairs: progress.update(task, advance=pairs))
    return logits_to_teacher_logits(logits)


def logits_to_teacher_logits(logits: torch.Tensor) -> TeacherLogits:
    """Split logits of shape (N, K, C) into entailment and, when C is 2, contradiction."""
    contradiction = logits[..., 1].contiguous() if logits.shape[-1] == 2 else None
    return TeacherLogits(entailment=logits[..., 0].contiguous(), contradiction=contradiction)
