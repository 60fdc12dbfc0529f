"""The teacher pass over a data file: score each distinct text once, in chunks saved as they finish.

Identical texts are scored once and their logits copied. The distinct texts are split into chunks of about
`--teacher_chunk_size` pairs, and each chunk is sorted by length on its own, so a chunk is also the window within
which batches are formed. A chunk's logits are written to disk as soon as it is finished, so memory contains one
chunk at a time, and a pass that was interrupted starts again after its last saved chunk.
"""

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import broadcast_object_list
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zsdistill.cli import COMPILE_MIN_PAIRS
from zsdistill.data import InputError, find_distinct_texts
from zsdistill.predictions import (
    TeacherCache,
    TeacherRecord,
    load_teacher_predictions,
    record_differences,
    save_teacher_predictions,
)
from zsdistill.progress import make_progress
from zsdistill.teacher import (
    NLILabelIds,
    PairScorer,
    TeacherLogits,
    logits_to_teacher_logits,
    should_compile_teacher,
)

logger = get_logger(__name__)


@dataclass
class TeacherPassResult:
    """The logits of every example, in input order, and what the pass did to get them."""

    logits: TeacherLogits
    num_pairs: int
    pairs_scored: int
    chunks_reused: int
    num_chunks: int
    seconds: float
    padding_share: float | None
    # Whether the teacher ran compiled to the end, and the seconds of its first compiled batch (mostly compiling).
    compiled: bool = False
    compile_seconds: float | None = None


@dataclass
class _CacheState:
    """The main process's findings on disk, sent to every process so that all of them do the same work."""

    complete: bool
    finished_chunks: list[int]
    error: str | None = None


def chunk_bounds(num_texts: int, texts_per_chunk: int) -> list[tuple[int, int]]:
    """Split `num_texts` distinct texts into (start, end) ranges of `texts_per_chunk` texts, the last one shorter."""
    return [(start, min(start + texts_per_chunk, num_texts)) for start in range(0, num_texts, texts_per_chunk)]


def _inspect_cache(cache: TeacherCache, record: TeacherRecord, recompute: bool) -> _CacheState:
    """Decide, on the main process, which saved work can be reused; delete it first when `recompute` is set."""
    saved = cache.read_record()
    if saved is None and cache.record_path.exists() and not recompute:
        # Without its record, nothing shows what the saved chunks were computed from, so they are not discarded
        # silently either.
        return _CacheState(
            complete=False,
            finished_chunks=[],
            error=(
                f"{cache.record_path} cannot be read, so the teacher predictions in {cache.directory} cannot be "
                f"checked against the current inputs. Pass --recompute_teacher to discard them and run the teacher "
                f"again, or choose another --output_dir."
            ),
        )
    if saved is not None:
        differences = record_differences(saved, record)
        if differences and not recompute:
            return _CacheState(
                complete=False,
                finished_chunks=[],
                error=(
                    f"--output_dir {cache.directory} contains teacher predictions made for other inputs: "
                    f"{'; '.join(differences)}. Pass --recompute_teacher to discard them and run the teacher again, "
                    f"or choose another --output_dir."
                ),
            )
        if differences:
            logger.info(f"Discarding the teacher predictions in {cache.directory}: {'; '.join(differences)}")
            cache.clear()
            saved = None
        else:
            # The chunk layout of the saved pass is kept, so that its chunks stay usable.
            record.texts_per_chunk = saved["texts_per_chunk"]
    if saved is not None and cache.predictions_path.exists():
        return _CacheState(complete=True, finished_chunks=[])

    if saved is None:
        cache.clear()
        cache.write_record(record)
        return _CacheState(complete=False, finished_chunks=[])
    bounds = chunk_bounds(record.num_unique_texts, record.texts_per_chunk)
    shapes = [(end - start, len(record.class_names), _num_columns(record)) for start, end in bounds]
    return _CacheState(complete=False, finished_chunks=cache.finished_chunks(shapes))


def _num_columns(record: TeacherRecord) -> int:
    return 1 if record.contradiction_id is None else 2


