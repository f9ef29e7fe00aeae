"""The Tune page: a `hftl tune` study's progress and figures, read from its folder (`hftl.tune.StudyDir`): trials
by state, each trial's configuration and objective, the report, and Optuna's figures as `hftl.tune.figures`
draws them (redrawn on Refresh, so a study still running shows its progress)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from hftl.errors import HftlError
from hftl.ui.context import message

#: how deep under the root study folders are searched
STUDY_DEPTH = 3


def study_ids(root: Path) -> list[str]:
    from hftl.tune.folder import StudyDir

    found = []
    for depth in range(1, STUDY_DEPTH + 1):
        for record in sorted(root.glob("/".join(["*"] * depth) + "/" + StudyDir.RECORD)):
            if not any(part.startswith(".") for part in record.relative_to(root).parts):
                found.append(record.parent.relative_to(root).as_posix())
    return found


def trials_table(record: dict) -> pd.DataFrame:
    params = sorted({k for t in record.get("trials", []) for k in t.get("params", {})})
    rows = [[t["number"], t["state"], "" if t.get("value") is None else round(t["value"], 4),
             *(t["params"].get(k, "") for k in params)] for t in record.get("trials", [])]
    return pd.DataFrame(rows, columns=["trial", "state", "objective", *params])


def build(context, pages: dict) -> None:
    gr.Markdown("A `hftl tune` study under the runs folder: its trials, report and figures.")
    with gr.Row():
        study = gr.Dropdown(choices=[], label="Study folder", allow_custom_value=True, scale=4, elem_id="tune-study")
        refresh = gr.Button("Refresh", scale=0, elem_id="tune-refresh")
    progress = gr.Markdown(elem_id="tune-progress")
    trials = gr.Dataframe(value=[], interactive=False, label="Trials", elem_id="tune-trials")
    figures = gr.Markdown(elem_id="tune-figures")
    report = gr.Markdown(elem_id="tune-report")

    def show(study_id):
        from hftl.tune.figures import study_figures
        from hftl.tune.folder import StudyDir
        from hftl.tune.summary import counts

        try:
            folder = context.run_folder(study_id or "")
            study_dir = StudyDir(folder)
            if not study_dir.is_study():
                raise HftlError(f"{study_id}: not a study folder (no {StudyDir.RECORD}).")
            record = study_dir.record()
        except (HftlError, OSError, ValueError) as err:
            return f"**Cannot show it:** {message(err)}", None, "", ""
        found = counts(record)
        objective = record.get("objective", {})
        head = (f"**{study_id}**: {sum(found.values())} trials ("
                + ", ".join(f"{n} {state.lower()}" for state, n in sorted(found.items()))
                + f"); objective: {objective.get('direction', '')} validation {objective.get('metric', '')}")
        images = []
        with tempfile.TemporaryDirectory() as tmp:
            try:
                drawn = study_figures(folder, tmp)
            except (ImportError, ValueError, RuntimeError, KeyError) as err:
                drawn, head = {}, head + f" (figures unavailable: {message(err)})"
            for name, path in drawn.items():
                data = base64.b64encode(Path(path).read_bytes()).decode()
                images.append(f"![{name}](data:image/png;base64,{data})")
        try:
            text = context.paths.read_text(study_dir.report) if study_dir.report.is_file() else ""
        except HftlError as err:
            text = f"*The report cannot be shown: {message(err)}*"
        return head, trials_table(record), "\n".join(images), text

    study.focus(lambda: gr.update(choices=study_ids(context.root)), None, study)
    study.change(show, study, [progress, trials, figures, report])
    refresh.click(show, study, [progress, trials, figures, report])
    pages["tune.study"] = study
