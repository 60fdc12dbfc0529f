"""The student's training loop on the teacher's soft labels, with agreement measured on held-out texts."""

import logging
import math
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from safetensors import SafetensorError
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from zsdistill.checkpoints import (
    Checkpoint,
    TrainingProgress,
    checkpoint_path,
    checkpoints_dir,
    delete_checkpoint,
    delete_old_checkpoints,
    list_step_dirs,
    write_progress,
)
from zsdistill.data import InputError, find_distinct_texts
from zsdistill.losses import distillation_loss
from zsdistill.metrics import agreement_per_example
from zsdistill.progress import make_progress

logger = get_logger(__name__)

STATUS_EVERY_UPDATES = 10


@dataclass
class TrainingConfig:
    """Optimization settings, named as in transformers' TrainingArguments."""

    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 128
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    num_train_epochs: float = 3.0
    warmup_ratio: float = 0.1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    # Optimizer steps between checkpoints, "epoch" for one at the end of each epoch, or None for no checkpoints.
    checkpointing_steps: int | str | None = None
    # The number of newest checkpoints kept, None to keep all. With 0, only the newest is kept while training runs,
    # and it is deleted when training ends.
    save_total_limit: int | None = None


@dataclass
class EpochResult:
    """The mean training loss of an epoch, the optimizer steps taken so far, and the agreement after the epoch."""

    epoch: int
    train_loss: float
    optimizer_steps: int
    agreement: float | None


def split_validation(texts: list[str], validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Return training and held-out example indices, both sorted, holding out `validation_split` of the texts.

    The split is over distinct texts, so that every copy of a held-out text is held out too: a copy left in training
    would make the agreement measure memory rather than generalization. Nothing is held out when the share rounds
    down to zero distinct texts, and at least one distinct text is always trained on.
    """
    distinct = find_distinct_texts(texts)
    distinct_of_example = distinct.index_of_example
    num_distinct = len(distinct.texts)
    num_validation = min(int(num_distinct * validation_split), num_distinct - 1)
    order = torch.randperm(num_distinct, generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = set(order[:num_validation])
    train_indices = [index for index, distinct in enumerate(distinct_of_example) if distinct not in held_out]
    validation_indices = [index for index, distinct in enumerate(distinct_of_example) if distinct in held_out]
    return train_indices, validation_indices


class SoftLabelDataset(Dataset):
    """Tokenized texts paired with their soft labels."""

    def __init__(self, input_features: list[dict], soft_labels: torch.Tensor, indices: list[int]):
        self.input_features = input_features
        self.soft_labels = soft_labels
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        return {**self.input_features[index], "soft_labels": self.soft_labels[index]}


class EpochShuffleSampler(Sampler[int]):
    """A random order of the dataset's positions that depends only on the seed and the epoch set last.

    Each epoch's order is drawn from a generator seeded with `seed + epoch`, as in Accelerate's
    SeedableRandomSampler, so a resumed run shuffles an epoch as the uninterrupted run did, and every process of a
    launch draws the same order.
    """

    def __init__(self, num_examples: int, seed: int):
        self.num_examples = num_examples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_examples, generator=generator).tolist()


class _SoftLabelCollator:
    """Pad a batch to its longest text and stack the soft labels."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        soft_labels = torch.stack([feature.pop("soft_labels") for feature in features])
        batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        batch = {name: batch[name] for name in self.tokenizer.model_input_names if name in batch}
        batch["soft_labels"] = soft_labels
        return batch


def tokenize_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[dict]:
    """Tokenize all texts at once, truncated to `max_length` tokens and not yet padded."""
    encodings = tokenizer(texts, truncation=True, max_length=max_length)
    names = [name for name in tokenizer.model_input_names if name in encodings]
    return [{name: encodings[name][i] for name in names} for i in range(len(texts))]


def _optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Apply weight decay to weight matrices only, not to biases and normalization weights."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in parameters if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in parameters if p.dim() < 2], "weight_decay": 0.0},
    ]


def linear_schedule_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Return a schedule that rises linearly to the peak learning rate, then falls linearly towards zero.

    Unlike transformers' "linear" schedule, the first and last steps get a learning rate above zero, so that a short
    run (one or two steps on a small file) still trains.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return LambdaLR(optimizer, factor)