def run_teacher_pass(
    accelerator: Accelerator,
    cache: TeacherCache,
    record: TeacherRecord,
    texts: list[str],
    load_model: Callable[[], PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    hypotheses: list[str],
    label_ids: NLILabelIds,
    batch_size: int,
    max_tokens: int | None,
    recompute: bool = False,
    compile_choice: str = "no",
) -> TeacherPassResult:
    """Return the teacher's logits for every (text, hypothesis) pair, reusing and extending the saved chunks.

    The teacher is loaded with `load_model` only when some chunk is left to score. Raise InputError when the
    directory contains predictions made for other inputs and `recompute` is not set.
    """
    distinct = find_distinct_texts(texts)
    num_classes = len(hypotheses)

    # The main process reads the directory, and the others follow its decision: on several machines, only the main
    # process's disk is sure to hold the files.
    state = [_inspect_cache(cache, record, recompute) if accelerator.is_main_process else None]
    broadcast_object_list(state)
    state = state[0]
    if state.error is not None:
        raise InputError(state.error)
    # The saved record may have another chunk layout, which the main process adopted.
    layout = [record.texts_per_chunk]
    broadcast_object_list(layout)
    record.texts_per_chunk = layout[0]
    bounds = chunk_bounds(len(distinct.texts), record.texts_per_chunk)

    num_pairs = len(texts) * num_classes
    start_time = time.perf_counter()
    if state.complete:
        logger.info(f"Reusing the complete teacher predictions in {cache.predictions_path}: the teacher is not loaded")
        logits = _broadcast_from_main(accelerator, lambda: _load_complete(cache))
        return TeacherPassResult(
            logits, num_pairs, 0, len(bounds), len(bounds), time.perf_counter() - start_time, None
        )

    finished = set(state.finished_chunks)
    to_score = [index for index in range(len(bounds)) if index not in finished]
    reused_pairs = sum((bounds[index][1] - bounds[index][0]) * num_classes for index in finished)
    if finished:
        logger.info(
            f"Reusing {len(finished)} of {len(bounds)} teacher chunks ({reused_pairs:,} pairs) saved in "
            f"{cache.chunks_dir}; scoring the other {len(to_score)}"
        )

    pairs_to_score = sum((bounds[index][1] - bounds[index][0]) * num_classes for index in to_score)
    compile_teacher = should_compile_teacher(compile_choice, pairs_to_score)
    if compile_teacher:
        logger.info(
            f"Compiling the teacher with torch.compile for {pairs_to_score:,} pairs (--teacher_compile "
            f"{compile_choice}): the first batch waits for the compiler"
        )
    elif compile_choice == "auto":
        logger.info(
            f"Not compiling the teacher: {pairs_to_score:,} pairs to score, fewer than the {COMPILE_MIN_PAIRS:,} "
            f"for which --teacher_compile auto compiles"
        )
    scorer = PairScorer(
        accelerator,
        load_model(),
        tokenizer,
        hypotheses,
        label_ids,
        batch_size,
        record.max_length,
        max_tokens,
        compile_teacher=compile_teacher,
    )
    start_time = time.perf_counter()
    with make_progress(accelerator, unit="pairs") as progress:
        task = progress.add_task("Teacher pass", total=len(distinct.texts) * num_classes, completed=reused_pairs)
        for index in to_score:
            start, end = bounds[index]
            chunk_logits = scorer.score(
                distinct.texts[start:end], on_step=lambda pairs: progress.update(task, advance=pairs)
            )
            if accelerator.is_main_process:
                cache.write_chunk(index, chunk_logits)
    seconds = time.perf_counter() - start_time

    # Free the teacher before anything else is loaded: on one accelerator, the teacher and the student need not fit
    # together.
    del scorer.model
    compiled = scorer.compiled_model is not None
    scorer.compiled_model = None
    accelerator.free_memory()
    gc.collect()

    def assemble() -> TeacherLogits:
        distinct_logits = torch.cat([cache.read_chunk(index) for index in range(len(bounds))])
        logits = logits_to_teacher_logits(distinct_logits[torch.tensor(distinct.index_of_example)])
        save_teacher_predictions(cache.predictions_path, logits, record)
        cache.remove_chunks()
        return logits

    logits = _broadcast_from_main(accelerator, assemble)
    padding = scorer.padded_tokens - scorer.real_tokens
    return TeacherPassResult(
        logits=logits,
        num_pairs=num_pairs,
        pairs_scored=scorer.pairs_scored,
        chunks_reused=len(finished),
        num_chunks=len(bounds),
        seconds=seconds,
        padding_share=padding / scorer.padded_tokens if scorer.padded_tokens else None,
        compiled=compiled,
        compile_seconds=scorer.compile_seconds,
    )


def _load_complete(cache: TeacherCache) -> TeacherLogits:
    return load_teacher_predictions(cache.predictions_path)[0]


def _broadcast_from_main(accelerator: Accelerator, produce: Callable[[], TeacherLogits]) -> TeacherLogits:
    """Run `produce` on the main process alone and send its result to every process."""
    result = [produce() if accelerator.is_main_process else None]
    broadcast_object_list(result)
    return result[0]
