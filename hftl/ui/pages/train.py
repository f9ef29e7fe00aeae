"""The Train page: a form and the config YAML side by side (either can be edited; they stay in sync), every
problem `hftl validate` finds at once, and a queue of `hftl train` jobs with live progress, curves and log;
Stop ends a job the way Ctrl-C does (a resumable checkpoint), Resume continues an interrupted run."""

from __future__ import annotations

import time

import gradio as gr

from hftl.errors import HftlError
from hftl.ui import train_config
from hftl.ui.context import message
from hftl.ui.curves import curve_frames
from hftl.ui.jobs import RUNNING, STOPPING
from hftl.ui.runs_index import INTERRUPTED
from hftl.training_log import read_training_log

#: seconds between two refreshes of the live view
REFRESH_S = 1.0
FORM_LABELS = {"task": "Task", "checkpoint": "Checkpoint (hftl models lists the packaged ones)", "strategy": "Strategy",
               "train": "Training data (path under the runs folder)", "validation": "Validation data (optional)",
               "test": "Test data (optional)", "epochs": "Epochs", "learning_rate": "Learning rate",
               "batch_size": "Batch size (per device)", "max_steps": "Max steps (optional; overrides epochs)",
               "seed": "Seed"}


def packaged_checkpoints() -> list[str]:
    from hftl.modeling import PACKAGED, PACKAGED_PREFIX

    return [f"{PACKAGED_PREFIX}{name}" for name in PACKAGED]