def measure_agreement(
    accelerator: Accelerator, model: torch.nn.Module, loader: DataLoader, multi_label: bool
) -> float | None:
    """Return the share of held-out decisions on which student and teacher agree, over all processes."""
    model.eval()
    agreements, finite = [], []
    with torch.inference_mode():
        for batch in loader:
            soft_labels = batch.pop("soft_labels")
            logits = model(**batch).logits
            batch_agreement = agreement_per_example(logits, soft_labels, multi_label)
            batch_finite = torch.isfinite(logits).all(dim=-1)
            batch_agreement, batch_finite = accelerator.gather_for_metrics((batch_agreement, batch_finite))
            agreements.append(batch_agreement)
            finite.append(batch_finite)
    model.train()
    if not agreements:
        return None
    # Every process checks the same gathered values, so all of them stop together.
    if not torch.cat(finite).all():
        raise FloatingPointError(
            "Training diverged: the student returns non-finite logits on held-out texts. Lower --learning_rate, or "
            "run without mixed precision. The teacher's predictions are saved."
        )
    return torch.cat(agreements).mean().item()


@contextmanager
def _accelerate_logs_at_warning() -> Iterator[None]:
    """Hide the line that Accelerate logs for each file it saves or loads, which would repeat at every checkpoint."""
    accelerate_loggers = [logging.getLogger(name) for name in ("accelerate.accelerator", "accelerate.checkpointing")]
    levels = [accelerate_logger.level for accelerate_logger in accelerate_loggers]
    for accelerate_logger in accelerate_loggers:
        accelerate_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for accelerate_logger, level in zip(accelerate_loggers, levels, strict=True):
            accelerate_logger.setLevel(level)


def _checkpoint_due(config: TrainingConfig, completed_updates: int, at_epoch_end: bool) -> bool:
    if config.checkpointing_steps is None:
        return False
    if config.checkpointing_steps == "epoch":
        return at_epoch_end
    return completed_updates % config.checkpointing_steps == 0


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, progress: TrainingProgress, setup: dict, save_total_limit: int | None
) -> Path:
    """Save the training state into OUTPUT_DIR/checkpoints/step_{n} and delete checkpoints beyond the limit.

    Every process must call this: `save_state` writes the shared files from the main process and one random number
    generator state per process.
    """
    path = checkpoint_path(output_dir, progress.optimizer_steps)
    # A run resumed from an earlier checkpoint reaches steps that the interrupted run saved in full or in part.
    if accelerator.is_main_process and path.exists():
        delete_checkpoint(path)
    accelerator.wait_for_everyone()
    with _accelerate_logs_at_warning():
        accelerator.save_state(path)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_progress(path, progress, setup)
        if save_total_limit is not None:
            # The newest checkpoint stays until training ends even with a limit of 0, so an interrupted run resumes.
            delete_old_checkpoints(output_dir, keep=max(1, save_total_limit))
    accelerator.wait_for_everyone()
    logger.info(f"Saved checkpoint {path} after optimizer step {progress.optimizer_steps}")
    return path


def _delete_stale_checkpoints(accelerator: Accelerator, output_dir: Path) -> None:
    """Delete the checkpoints that an earlier run left in --output_dir, which this run writes over."""
    if accelerator.is_main_process:
        stale = list_step_dirs(output_dir)
        for _, path in stale:
            delete_checkpoint(path)
        if stale:
            logger.info(f"Deleted {len(stale)} checkpoints of an earlier run from {checkpoints_dir(output_dir)}")
    accelerator.wait_for_everyone()


def _delete_all_checkpoints(accelerator: Accelerator, output_dir: Path) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for _, path in list_step_dirs(output_dir):
            delete_checkpoint(path)
        if checkpoints_dir(output_dir).is_dir() and not any(checkpoints_dir(output_dir).iterdir()):
            checkpoints_dir(output_dir).rmdir()
    accelerator.wait_for_everyone()


