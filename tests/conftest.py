"""Tiny teachers, students and tokenizers built locally from configs, so that no test needs the Hub."""

import os

# huggingface_hub reads this when it is first imported, so it is set before transformers is imported below.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tiny models run fastest on one thread. With several, each operator's threads wait for one another, which on a
# busy machine made a forward pass of the tiny BERT 40 times slower. Set before torch loads; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "this example is about the a an of to in and text news sports business science tech world politics "
    "game team won match market stock price company shares research space computer phone election minister "
    "government war peace football goal season player league bank rates profit quarter nasa planet software "
    "internet chip health weather cats dogs music film"
).split()
TOKENIZER_MAX_LENGTH = 64

NLI_LABELS = {
    "bert": ["entailment", "neutral", "contradiction"],
    # roberta-large-mnli's order and capitals.
    "roberta": ["CONTRADICTION", "NEUTRAL", "ENTAILMENT"],
}


def build_tokenizer(model_max_length: int | None = TOKENIZER_MAX_LENGTH, token_type_ids: bool = True):
    """A lowercasing WordPiece tokenizer whose vocabulary spells any ASCII word, with BERT's special tokens."""
    characters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(".,!?'-/")
    vocab = SPECIAL_TOKENS + WORDS + characters + [f"##{c}" for c in characters]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    kwargs = {"model_max_length": model_max_length} if model_max_length is not None else {}
    if not token_type_ids:
        kwargs["model_input_names"] = ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        **kwargs,
    )


def _tiny_dims() -> dict:
    return {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def save_teacher(
    path: Path,
    labels: list[str],
    architecture: str = "bert",
    seed: int = 0,
    tokenizer_max_length: int | None = TOKENIZER_MAX_LENGTH,
) -> Path:
    """Save a randomly initialized NLI cross-encoder with the given label names, and its tokenizer."""
    tokenizer = build_tokenizer(tokenizer_max_length, token_type_ids=architecture == "bert")
    label_kwargs = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: index for index, name in enumerate(labels)},
    }
    torch.manual_seed(seed)
    if architecture == "bert":
        config = BertConfig(
            vocab_size=len(tokenizer), max_position_embeddings=TOKENIZER_MAX_LENGTH, **_tiny_dims(), **label_kwargs
        )
        model = BertForSequenceClassification(config)
    else:
        # RoBERTa's positions start after the padding index, hence the extra pad_token_id + 1 positions.
        config = RobertaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=TOKENIZER_MAX_LENGTH + 1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            type_vocab_size=1,
            **_tiny_dims(),
            **label_kwargs,
        )
        model = RobertaForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_student(path: Path, seed: int = 0) -> Path:
    """Save a randomly initialized DistilBERT encoder without a classification head, and its tokenizer."""
    tokenizer = build_tokenizer(token_type_ids=False)
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    DistilBertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bert_teacher(tmp_path_factory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("bert_teacher"), NLI_LABELS["bert"], "bert")


@pytest.fixture(scope="session")
def roberta_teacher(tmp_path_factory) -> Path:
    return save_teacher(tmp_path_factory.mktemp("roberta_teacher"), NLI_LABELS["roberta"], "roberta")


@pytest.fixture(scope="session")
def student(tmp_path_factory) -> Path:
    return save_student(tmp_path_factory.mktemp("student"))


@pytest.fixture(autouse=True)
def reset_accelerate_state():
    """Each run builds its own Accelerator, and Accelerate keeps one global state per process."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


NEWS_TEXTS = [
    "The team won the football match in the last minute of the season.",
    "Stock prices rose after the company reported a record quarter profit.",
    "NASA research on a distant planet uses new computer software.",
    "The minister said the government will hold an election.",
    "The bank raised rates and shares of the company fell.",
    "The player scored a goal and his team won the league.",
    "A new chip makes the phone faster on the internet.",
    "Peace talks between the government and rebels ended the war.",
]
CLASS_NAMES = ["sports", "business", "science", "politics"]


def cli_args(data_file, class_file, output_dir, teacher, student, *extra: str) -> list[str]:
    """Return the command's arguments for one run, followed by the flags in `extra`."""
    return [
        "--data_file",
        str(data_file),
        "--class_names_file",
        str(class_file),
        "--output_dir",
        str(output_dir),
        "--teacher_name_or_path",
        str(teacher),
        "--student_name_or_path",
        str(student),
        *extra,
    ]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def news_files(tmp_path) -> tuple[Path, Path]:
    """A data file of eight news sentences and a class names file of four topics."""
    return write_lines(tmp_path / "texts.txt", NEWS_TEXTS), write_lines(tmp_path / "classes.txt", CLASS_NAMES)


def fitted_targets(num_texts: int, num_classes: int, multi_label: bool) -> torch.Tensor:
    """Class targets for `save_classifier`: text i gets class i % K, and in multi-label mode odd texts also i + 1."""
    if not multi_label:
        return torch.arange(num_texts) % num_classes
    targets = torch.zeros(num_texts, num_classes)
    for i in range(num_texts):
        targets[i, i % num_classes] = 1.0
        if i % 2:
            targets[i, (i + 1) % num_classes] = 1.0
    return targets


def save_classifier(
    path: Path, class_names: list[str], multi_label: bool = False, texts: list[str] = NEWS_TEXTS, steps: int = 30
) -> Path:
    """Save a DistilBERT classifier briefly fitted to `fitted_targets` on `texts`, so that its predictions vary.

    A classifier with a random head scores every text almost alike, which would hide ordering mistakes.
    """
    from zsdistill.models import load_student

    tokenizer = build_tokenizer(token_type_ids=False)
    model = load_student(str(save_student(path / "encoder")), class_names, multi_label)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    targets = fitted_targets(len(texts), len(class_names), multi_label)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def single_label_classifier(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("single_label_classifier"), CLASS_NAMES)


@pytest.fixture(scope="session")
def multi_label_classifier(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("multi_label_classifier"), CLASS_NAMES, multi_label=True)