def progress_text(job, progress) -> str:
    if job is None:
        return "No job yet: validate a config, then Launch."
    parts = [f"**job {job.id} · {job.name} · {job.status}**"]
    if progress.max_steps:
        parts.append(f"step {progress.step} of {progress.max_steps}")
    elif progress.step:
        parts.append(f"step {progress.step}")
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch:.2f}")
    if progress.phase == "evaluate" and not progress.ended:
        parts.append("evaluating")
    if progress.eta_s is not None and job.status in (RUNNING, STOPPING):
        parts.append(f"ETA {_duration(progress.eta_s)}")
    losses = [h["loss"] for h in progress.history if "loss" in h]
    if losses:
        parts.append(f"last loss {losses[-1]:.4f}")
    if job.returncode is not None:
        parts.append(f"exit status {job.returncode}")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def build(context, pages: dict) -> None:
    from hftl.tasks import task_names

    fields = {}
    notes = {}
    with gr.Row():
        with gr.Column(scale=1):
            name = gr.Textbox(label="Run name (its folder under the runs folder)", elem_id="train-name")
            with gr.Row():
                fields["task"] = gr.Dropdown(task_names(), label=FORM_LABELS["task"], elem_id="train-task")
                fields["strategy"] = gr.Dropdown(["full", "freeze", "lora"], label=FORM_LABELS["strategy"],
                                                 elem_id="train-strategy")
            fields["checkpoint"] = gr.Dropdown(packaged_checkpoints(), label=FORM_LABELS["checkpoint"],
                                               allow_custom_value=True, elem_id="train-checkpoint")
            for key in ("train", "validation", "test"):
                fields[key] = gr.Textbox(label=FORM_LABELS[key], elem_id=f"train-{key}")
            with gr.Row():
                for key in ("epochs", "learning_rate", "batch_size", "max_steps", "seed"):
                    fields[key] = gr.Textbox(label=FORM_LABELS[key], elem_id=f"train-{key}", min_width=90)
            for key in fields:
                notes[key] = gr.Markdown(visible=False, elem_classes=["field-problem"], elem_id=f"train-note-{key}")
        with gr.Column(scale=1):
            yaml_box = gr.Code(language="yaml", label="config (YAML; paths relative to the runs folder)",
                               interactive=True, lines=22, elem_id="train-yaml")
    with gr.Row():
        seeds = gr.Number(value=1, precision=0, minimum=1, label="Seeds (--seeds)", scale=0, min_width=110)
        overwrite = gr.Checkbox(label="Replace an existing run folder (--overwrite)", value=False)
        validate = gr.Button("Validate", elem_id="train-validate")
        launch = gr.Button("Launch (add to the queue)", variant="primary", elem_id="train-launch")
    problems = gr.Markdown(elem_id="train-problems")
    gr.Markdown("### Jobs")
    with gr.Row():
        jobs = gr.Dataframe(headers=["job", "run", "status", "command", "exit"], value=[], interactive=False,
                            elem_id="train-jobs", scale=3)
        with gr.Column(scale=1):
            watched = gr.Dropdown(choices=[], label="Job shown", elem_id="train-watched")
            stop = gr.Button("Stop (checkpoint, then exit)", variant="stop", elem_id="train-stop")
            resumable = gr.Dropdown(choices=[], label="Interrupted run", allow_custom_value=True,
                                    elem_id="train-resumable")
            changes = gr.Textbox(label="Changes for the resumed run (--set KEY=VALUE, one a line)", lines=2,
                                 placeholder="training.max_steps=2000", elem_id="train-resume-set")
            resume = gr.Button("Resume", elem_id="train-resume")
    job_result = gr.Markdown(elem_id="train-job-result")
    progress = gr.Markdown(elem_id="train-progress")
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="value", color="series", title="Loss (live)", elem_id="train-loss")
        metric_plot = gr.LinePlot(x="step", y="value", color="series", title="Validation (live)",
                                  elem_id="train-metrics")
    log = gr.Textbox(label="Log (the last lines)", lines=15, max_lines=15, autoscroll=True, interactive=False,
                     elem_id="train-log")
    timer = gr.Timer(REFRESH_S)

    order = list(fields)

    generated = gr.State("")  # the YAML the form last wrote: the editor echoing it back is not an edit

    def yaml_from_form(text, *values):
        data, error = train_config.parse_yaml(text)
        changed = train_config.with_form(data, dict(zip(order, values)))
        if changed == data and not error:  # the form echoing the YAML back: leave the user's text as it is
            return gr.update(), gr.update()
        new = train_config.dump_yaml(changed)
        return new, new

    def form_from_yaml(text, last):
        if text == last:
            return [gr.update() for _ in order] + [gr.update()]
        data, error = train_config.parse_yaml(text)
        if error:
            return [gr.update() for _ in order] + [f"**{error}**"]
        values = train_config.form_values(data)
        return [gr.update(value=values[k] if values[k] != "" else None) if k in ("task", "strategy", "checkpoint")
                else gr.update(value=str(values[k])) for k in order] + [""]

    def check(run_name, text, replace):
        data, error = train_config.parse_yaml(text)
        if error:
            return None, [error]
        path, found = train_config.config_file(context.paths, run_name, data)
        if found:
            return None, found
        return path, train_config.validation_problems(path, overwrite=bool(replace))

    def show_problems(found):
        by_field = {k: [p for p in found if p.startswith(train_config.problem_key(k))] for k in order}
        updates = [gr.update(value="\n".join(f"{p}" for p in by_field[k]), visible=bool(by_field[k])) for k in order]
        if not found:
            return ["**No problems**: `hftl validate` passes."] + updates
        listed = "\n".join(f"- {message(Exception(p))}" for p in found)
        return [f"**{len(found)} problem(s)**, all of them:\n{listed}"] + updates

    def on_validate(run_name, text, replace):
        _, found = check(run_name, text, replace)
        return show_problems(found)

    def on_launch(run_name, text, replace, seed_count):
        path, found = check(run_name, text, replace)
        if found:
            return show_problems(found) + ["Not launched: fix the problems above."]
        data, _ = train_config.parse_yaml(path.read_text(encoding="utf-8"))
        job = context.jobs.submit(run_name.strip(), path, data["training"]["output_dir"], overwrite=bool(replace),
                                  seeds=max(1, int(seed_count or 1)))
        return show_problems([]) + [f"Queued job {job.id}: `hftl {' '.join(job.command()[3:])}`"]

    def on_stop(job_id):
        job = context.jobs.get(job_id) if job_id else context.jobs.current()
        return context.jobs.stop(job) if job else "No running job."

    def on_resume(run_id, change_lines):
        try:
            folder = context.run_folder(run_id or "")
        except HftlError as err:
            return f"**Refused:** {message(err)}"
        config = folder / "config.yaml"
        if not config.is_file():
            return f"{run_id} has no config.yaml: it is not a run folder."
        overrides = [line.strip() for line in (change_lines or "").splitlines() if line.strip()]
        refused = train_config.refused_overrides(overrides)
        if refused:
            return "**Refused:** " + " ".join(refused)
        job = context.jobs.submit(folder.name, config, folder, resume=True,
                                  overrides=overrides + [f"training.output_dir={folder}"])
        return f"Queued job {job.id}: resume {run_id} (`hftl {' '.join(job.command()[3:])}`)"

    def refresh(job_id):
        all_jobs = context.jobs.jobs
        rows = [[j.id, j.name, j.status, "hftl " + " ".join(j.command()[3:]).replace(str(context.root) + "/", ""),
                 "" if j.returncode is None else j.returncode] for j in reversed(all_jobs)]
        job = context.jobs.get(job_id) if job_id else None
        job = job or context.jobs.current() or (all_jobs[-1] if all_jobs else None)
        state = read_training_log(_log_folder(job.run_dir)) if job else None
        losses, metrics = curve_frames(state.history) if state else (None, None)
        return (rows, progress_text(job, state) if job else progress_text(None, None), losses, metrics,
                job.log_tail(15) if job else "", gr.update(choices=[str(j.id) for j in all_jobs]))

    field_list = [fields[k] for k in order]
    for component in field_list:
        component.change(yaml_from_form, [yaml_box] + field_list, [yaml_box, generated], trigger_mode="always_last")
    yaml_box.input(form_from_yaml, [yaml_box, generated], field_list + [problems], trigger_mode="always_last")
    note_list = [notes[k] for k in order]
    validate.click(on_validate, [name, yaml_box, overwrite], [problems] + note_list)
    launch.click(on_launch, [name, yaml_box, overwrite, seeds], [problems] + note_list + [job_result])
    stop.click(on_stop, watched, job_result)
    resume.click(on_resume, [resumable, changes], job_result)
    resumable.focus(lambda: gr.update(choices=[r.id for r in context.runs() if r.status == INTERRUPTED]), None,
                    resumable)
    timer.tick(refresh, watched, [jobs, progress, loss_plot, metric_plot, log, watched])
    pages["train.timer"] = timer


def _log_folder(run_dir):
    """Where the live log of a job's run is: the run folder, or for `--seeds` the newest seed's folder."""
    if (run_dir / "training_log.jsonl").is_file() or not run_dir.is_dir():
        return run_dir
    seeds = sorted((p for p in run_dir.glob("seed-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return seeds[-1] if seeds else run_dir
