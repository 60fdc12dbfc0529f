"""The student's training loop on the teacher's soft labels, with agreement measured on held-out texts."""

import math
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

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


@dataclass
class EpochResult:
    """The mean training loss of an epoch, the optimizer steps taken so far, and the agreement after the epoch."""

    epoch: int
    train_loss: float
    optimizer_steps: int
    agreement: float | None


def split_validation(num_examples: int, validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Return shuffled training indices and sorted held-out indices, holding out `validation_split` of the texts.

    Nothing is held out when the share rounds down to zero examples, and at least one example is always trained on.
    """
    num_validation = min(int(num_examples * validation_split), num_examples - 1)
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[num_validation:]), sorted(order[:num_validation])


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


def train_student(
    accelerator: Accelerator,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_set: SoftLabelDataset,
    validation_set: SoftLabelDataset | None,
    config: TrainingConfig,
    multi_label: bool,
) -> tuple[PreTrainedModel, list[EpochResult]]:
    """Train the student on the soft labels and return the prepared model with one result per epoch."""
    collator = _SoftLabelCollator(tokenizer)
    train_loader = DataLoader(
        train_set,
        batch_size=config.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(config.seed),
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
            validation_set, batch_size=config.per_device_eval_batch_size, collate_fn=collator
        )
        model, optimizer, train_loader, validation_loader, scheduler = accelerator.prepare(
            model, optimizer, train_loader, validation_loader, scheduler
        )
    else:
        validation_loader = None
        model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    results = []
    completed_updates = 0
    model.train()
    with make_progress(accelerator, unit="steps", with_status=True) as progress:
        task = progress.add_task("Training", total=total_updates, status="")
        for epoch in range(1, num_epochs + 1):
            loss_sum = torch.zeros((), device=accelerator.device)
            loss_count = 0
            for batch in train_loader:
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
                if accelerator.sync_gradients:
                    completed_updates += 1
                    progress.update(task, advance=1)
                    # Reading the loss waits for the accelerator, so the status line is refreshed only now and then.
                    if completed_updates % STATUS_EVERY_UPDATES == 0 or completed_updates == total_updates:
                        status = f"loss {loss.item():.4f}  lr {learning_rate:.2e}"
                        progress.update(task, status=status)
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
    return model, results