def _start_position(
    accelerator: Accelerator, output_dir: Path, resume: Checkpoint | None, total_updates: int, batches_per_epoch: int
) -> TrainingProgress:
    """Return where training starts: at the beginning, or at the checkpoint `resume`, whose state is loaded."""
    if resume is None:
        _delete_stale_checkpoints(accelerator, output_dir)
        return TrainingProgress(optimizer_steps=0, epoch=1, batches_in_epoch=0, epoch_finished=False)

    # Restores the weights, the optimizer and scheduler, the accumulation step and every process's RNG states.
    try:
        with _accelerate_logs_at_warning():
            accelerator.load_state(resume.path)
    except (OSError, RuntimeError, SafetensorError, pickle.UnpicklingError) as error:
        raise InputError(
            f"--resume_from_checkpoint {resume.path} cannot be loaded: {error}. Give another checkpoint, or start the "
            f"run without --resume_from_checkpoint. The teacher's predictions are saved."
        ) from None
    position = resume.progress
    logger.info(
        f"Resuming from {resume.path}: optimizer step {position.optimizer_steps} of {total_updates}, epoch "
        f"{position.epoch}, {position.batches_in_epoch} of its {batches_per_epoch} batches per process done"
    )
    return position


def _epoch_loader(
    accelerator: Accelerator, train_loader: DataLoader, sampler: EpochShuffleSampler, epoch: int, skipped_batches: int
) -> DataLoader:
    """Return the prepared loader for `epoch`, counted from 1, without its first `skipped_batches` batches."""
    epoch_loader = train_loader
    if skipped_batches:
        epoch_loader = accelerator.skip_first_batches(train_loader, skipped_batches)
    # The prepared loader passes the epoch on to the sampler, but not through the batch sampler that
    # skip_first_batches wraps around a multi-process shard, so the sampler is set here too.
    epoch_loader.set_epoch(epoch - 1)
    sampler.set_epoch(epoch - 1)
    return epoch_loader


