"""The speed benchmark's Markdown tables and plot, rendered from its JSON report."""

from pathlib import Path


def format_flop_rate(flop_rate: float) -> str:
    if flop_rate >= 1e12:
        return f"{flop_rate / 1e12:,.1f} TFLOP/s"
    return f"{flop_rate / 1e9:,.1f} GFLOP/s"


def format_bytes(size: int | None) -> str:
    if size is None:
        return "n/a"
    if size >= 2**30:
        return f"{size / 2**30:.2f} GiB"
    return f"{size / 2**20:,.0f} MiB"


METHOD_TITLES = {"loop": "zsdistill's loops", "pipeline": "transformers' pipelines"}


def _table_row(row: dict, method: str) -> str:
    """Render one K of one method as a Markdown table row."""
    teacher, student = row["teacher"][method], row["student"][method]
    cells = [
        str(row["num_classes"]),
        f"{row['num_pairs']:,}",
        f"{teacher['examples_per_second']:,.2f}",
        f"{teacher['sequences_per_second']:,.1f}",
        f"{student['examples_per_second']:,.1f}",
        f"{row['speedup'][method]:,.1f}×",
        f"{teacher['seconds_per_1000_examples']:,.1f}",
        f"{student['seconds_per_1000_examples']:,.2f}",
        f"{format_flop_rate(teacher['model_flop_rate'])} ({teacher['share_of_matmul_peak']:.0%})",
        f"{format_flop_rate(student['model_flop_rate'])} ({student['share_of_matmul_peak']:.0%})",
        format_bytes(teacher["memory_bytes"]),
        format_bytes(student["memory_bytes"]),
    ]
    return "| " + " | ".join(cells) + " |"


def render_markdown(report: dict) -> str:
    """Render the report as Markdown: the setup, then one table per model pair and method."""
    machine, settings, matmul = report["machine"], report["settings"], report["matmul"]
    lines = [
        f"# Speed: teacher N×K against student N ({machine['device']})",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {machine['cpu']}, {machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads"
        + (f", {machine['gpu']}" if "gpu" in machine else ""),
        f"- load average (1, 5, 15 min) at start: {machine['load_average']}, at end: {report['load_average_end']}",
        f"- mixed precision: {settings['mixed_precision']}; batch sizes: teacher {settings['teacher_batch_size']} "
        f"pairs, student {settings['student_batch_size']} texts; median of {settings['repeats']} repeats",
        f"- texts: {settings['texts']}; hypothesis template: `{settings['hypothesis_template']}`",
        f"- matmul peak: {format_flop_rate(matmul['flop_rate'])} ({matmul['dtype']}, {matmul['size']}×"
        f"{matmul['size']}, the best of {len(matmul['seconds'])} multiplies, timed {len(matmul['all_flop_rates'])} "
        "times in the run)",
    ]
    for pair in report["pairs"]:
        teacher, student = pair["teacher"], pair["student"]
        lines += [
            "",
            f"## {pair['name']}: {teacher['name']} → {student['name']}",
            "",
            f"Weights: {pair['weights']}. Tokenizer: {pair['tokenizer']}. N = {pair['num_examples']} texts "
            f"({pair['num_examples_source']}). Teacher {teacher['parameters'] / 1e6:,.1f}M parameters, student "
            f"{student['parameters'] / 1e6:,.1f}M.",
        ]
        for method, title in METHOD_TITLES.items():
            lines += [
                "",
                f"### {title}",
                "",
                "| K | pairs | teacher examples/s | teacher pairs/s | student examples/s | student speedup "
                "| teacher s per 1,000 examples | student s per 1,000 examples | teacher FLOP rate (share of peak) "
                "| student FLOP rate (share of peak) | teacher memory | student memory |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            lines += [_table_row(row, method) for row in pair["results"]]
    memory_kind = next(
        (row["teacher"]["loop"]["memory_kind"] for pair in report["pairs"] for row in pair["results"]), None
    )
    lines += [
        "",
        "FLOP rates count model FLOPs on unpadded tokens (2 × non-embedding parameters × tokens, plus attention). "
        f"Memory is a model's weights plus the largest rise in the {memory_kind or 'unmeasured memory'} during one of "
        "its runs at that K. Teacher and student runs alternate, so both models are loaded.",
        "",
    ]
    return "\n".join(lines)


def plot_report(report: dict, path: Path) -> None:
    """Plot seconds per 1,000 examples against K for each pair's teacher and student, both methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, pair in enumerate(report["pairs"]):
        ks = [row["num_classes"] for row in pair["results"]]
        for role, marker in (("teacher", "o"), ("student", "s")):
            for method, style in (("loop", "-"), ("pipeline", "--")):
                seconds = [row[role][method]["seconds_per_1000_examples"] for row in pair["results"]]
                label = f"{pair['name']} {role} ({pair[role]['name']}), {method}"
                axes.plot(ks, seconds, style, marker=marker, color=colors[index % len(colors)], label=label)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(report["settings"]["num_classes"], [str(k) for k in report["settings"]["num_classes"]])
    axes.set_xlabel("number of classes K")
    axes.set_ylabel("seconds per 1,000 examples")
    axes.set_title(f"Teacher N×K against student N on {report['machine']['device']}", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=6, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
