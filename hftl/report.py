"""Human-readable summaries of metrics."""

from __future__ import annotations


def format_split(name: str, metrics: dict, columns: tuple[str, ...]) -> str:
    """One split's `columns` (the task's summary metrics) on a line, then the per-class table if there is one."""
    lines = [f"{name}: " + "  ".join(f"{k} {metrics[k]:.4f}" for k in columns if k in metrics)]
    per_class = metrics.get("per_class") or {}
    if per_class:
        width = max(len(str(label)) for label in per_class)
        lines.append(f"  {'class':<{width}}  precision  recall  f1      support")
        for label, row in per_class.items():  # a class absent from the split has no scores
            cells = [f"{row[k]:.4f}" if row[k] is not None else "  -   " for k in ("precision", "recall", "f1")]
            lines.append(f"  {label:<{width}}  {cells[0]}     {cells[1]}  {cells[2]}  {row['support']}")
    if metrics.get("absent_classes"):
        lines.append(f"  absent from this split: {', '.join(metrics['absent_classes'])} (left out of the macro averages)")
    baseline = metrics.get("baseline")
    if baseline:
        lines.append(f"  baseline, {baseline['name']}: " + "  ".join(
            f"{k} {baseline[k]:.4f}" for k in columns if isinstance(baseline.get(k), (int, float))))
    if metrics.get("positive_label"):
        lines.append(f"  positive class: {metrics['positive_label']}")
    in_sample = metrics.get("with_fitted_decisions")
    if in_sample and any(k in in_sample for k in columns):
        lines.append("  with the decisions fitted on it (in-sample): " + "  ".join(
            f"{k} {in_sample[k]:.4f}" for k in columns if k in in_sample))
    lines += [f"  WARNING {warning}" for warning in metrics.get("warnings", [])]
    return "\n".join(lines)


def print_summary(result) -> None:
    """The end-of-run table: metrics per split, parameters, time, and where the run is."""
    train = result.metrics.get("train", {})
    columns = result.recipe.summary_metrics
    print()
    print(f"run saved in {result.run_dir}")
    if "trainable_params" in train:
        print(f"trainable parameters: {train['trainable_params']:,} of {train['total_params']:,} "
              f"({train['trainable_percent']:.2f}%)  train time: {train.get('train_runtime', 0):.1f} s")
    for split, metrics in result.metrics.get("before_training", {}).items():
        print(format_split(f"{split} before training", metrics, columns))
    for split in ("validation", "test"):
        if split in result.metrics:
            print(format_split(split, result.metrics[split], columns))
