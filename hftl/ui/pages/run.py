"""The Run page: one run's card with its figures, curves, the config as run, the manifest and files; export and
push, each behind a confirmation. Export and push call what `hftl export` / `hftl push` call."""

from __future__ import annotations

import json

import gradio as gr

from hftl.errors import HftlError
from hftl.run_dir import RunDir
from hftl.ui.context import message
from hftl.ui.curves import curve_frames, run_history

ACTIONS = {"merged": "Export merged", "onnx": "Export ONNX", "push": "Push to the Hub"}


def files_table(folder) -> list[list]:
    rows = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            rows.append([path.relative_to(folder).as_posix(), f"{path.stat().st_size:,}"])
    return rows[:500]


def build(context, pages: dict) -> None:
    with gr.Row():
        run_id = gr.Dropdown(choices=[], label="Run (a folder under the runs folder)", allow_custom_value=True,
                             elem_id="run-id", scale=4)
        reload = gr.Button("Open", scale=0, elem_id="run-open")
    status = gr.Markdown(elem_id="run-status")
    with gr.Tabs():
        with gr.Tab("Card"):
            card = gr.Markdown(elem_id="run-card")
        with gr.Tab("Curves"):
            with gr.Row():
                losses = gr.LinePlot(x="step", y="value", color="series", title="Loss", elem_id="run-loss")
                metrics = gr.LinePlot(x="step", y="value", color="series", title="Validation", elem_id="run-metrics")
        with gr.Tab("Config"):
            config = gr.Code(language="yaml", label="config.yaml (the resolved config the run used)",
                             interactive=False, elem_id="run-config")
        with gr.Tab("Manifest"):
            manifest = gr.Code(language="json", label="manifest.json", interactive=False)
        with gr.Tab("Files"):
            files = gr.Dataframe(headers=["file", "bytes"], value=[], interactive=False, max_height=300)
            with gr.Row():
                file_name = gr.Textbox(label="Show a file (path in the run folder)", elem_id="run-file", scale=4)
                show_file = gr.Button("Show", scale=0, elem_id="run-file-show")
            file_text = gr.Code(label="file", interactive=False, elem_id="run-file-text")
        with gr.Tab("Export and push"):
            gr.Markdown("Writes a new folder under the runs folder, or uploads the run (the token comes from "
                        "HF_TOKEN or `hf auth login` and is never shown). Each asks for confirmation.")
            with gr.Row():
                target = gr.Textbox(label="Export folder (under the runs folder) or Hub repo id (user/name)",
                                    elem_id="run-target", scale=3)
                private = gr.Checkbox(label="private repo (push)", value=True, scale=1)
            with gr.Row():
                buttons = {key: gr.Button(label, elem_id=f"run-{key}") for key, label in ACTIONS.items()}
            pending = gr.State("")
            with gr.Row(visible=False) as confirm_row:
                confirm_text = gr.Markdown(elem_id="run-confirm-text")
                confirm = gr.Button("Confirm", variant="primary", elem_id="run-confirm")
                cancel = gr.Button("Cancel", elem_id="run-cancel")
            action_result = gr.Markdown(elem_id="run-action-result")

    def open_run(rid):
        empty = ("", None, None, "", "", [], "")
        if not rid:
            return ("Choose a run.", *empty)
        try:
            folder = context.run_folder(rid)
        except HftlError as err:
            return (f"**Refused:** {message(err)}", *empty)
        run = RunDir(folder)
        row = next((r for r in context.runs() if r.id == context.paths.relative(folder)), None)
        head = f"**{rid}**" + (f" — {row.status}" + (f" ({row.detail})" if row.detail else "") if row else "")
        if row and row.task:
            head += f" · {row.task} · `{row.checkpoint}` · {row.strategy}"
        try:
            card_text = context.card_markdown(folder) if (folder / RunDir.CARD).is_file() else "*No card yet.*"
        except (HftlError, OSError) as err:
            card_text = f"*The card cannot be shown: {message(err)}*"
        if row and row.members:  # a seed group: every seed's curves
            frames = [curve_frames(run_history(context.run_folder(m)), f"{m.rsplit('/', 1)[-1]} ") for m in row.members]
            loss_frame, metric_frame = _concat([f[0] for f in frames]), _concat([f[1] for f in frames])
        else:
            loss_frame, metric_frame = curve_frames(run_history(folder))
        texts = []
        for name in (RunDir.CONFIG, RunDir.MANIFEST):
            try:
                text = context.paths.read_text(folder / name) if (folder / name).is_file() else ""
                if name == RunDir.MANIFEST and text:
                    text = json.dumps(json.loads(text), indent=2)
            except (HftlError, ValueError) as err:
                text = f"# cannot be read: {message(err)}"
            texts.append(text)
        return head, card_text, loss_frame, metric_frame, texts[0], texts[1], files_table(folder), ""

    def show(rid, name):
        try:
            folder = context.run_folder(rid)
            return context.paths.read_text(folder / (name or "").strip())
        except HftlError as err:
            return f"Refused: {message(err)}"

    def ask(action, rid, target_value):
        if not rid or not (target_value or "").strip():
            return action, gr.update(visible=False), "", "Choose a run and give the export folder or repo id first."
        what = {"merged": f"Write a merged transformers model of **{rid}** to `{target_value}`?",
                "onnx": f"Write an ONNX model of **{rid}** to `{target_value}`?",
                "push": f"Upload **{rid}** to the Hub repo `{target_value}`?"}[action]
        return action, gr.update(visible=True), what, ""

    def do(action, rid, target_value, is_private):
        hidden = gr.update(visible=False)
        try:
            folder = context.run_folder(rid)
            if action == "push":
                from hftl.hub import push_run

                url = push_run(folder, repo_id=target_value.strip(), private=is_private)
                return "", hidden, f"Pushed: {url}"
            out = context.paths.resolve(target_value)
            if action == "merged":
                from hftl.export import export_merged

                written = export_merged(folder, out, overwrite=False)
            else:
                from hftl.onnx_export import export_onnx

                written = export_onnx(folder, out, overwrite=False)
            return "", hidden, f"Written: `{context.paths.relative(written)}`"
        except (HftlError, OSError, ValueError, ImportError) as err:
            return "", hidden, f"**Failed:** {message(err)}"

    outputs = [status, card, losses, metrics, config, manifest, files, file_text]
    run_id.change(open_run, run_id, outputs)
    reload.click(open_run, run_id, outputs)
    run_id.focus(lambda: gr.update(choices=context.run_ids()), None, run_id)
    show_file.click(show, [run_id, file_name], file_text)
    file_name.submit(show, [run_id, file_name], file_text)
    for key, button in buttons.items():
        button.click(lambda r, t, k=key: ask(k, r, t), [run_id, target], [pending, confirm_row, confirm_text,
                                                                           action_result])
    confirm.click(do, [pending, run_id, target, private], [pending, confirm_row, action_result])
    cancel.click(lambda: ("", gr.update(visible=False), "Cancelled."), None, [pending, confirm_row, action_result])
    pages["run.id"], pages["run.open"], pages["run.outputs"] = run_id, open_run, outputs


def _concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True) if frames else None
