"""Console output: the plan before a stage, progress bars during it, and the summary after it."""

import sys

from accelerate import Accelerator
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

# Written to a file or a pipe, the output would otherwise wrap at rich's default of 80 columns.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


class _RateColumn(ProgressColumn):
    """Items per second, in the unit of the task."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def make_progress(accelerator: Accelerator, unit: str, with_status: bool = False) -> Progress:
    """Return a rich progress bar that only the main process draws.

    With `with_status`, a task's `status` field (such as the loss and learning rate) is shown after the bar.
    """
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=24),
        TextColumn(f"{{task.completed:,.0f}}/{{task.total:,.0f}} {unit}"),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if with_status:
        columns.append(TextColumn("{task.fields[status]}"))
    return Progress(*columns, console=console, disable=not accelerator.is_main_process)


def print_table(accelerator: Accelerator, title: str, rows: list[tuple[str, str]]) -> None:
    """Print a two-column table of facts, such as a stage's plan or summary, on the main process."""
    if not accelerator.is_main_process:
        return
    table = Table(title=title, show_header=False, title_justify="left", title_style="bold")
    table.add_column(style="cyan")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
