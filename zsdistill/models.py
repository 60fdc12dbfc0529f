"""Load the teacher and student checkpoints, by Hub name or local path, and read their input limits."""

import logging
import os
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from zsdistill.data import InputError

logger = logging.getLogger(__name__)

# Model types whose learned position embeddings start after the padding index, so that
# `max_position_embeddings` is larger than the longest input by `pad_token_id + 1`.
_POSITION_OFFSET_MODEL_TYPES = {
    "camembert",
    "data2vec-text",
    "ibert",
    "longformer",
    "roberta",
    "roberta-prelayernorm",
    "xlm-roberta",
    "xlm-roberta-xl",
    "xmod",
}
# A local checkpoint needs one of these for its tokenizer's vocabulary. Without them, transformers 5.25 builds a
# tokenizer of special tokens alone, which maps every word to the unknown token.
_VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Tokenizers without a known limit report `model_max_length` as a huge sentinel (int(1e30) in transformers).
_NO_TOKENIZER_LIMIT = 1_000_000


def load_config_and_tokenizer(name_or_path: str, role: str) -> tuple[PretrainedConfig, PreTrainedTokenizerBase]:
    """Load a checkpoint's config and tokenizer, which is quick, so that a wrong name fails before any real work."""
    # A Hub id has at most one slash and no leading dot or tilde, so anything else can only be a local path.
    looks_local = (
        Path(name_or_path).is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    )
    if looks_local and not Path(name_or_path).expanduser().exists():
        raise InputError(f"The {role} {name_or_path!r} was not found: no such local directory. Check the path.")
    if Path(name_or_path).expanduser().is_dir():
        _check_local_files(Path(name_or_path).expanduser(), role)
    try:
        config = AutoConfig.from_pretrained(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise InputError(
            f"Could not load the {role} {name_or_path!r}: {error}\n"
            f"Give a Hub model name, or the path of a directory written by save_pretrained(). "
            f"On a machine without network access, give a local path."
        ) from None
    if len(tokenizer) > getattr(config, "vocab_size", len(tokenizer)):
        raise InputError(
            f"The tokenizer of the {role} {name_or_path!r} has {len(tokenizer):,} tokens, more than the "
            f"{config.vocab_size:,} rows of the model's embeddings, so some token ids would be out of range. Give a "
            f"directory whose tokenizer and weights belong together."
        )
    if tokenizer.pad_token is None:
        raise InputError(
            f"The tokenizer of the {role} {name_or_path!r} has no padding token, which batching needs. "
            f"Save a copy with `tokenizer.pad_token = tokenizer.eos_token` and give its path."
        )
    return config, tokenizer


def _check_local_files(path: Path, role: str) -> None:
    """Raise InputError if a local checkpoint lacks its config, vocabulary or weights, or its weights are damaged."""
    if not (path / "config.json").is_file():
        raise InputError(
            f"The {role} directory {path} has no config.json, so it is not a model saved with save_pretrained(). "
            f"Give the directory that model.save_pretrained() wrote, or a Hub model name."
        )
    if not any((path / name).is_file() for name in _VOCABULARY_FILES):
        raise InputError(
            f"The {role} directory {path} has no tokenizer vocabulary (none of {', '.join(_VOCABULARY_FILES)}), so "
            f"every word would become the unknown token. Save the tokenizer there with tokenizer.save_pretrained()."
        )
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        raise InputError(
            f"The {role} directory {path} has no weights (none of {', '.join(_WEIGHT_FILES)}). Save the model there "
            f"with model.save_pretrained()."
        )
    weights = path / "model.safetensors"
    if weights.is_file():
        try:
            # Reads the header alone, which a truncated or overwritten file fails to parse.
            with safe_open(str(weights), framework="pt"):
                pass
        except (OSError, SafetensorError) as error:
            raise InputError(f"The {role} weights {weights} cannot be read: {error}. Save the model again.") from None


def _is_first_process() -> bool:
    # These checks can run before the Accelerator exists, so the rank comes from the variable that torchrun sets in
    # every process it starts. Only rank 0 logs, once for all processes.
    return os.environ.get("RANK", "0") == "0"


def max_input_length(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig, max_length: int | None) -> int:
    """Return the token limit of one input: the smallest of `max_length`, the tokenizer's and the positions' limits."""
    limits = []
    if max_length is not None:
        limits.append(max_length)
    if tokenizer.model_max_length < _NO_TOKENIZER_LIMIT:
        limits.append(tokenizer.model_max_length)
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None:
        # NOTE: only the model types listed above are known to offset positions. Another type that does gets a
        # limit too large by pad_token_id + 1, so its longest inputs fail in the position embedding.
        if config.model_type in _POSITION_OFFSET_MODEL_TYPES:
            positions -= (config.pad_token_id or 0) + 1
        limits.append(positions)
    if not limits:
        raise InputError(
            f"The input limit of {config.name_or_path or 'the model'} is unknown: neither its tokenizer nor its "
            f"config sets one. Pass --max_length."
        )
    limit = min(limits)
    if max_length is not None and limit < max_length and _is_first_process():
        logger.warning(
            f"--max_length {max_length} is above the limit of {config.name_or_path or 'the model'}, so its inputs "
            f"are truncated at {limit} tokens"
        )
    return limit


def cpu_has(check_name: str) -> bool:
    """Return the result of the CPU feature check `check_name` of `torch.cpu`, or False where torch lacks it.

    NOTE: these checks (`_is_avx512_bf16_supported`, `_is_amx_tile_supported`, `_is_amx_fp16_supported`) are
    private torch functions, present in torch 2.13, and a later release may drop them.
    """
    check = getattr(torch.cpu, check_name, None)
    return check is not None and bool(check())


def resolve_teacher_dtype(name: str, device: torch.device) -> torch.dtype:
    """Return the dtype for the teacher's weights: the one named, or for "auto" bfloat16 where the device supports
    it natively (GPUs with bfloat16 arithmetic, CPUs with AVX-512 BF16 or AMX) and float32 elsewhere.
    """
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        # Without torch's checks, the CPU gets float32.
        native = cpu_has("_is_avx512_bf16_supported") or cpu_has("_is_amx_tile_supported")
        return torch.bfloat16 if native else torch.float32
    return torch.float32


def warn_if_float16_is_slow(dtype: torch.dtype, device: torch.device) -> None:
    """Log a warning when the teacher would run in float16 on a CPU without float16 matrix units (AMX-FP16)."""
    # Without torch's check, the warning is always given.
    if (
        dtype == torch.float16
        and device.type == "cpu"
        and not cpu_has("_is_amx_fp16_supported")
        and _is_first_process()
    ):
        logger.warning(
            "--teacher_dtype float16: this CPU has no AMX-FP16, and without it float16 can run several times slower "
            "than float32 (it did on a 2-core AMD EPYC). Use --teacher_dtype bfloat16 or auto."
        )


def load_teacher(name_or_path: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load the NLI teacher's weights in `dtype`, rejecting a checkpoint whose classification head would be random."""
    model, loading_info = AutoModelForSequenceClassification.from_pretrained(
        name_or_path, dtype=dtype, output_loading_info=True
    )
    if loading_info["missing_keys"]:
        missing = ", ".join(sorted(loading_info["missing_keys"])[:5])
        raise InputError(
            f"The teacher {name_or_path!r} lacks trained weights for {missing}, so transformers initialized them "
            f"at random and its scores would be noise. Give a checkpoint fine-tuned for NLI, such as "
            f"roberta-large-mnli."
        )
    return model


def load_student(name_or_path: str, class_names: list[str], multi_label: bool) -> PreTrainedModel:
    """Load the student with a freshly initialized K-way head named after the classes.

    `problem_type` makes `pipeline("text-classification")` apply a sigmoid per class for a multi-label student
    and a softmax over the classes otherwise.
    """
    config = AutoConfig.from_pretrained(
        name_or_path,
        num_labels=len(class_names),
        id2label=dict(enumerate(class_names)),
        label2id={name: index for index, name in enumerate(class_names)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    # The head is new by design, so transformers' report of its missing weights is silenced. A student that
    # already has a classification head of another size gets a new one too.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, ignore_mismatched_sizes=True
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    return model
