"""The model card (README.md) written next to a distilled student."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ModelCardFacts:
    """Facts about how a student was made, recorded in its model card."""

    teacher: str
    student_base: str
    hypothesis_template: str
    multi_label: bool
    temperature: float
    class_names: list[str]
    num_examples: int
    num_validation: int
    agreement: float | None
    command: str


def _table_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    # A code span that contains a backtick needs a longer fence, padded with spaces.
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render_model_card(facts: ModelCardFacts) -> str:
    """Return the model card as Markdown with the Hub's YAML metadata block."""
    mode = "multi-label (a sigmoid per class)" if facts.multi_label else "single-label (a softmax over the classes)"
    if facts.agreement is None:
        agreement = "not measured: no texts were held out (raise --validation_split to measure it)"
    else:
        agreement = f"{facts.agreement:.2%} on {facts.num_validation} held-out texts"
    class_lines = "\n".join(f"| {index} | {_table_cell(name)} |" for index, name in enumerate(facts.class_names))
    # The Hub reads base_model as a model id, so a local path is left out of the metadata.
    base_model = "" if Path(facts.student_base).exists() else f"base_model: {facts.student_base}\n"
    return f"""---
library_name: transformers
pipeline_tag: text-classification
{base_model}tags:
- zsdistill
- distillation
- zero-shot-classification
---

# Student distilled from a zero-shot NLI teacher

This text classifier was trained by zsdistill on soft labels from the NLI model `{facts.teacher}`, used as a
zero-shot classifier, on {facts.num_examples} unlabeled texts. It needs one forward pass per text, where the
teacher needed one per (text, class) pair. No labeled data was used: its predictions follow the teacher's, mistakes
included, so measure its accuracy on labeled data before relying on it.

## Use

```python
from transformers import pipeline

classifier = pipeline("text-classification", model="PATH_TO_THIS_DIRECTORY", top_k=None)
classifier("Text to classify")
```

## How it was made

| | |
|---|---|
| teacher | `{facts.teacher}` |
| student base | `{facts.student_base}` |
| hypothesis template | {_table_cell(_code(facts.hypothesis_template))} |
| mode | {mode} |
| temperature | {facts.temperature} |
| unlabeled texts | {facts.num_examples} |
| agreement with the teacher | {agreement} |

Classes:

| id | name |
|---|---|
{class_lines}

`teacher_predictions.safetensors` holds the teacher's logits and soft labels: row i belongs to the i-th non-blank
line of the data file.

Command:

```
{facts.command}
```
"""


def write_model_card(output_dir: str | Path, facts: ModelCardFacts) -> None:
    """Write README.md into `output_dir`."""
    (Path(output_dir) / "README.md").write_text(render_model_card(facts), encoding="utf-8")
