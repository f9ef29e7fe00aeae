"""The Runs page: every run folder under the root in one table, with search, filters and sort."""

from __future__ import annotations

import gradio as gr

from hftl.ui.runs_index import CORRUPT, FAILED, FINISHED, INTERRUPTED, RUNNING, filter_runs

COLUMNS = ["run", "task", "checkpoint", "strategy", "status", "detail", "metrics", "date"]
SORTS = [("newest first", "date"), ("main metric", "metric"), ("name", "name"), ("task", "task"), ("status", "status")]


def table(rows) -> list[list]:
    out = []
    for r in rows:
        metrics = "  ".join(f"{name} {value}" for name, value in r.metrics.items())
        if metrics and r.split:
            metrics = f"{r.split}: {metrics}"
        date = r.date.replace("T", " ")[:19]
        out.append([r.id, r.task, _short(r.checkpoint), r.strategy, r.status, r.detail, metrics, date])
    return out


def _short(checkpoint: str) -> str:
    """A local checkpoint path by its last two parts (the Run page shows the whole config)."""
    parts = checkpoint.replace("\\", "/").split("/")
    return "/".join(parts[-2:]) if checkpoint.startswith((".", "/")) and len(parts) > 2 else checkpoint


def build(context, pages: dict) -> None:
    from hftl.tasks import task_names

    gr.Markdown(f"Run folders under `{context.root}`. Click a row to open it.")
    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="words in the name, task, checkpoint, status...",
                            elem_id="runs-search", scale=3)
        status = gr.Dropdown(["", FINISHED, RUNNING, INTERRUPTED, FAILED, CORRUPT], value="", label="Status",
                             elem_id="runs-status", scale=1)
        task = gr.Dropdown([""] + task_names(), value="", label="Task", elem_id="runs-task", scale=1)
        sort = gr.Dropdown(SORTS, value="date", label="Sort by", elem_id="runs-sort", scale=1)
        descending = gr.Checkbox(value=True, label="Descending", scale=0)
        refresh = gr.Button("Refresh", scale=0, elem_id="runs-refresh")
    count = gr.Markdown(elem_id="runs-count")
    grid = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, wrap=True, elem_id="runs-table",
                        max_height=700, column_widths=["14%", "10%", "12%", "6%", "7%", "16%", "25%", "10%"])

    def show(search_text, status_value, task_value, sort_by, desc):
        rows = context.runs()
        kept = filter_runs(rows, search_text or "", status_value or "", task_value or "", sort_by or "date", desc)
        counts = {}
        for r in rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        return table(kept), f"**{len(kept)} of {len(rows)} runs** ({summary or 'none yet'})"

    inputs = [search, status, task, sort, descending]
    for component in (status, task, sort, descending):
        component.change(show, inputs, [grid, count])
    search.change(show, inputs, [grid, count], trigger_mode="always_last")
    refresh.click(show, inputs, [grid, count])
    pages.update({"runs.grid": grid, "runs.show": show, "runs.inputs": inputs, "runs.outputs": [grid, count]})