def train_student(
    accelerator: Accelerator,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_set: SoftLabelDataset,
    validation_set: SoftLabelDataset | None,
    config: TrainingConfig,
    multi_label: bool,
    *,
    output_dir: Path,
    setup: dict,
    resume: Checkpoint | None = None,
) -> tuple[PreTrainedModel, list[EpochResult]]:
    """Train the student on the soft labels and return the prepared model with one result per epoch.

    Checkpoints go to OUTPUT_DIR/checkpoints as `config.checkpointing_steps` sets, each recording `setup`. With
    `resume`, training continues from that checkpoint at the same optimizer step and position in the data.
    """
    collator = _SoftLabelCollator(tokenizer)
    sampler = EpochShuffleSampler(len(train_set), config.seed)
    # Each loader draws its workers' base seed from a generator of its own rather than from torch's global one,
    # which dropout uses. A resumed run starts a loader where the uninterrupted run did not, and must not draw more.
    train_loader = DataLoader(
        train_set,
        batch_size=config.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=collator,
        generator=torch.Generator(),
    )
    optimizer = torch.optim.AdamW(_optimizer_groups(model, config.weight_decay), lr=config.learning_rate)

    # Each process gets 1/num_processes of the batches and updates once per gradient_accumulation_steps of them.
    batches_per_process = math.ceil(len(train_loader) / accelerator.num_processes)
    updates_per_epoch = math.ceil(batches_per_process / config.gradient_accumulation_steps)
    total_updates = math.ceil(config.num_train_epochs * updates_per_epoch)
    num_epochs = math.ceil(total_updates / updates_per_epoch)
    # A prepared scheduler steps once per process at each update, so its schedule is counted in those steps.
    scheduler = linear_schedule_with_warmup(
        optimizer,
        warmup_steps=math.ceil(config.warmup_ratio * total_updates) * accelerator.num_processes,
        total_steps=total_updates * accelerator.num_processes,
    )

    if validation_set is not None:
        validation_loader = DataLoader(
            validation_set,
            batch_size=config.per_device_eval_batch_size,
            collate_fn=collator,
            generator=torch.Generator(),
        )
        model, optimizer, train_loader, validation_loader, scheduler = accelerator.prepare(
            model, optimizer, train_loader, validation_loader, scheduler
        )
    else:
        validation_loader = None
        model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    start = _start_position(accelerator, output_dir, resume, total_updates, batches_per_process)
    results = [EpochResult(**epoch) for epoch in start.epochs]
    completed_updates = start.optimizer_steps
    first_epoch = start.epoch + 1 if start.epoch_finished else start.epoch
    model.train()
    with make_progress(accelerator, unit="steps", with_status=True) as progress:
        task = progress.add_task("Training", total=total_updates, completed=completed_updates, status="")
        for epoch in range(first_epoch, num_epochs + 1):
            resumed_epoch = epoch == start.epoch and not start.epoch_finished
            skipped_batches = start.batches_in_epoch if resumed_epoch else 0
            epoch_loader = _epoch_loader(accelerator, train_loader, sampler, epoch, skipped_batches)

            loss_sum = torch.zeros((), device=accelerator.device)
            loss_count = torch.zeros((), device=accelerator.device)
            # The losses are gathered from every process at each batch, so every process has the sums over all of
            # them. The sums saved at a checkpoint are therefore added back on every process.
            if resumed_epoch:
                loss_sum += start.epoch_loss_sum
                loss_count += start.epoch_loss_count
            batches_in_epoch = skipped_batches
            last_update_of_epoch = min(epoch * updates_per_epoch, total_updates)
            for batch in epoch_loader:
                soft_labels = batch.pop("soft_labels")
                with accelerator.accumulate(model):
                    logits = model(**batch).logits
                    example_losses = distillation_loss(logits, soft_labels, multi_label, reduction="none")
                    loss = example_losses.mean()
                    accelerator.backward(loss)
                    # Clip only when the gradients of the whole accumulation cycle have been summed and synced.
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    # The learning rate of this step, read before the scheduler moves on to the next one.
                    learning_rate = scheduler.get_last_lr()[0]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()

                # Gathered like the agreement, so that the examples repeated to even out the last batch do not count.
                example_losses = accelerator.gather_for_metrics(example_losses.detach())
                loss_sum += example_losses.sum()
                loss_count += len(example_losses)
                batches_in_epoch += 1
                if accelerator.sync_gradients:
                    completed_updates += 1
                    progress.update(task, advance=1)
                    # Reading the loss waits for the accelerator, so the status line is refreshed only now and then.
                    if completed_updates % STATUS_EVERY_UPDATES == 0 or completed_updates == total_updates:
                        status = f"loss {loss.item():.4f}  lr {learning_rate:.2e}"
                        progress.update(task, status=status)
                    # A checkpoint due at the epoch's last step is saved after the epoch's agreement, further down.
                    if completed_updates < last_update_of_epoch and _checkpoint_due(config, completed_updates, False):
                        position = TrainingProgress(
                            optimizer_steps=completed_updates,
                            epoch=epoch,
                            batches_in_epoch=batches_in_epoch,
                            epoch_finished=False,
                            epoch_loss_sum=loss_sum.item(),
                            epoch_loss_count=loss_count.item(),
                            epochs=[asdict(result) for result in results],
                        )
                        save_checkpoint(accelerator, output_dir, position, setup, config.save_total_limit)
                    if completed_updates >= total_updates:
                        break

            train_loss = (loss_sum / loss_count).item()
            # Every process has the same gathered loss, so all of them stop together.
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"Training diverged: the loss of epoch {epoch} is {train_loss}. Lower --learning_rate (now "
                    f"{config.learning_rate:g}), or run without mixed precision. The teacher's predictions are saved."
                )
            agreement = None
            if validation_loader is not None:
                agreement = measure_agreement(accelerator, model, validation_loader, multi_label)
            results.append(
                EpochResult(epoch=epoch, train_loss=train_loss, optimizer_steps=completed_updates, agreement=agreement)
            )
            agreement_text = "not measured (no held-out texts)" if agreement is None else f"{agreement:.2%}"
            logger.info(f"epoch {epoch}: train loss {train_loss:.4f}, agreement with the teacher {agreement_text}")
            if _checkpoint_due(config, completed_updates, True):
                position = TrainingProgress(
                    optimizer_steps=completed_updates,
                    epoch=epoch,
                    batches_in_epoch=batches_in_epoch,
                    epoch_finished=True,
                    epochs=[asdict(result) for result in results],
                )
                save_checkpoint(accelerator, output_dir, position, setup, config.save_total_limit)

    if config.save_total_limit == 0:
        _delete_all_checkpoints(accelerator, output_dir)
    return model, results
