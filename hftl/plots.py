"""Figures of a run (confusion matrix, training curves...), drawn with matplotlib's Agg canvas: no pyplot, no
global backend change, safe in any process."""

from __future__ import annotations

from pathlib import Path


def _figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas: no pyplot, no global backend change."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> Path:
    """Rows are true classes, columns predicted ones; counts written in the cells up to 30 classes."""
    size = max(4.0, 0.45 * len(labels) + 2)
    figure = _figure(size + 1, size)
    axes = figure.add_subplot()
    shown = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axes)
    axes.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true", title=title)
    axes.set_xticklabels(labels, rotation=45, ha="right")
    axes.set_yticklabels(labels)
    if len(labels) <= 30:
        peak = max((max(row) for row in matrix), default=0)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axes.text(j, i, str(count), ha="center", va="center", fontsize=8,
                          color="white" if count > peak / 2 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_training_curves(log_history: list[dict], path: Path, metrics: tuple[str, ...] = ()) -> Path | None:
    """Training and validation loss by step, and the validation `metrics` logged; None if nothing was logged."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [e for e in log_history if "eval_loss" in e and "step" in e]
    scores = [f"eval_{k}" for k in metrics if any(f"eval_{k}" in e for e in evals)]
    if not train and not evals:
        return None
    figure = _figure(11 if scores else 6, 4)
    axes = figure.add_subplot(1, 2 if scores else 1, 1)
    if train:
        axes.plot(*zip(*train), label="training loss")
    if evals:
        axes.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], marker="o", label="validation loss")
    axes.set(xlabel="step", ylabel="loss", title="Loss")
    axes.legend()
    axes.grid(alpha=0.3)
    if scores:
        right = figure.add_subplot(1, 2, 2)
        for key in scores:
            points = [(e["step"], e[key]) for e in evals if key in e]
            right.plot(*zip(*points), marker="o", label=key.removeprefix("eval_"))
        right.set(xlabel="step", title="Validation metrics")
        right.legend()
        right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def confusion_matrix_figures(metrics: dict, labels: list[str], folder: Path, main_name: str) -> str | None:
    """Draw `confusion_matrix_<split>.png` for each evaluated split that has a matrix, and the test (else
    validation) one again as `main_name`, which the card shows; returns `main_name`, or None if none was drawn."""
    import shutil

    drawn = []
    for split in ("validation", "test"):
        report = metrics.get(split) or {}
        if report.get("confusion_matrix") and labels:
            path = Path(folder) / f"confusion_matrix_{split}.png"
            plot_confusion_matrix(report["confusion_matrix"], labels, path, f"{split}: accuracy {report.get('accuracy', 0):.3f}")
            drawn.append(path)
    if not drawn:
        return None
    shutil.copyfile(drawn[-1], Path(folder) / main_name)
    return main_name


def plot_reliability_diagram(bins_before: list[dict], bins_after: list[dict] | None, path: Path, title: str) -> Path:
    """Accuracy against mean confidence per bin (from `hftl.calibration.reliability_bins`), before and after
    calibration, with the diagonal of perfect calibration and the share of examples per bin underneath."""
    figure = _figure(5.5, 6)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    series = [("before", bins_before, "tab:red")] + ([("after", bins_after, "tab:blue")] if bins_after else [])
    width = 1 / max(len(bins_before), 1)
    for offset, (name, bins, color) in enumerate(series):
        filled = [b for b in bins if b["count"]]
        top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker="o", color=color,
                 label=name)
        total = sum(b["count"] for b in bins) or 1
        # Side by side bars: each series takes half of its bin.
        shift = (offset - (len(series) - 1) / 2) * width / len(series)
        bottom.bar([(b["lower"] + b["upper"]) / 2 + shift for b in bins], [b["count"] / total for b in bins],
                   width=width / len(series), color=color, alpha=0.6)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set(xlabel="confidence", ylabel="share")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_regression_scatter(predictions, references, path: Path, title: str) -> Path:
    """Predicted against true values, with the identity line; transparent points so dense regions show."""
    predictions, references = [float(v) for v in predictions], [float(v) for v in references]
    figure = _figure(5, 5)
    axes = figure.add_subplot()
    axes.scatter(references, predictions, s=10, alpha=min(1.0, max(0.05, 200 / max(len(references), 1))))
    low, high = min(references + predictions), max(references + predictions)
    axes.plot([low, high], [low, high], linestyle="--", color="grey", label="prediction = truth")
    axes.set(xlabel="true value", ylabel="predicted value", title=title)
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
