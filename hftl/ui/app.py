"""The `hftl ui` app: the pages as tabs of one Gradio Blocks, launched on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import gradio as gr

from hftl.ui.jobs import JOB_NICENESS

logger = logging.getLogger(__name__)

#: (tab title, tab id, module in hftl.ui.pages), in the order the tabs show
PAGES = [("Runs", "runs", "runs"), ("Run", "run", "run"), ("Compare", "compare", "compare"), ("Try", "try", "try_run"),
         ("Train", "train", "train"), ("Tune", "tune", "tune")]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CSS = ".field-problem {color: #b42318; font-size: 0.9em} #runs-table td {font-size: 0.9em}"


def available_pages() -> list[tuple[str, str, str]]:
    """The pages whose module exists (Compare and Tune come with `hftl compare` / `hftl tune`)."""
    return [page for page in PAGES if importlib.util.find_spec(f"hftl.ui.pages.{page[2]}") is not None]


def build_app(root: str | Path, job_niceness: int = JOB_NICENESS):
    """The Gradio `Blocks` of the UI over the runs folder `root` (not launched); training jobs run `job_niceness`
    below the UI's CPU priority."""
    from hftl.ui.context import UIContext

    context = UIContext(root, job_niceness)
    pages: dict = {}
    with gr.Blocks(title="hftl", fill_width=True) as app:
        gr.Markdown(f"## hftl · `{context.root}`")
        with gr.Tabs(elem_id="pages") as tabs:
            for title, tab_id, module in available_pages():
                with gr.Tab(title, id=tab_id, elem_id=f"tab-{tab_id}"):
                    importlib.import_module(f"hftl.ui.pages.{module}").build(context, pages)
        _wire(app, tabs, pages)
    app.hftl_context = context
    return app


def _wire(app, tabs, pages: dict) -> None:
    """Links between pages: a Runs row opens the Run page; `?run=NAME` in the address opens that run."""
    grid, run_id = pages["runs.grid"], pages["run.id"]

    def open_row(evt: gr.SelectData):
        row = evt.row_value or []
        if not row:
            return gr.update(), gr.update()
        return gr.update(value=row[0]), gr.Tabs(selected="run")

    grid.select(open_row, None, [run_id, tabs])

    def first_load(search, status, task, sort, desc, request: gr.Request):
        table, count = pages["runs.show"](search, status, task, sort, desc)
        asked = dict(request.query_params).get("run") if request else None
        return table, count, (gr.update(value=asked) if asked else gr.update()), \
            (gr.Tabs(selected="run") if asked else gr.Tabs())

    app.load(first_load, pages["runs.inputs"], pages["runs.outputs"] + [run_id, tabs], queue=False,
             show_progress="hidden")


def theme():
    # system fonts: the default theme fetches web fonts, which an offline machine cannot
    return gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
          job_niceness: int = JOB_NICENESS):
    """Build and launch the UI. Only `host` listens; Gradio is given no folder to serve files from."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(root, job_niceness)
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=host, server_port=port, share=False, ssr_mode=False, show_error=False, quiet=False,
               prevent_thread_lock=not block, theme=theme(), css=CSS, allowed_paths=[], footer_links=["settings"],
               mcp_server=False)
    return app
