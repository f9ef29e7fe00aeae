"""The Compare page: runs (or seed groups) side by side through `hftl.compare.compare_runs`, what `hftl compare`
prints: the metric table, the config diff, and the training curves overlaid."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from hftl.errors import HftlError
from hftl.ui.context import message
from hftl.ui.curves import curve_frames


def build(context, pages: dict) -> None:
    gr.Markdown("Pick two or more runs; seed groups count as one (mean ± std).")
    with gr.Row():
        picked = gr.Dropdown(choices=[], multiselect=True, allow_custom_value=True, label="Runs", scale=4,
                             elem_id="compare-runs")
        go = gr.Button("Compare", variant="primary", scale=0, elem_id="compare-go")
    note = gr.Markdown(elem_id="compare-note")
    table = gr.Dataframe(value=[], interactive=False, wrap=True, label="Metrics", elem_id="compare-table")
    diff = gr.Dataframe(value=[], interactive=False, wrap=True, label="Config diff (only the keys that differ)",
                        elem_id="compare-diff")
    with gr.Row():
        losses = gr.LinePlot(x="step", y="value", color="series", title="Loss", elem_id="compare-loss")
        metrics = gr.LinePlot(x="step", y="value", color="series", title="Validation", elem_id="compare-metrics")
    with gr.Row():
        folder = gr.Textbox(label="Write the comparison (Markdown, CSV, figures) to a folder under the runs folder",
                            scale=4, elem_id="compare-folder")
        write = gr.Button("Write", scale=0, elem_id="compare-write")
    written = gr.Markdown(elem_id="compare-written")

    def comparison(ids):
        from hftl.compare import compare_runs

        if not ids or len(ids) < 2:
            raise HftlError("pick at least two runs.")
        return compare_runs([context.run_folder(i) for i in ids])

    def show(ids):
        empty = (None, None, None, None)
        try:
            result = comparison(ids)
        except (HftlError, OSError, ValueError, KeyError) as err:
            return (f"**Cannot compare:** {message(err)}", *empty)
        columns = result.columns()
        rows = pd.DataFrame([[result.cell(row, c) for c in columns] for row in result.rows], columns=columns)
        names = [row["run"] for row in result.rows]
        differing = pd.DataFrame([[key, *("" if v is None else str(v) for v in values)]
                                  for key, values in result.config_diff.items()], columns=["config key", *names])
        frames = [curve_frames(history, f"{name}: ") for name, history in zip(names, result.curves)]
        loss_frame = pd.concat([f[0] for f in frames], ignore_index=True)
        metric_frame = pd.concat([f[1] for f in frames], ignore_index=True)
        return (f"{len(result.rows)} runs, {len(result.config_diff)} differing config keys.", rows, differing,
                loss_frame, metric_frame)

    def save(ids, target):
        try:
            out = context.paths.resolve(target)
            files = comparison(ids).write(out)
        except (HftlError, OSError, ValueError, KeyError) as err:
            return f"**Failed:** {message(err)}"
        return "Written: " + ", ".join(f"`{context.paths.relative(p)}`" for p in files.values())

    picked.focus(lambda: gr.update(choices=context.run_ids()), None, picked)
    go.click(show, picked, [note, table, diff, losses, metrics])
    write.click(save, [picked, folder], written)
    pages["compare.runs"] = picked
