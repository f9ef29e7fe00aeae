"""`hftl ui` without a browser: the root's path gate, the runs index (statuses, seed groups, broken folders), the
live training log, the Train page's config handling, token masking and the command line. The pages themselves
are tested in a real browser in tests/test_ui_browser.py."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hftl.run_dir import RunDir
from hftl.training_log import read_training_log
from hftl.ui import train_config
from hftl.ui.jobs import redact
from hftl.ui.paths import PathRefused, RootPaths
from hftl.ui.runs_index import CORRUPT, FAILED, FINISHED, INTERRUPTED, RUNNING, filter_runs, scan_runs


# -- paths ----------------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "runs"
    (root / "a-run").mkdir(parents=True)
    (root / "a-run" / "config.yaml").write_text("task: x\n")
    (tmp_path / "secret.txt").write_text("outside")
    return root


@pytest.mark.parametrize("name", ["../../etc/passwd", "../secret.txt", "/etc/passwd", "a-run/../../secret.txt",
                                  "", "a-run/\x00"])
def test_paths_outside_the_root_are_refused(root, name):
    with pytest.raises(PathRefused):
        RootPaths(root).resolve(name)


def test_symlinks_leaving_the_root_are_refused_and_those_inside_allowed(root, tmp_path):
    (root / "a-run" / "leak").symlink_to(tmp_path / "secret.txt")
    (root / "a-run" / "dir-leak").symlink_to(tmp_path)
    (root / "alias").symlink_to(root / "a-run")
    paths = RootPaths(root)
    for name in ("a-run/leak", "a-run/dir-leak/secret.txt", "a-run/dir-leak"):
        with pytest.raises(PathRefused, match="outside the runs folder"):
            paths.read_text(name)
    assert paths.read_text("alias/config.yaml") == "task: x\n"
    assert paths.resolve(root / "a-run") == (root / "a-run").resolve()
    assert paths.relative(root / "a-run" / "config.yaml") == "a-run/config.yaml"


# -- the runs index -------------------------------------------------------------------------------
def _run(root: Path, name: str, metrics: dict | None = None, task: str = "text-classification",
         created: str = "2026-01-01T00:00:00+00:00") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"task": task, "model": {"name_or_path": "m",
                                                                              "strategy": "lora"}}))
    (folder / "manifest.json").write_text(json.dumps({"created": created}))
    os.utime(folder / "manifest.json", (time.time() - 3600,) * 2)  # not "just written": not running
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def _checkpoint(folder: Path, step: int, complete: bool = True) -> None:
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"x")
    if complete:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_scan_runs_gives_every_status_and_survives_broken_folders(tmp_path):
    root = tmp_path / "runs"
    _run(root, "done", {"test": {"accuracy": 0.9, "f1": 0.8, "num_examples": 10, "per_class": {}}},
         created="2026-01-03T00:00:00+00:00")
    interrupted = _run(root, "nested/interrupted")
    _checkpoint(interrupted, 4)
    _checkpoint(interrupted, 8, complete=False)  # cut off while saving: not the one to resume from
    failed = _run(root, "failed")
    _checkpoint(failed, 2, complete=False)
    running = _run(root, "running")  # holds its run lock (hftl.run_lock), as a training run does
    (running / RunDir.TRAINING_LOG).write_text(json.dumps({"event": "begin", "step": 0, "max_steps": 10}) + "\n"
                                               + json.dumps({"event": "progress", "step": 3}) + "\n")
    RunDir(running).lock().acquire()
    # a lock left by a killed run (its process is gone) does not make a run running
    killed = _run(root, "killed")
    _checkpoint(killed, 2)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (killed / RunDir.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout)}))
    half = _run(root, "half", None)
    (half / "metrics.json").write_text('{"test": {"accura')
    (root / "corrupt").mkdir()
    (root / "corrupt" / "config.yaml").write_text("task: [unclosed")
    (root / "notes").mkdir()  # not a run
    (root / ".hftl-ui" / "x").mkdir(parents=True)
    (root / ".hftl-ui" / "x" / "config.yaml").write_text("task: hidden\n")
    rows = {r.id: r for r in scan_runs(root)}
    assert set(rows) == {"done", "nested/interrupted", "failed", "running", "half", "corrupt", "killed"}
    assert rows["killed"].status == INTERRUPTED
    assert (rows["done"].status, rows["done"].metrics, rows["done"].main_metric) == (FINISHED, {"accuracy": 0.9, "f1": 0.8},
                                                                                      "accuracy")
    assert (rows["nested/interrupted"].status, rows["nested/interrupted"].detail) == (INTERRUPTED,
                                                                                     "resumable from checkpoint-4")
    assert rows["failed"].status == FAILED
    assert (rows["running"].status, rows["running"].detail) == (RUNNING, "step 3 of 10")
    assert rows["half"].status == CORRUPT and "metrics.json" in rows["half"].detail
    assert rows["corrupt"].status == CORRUPT and "config.yaml" in rows["corrupt"].detail
    # the UI's own running jobs count as running whatever the files say
    assert {r.id: r.status for r in scan_runs(root, {str(failed.resolve())})}["failed"] == RUNNING


def test_a_seed_group_is_one_row_with_mean_and_std(tmp_path):
    root = tmp_path / "runs"
    for seed, acc in ((1, 0.8), (2, 0.9)):
        _run(root, f"group/seed-{seed}", {"test": {"accuracy": acc}})
    (root / "group" / "metrics.json").write_text(json.dumps(
        {"test": {"accuracy": {"mean": 0.85, "std": 0.0707, "n": 2}}, "seeds": [1, 2], "runs": ["seed-1", "seed-2"]}))
    rows = scan_runs(root)
    assert [r.id for r in rows] == ["group"]
    assert rows[0].metrics == {"accuracy": "0.8500 ± 0.0707"} and rows[0].seeds == [1, 2]
    assert rows[0].members == ["group/seed-1", "group/seed-2"] and rows[0].status == FINISHED


def test_filter_and_sort(tmp_path):
    root = tmp_path / "runs"
    _run(root, "b-lora", {"test": {"f1": 0.5}}, created="2026-01-01T00:00:00+00:00")
    _run(root, "a-full", {"test": {"f1": 0.7}}, task="image-classification", created="2026-01-02T00:00:00+00:00")
    _run(root, "c", None, created="2026-01-03T00:00:00+00:00")
    rows = scan_runs(root)
    assert [r.id for r in rows] == ["c", "a-full", "b-lora"]
    assert [r.id for r in filter_runs(rows, sort_by="metric")] == ["a-full", "b-lora", "c"]
    assert [r.id for r in filter_runs(rows, sort_by="name", descending=False)] == ["a-full", "b-lora", "c"]
    assert [r.id for r in filter_runs(rows, search="B-LO")] == ["b-lora"]
    assert [r.id for r in filter_runs(rows, task="image-classification")] == ["a-full"]
    assert [r.id for r in filter_runs(rows, status=FAILED)] == ["c"]


# -- the live training log ------------------------------------------------------------------------
def test_training_log_after_a_resume_keeps_the_history_up_to_the_checkpoint(tmp_path):
    lines = [{"event": "begin", "step": 0, "max_steps": 10, "time": 100.0},
             *({"event": "log", "loss": 1.0 / s, "step": s, "epoch": s / 5, "time": 100.0 + s} for s in range(1, 7)),
             {"event": "begin", "step": 4, "max_steps": 10, "time": 200.0},  # resumed from checkpoint-4
             {"event": "log", "loss": 0.2, "step": 5, "time": 202.0},
             {"event": "progress", "step": 6, "epoch": 1.2, "time": 204.0}]
    path = tmp_path / RunDir.TRAINING_LOG
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"event": "log", "lo')  # a line being written
    progress = read_training_log(tmp_path)
    assert [(h["step"], h["loss"]) for h in progress.history] == [(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25), (5, 0.2)]
    assert (progress.step, progress.max_steps, progress.epoch, progress.ended) == (6, 10, 1.2, False)
    assert progress.rate == pytest.approx(2 / 4) and progress.eta_s == pytest.approx(4 / 0.5)
    assert read_training_log(tmp_path / "missing").history == []


def test_a_training_run_writes_its_live_log(tmp_path, tiny_bert_dir):
    from tiny_runs import train_tiny_run

    result = train_tiny_run(tmp_path, tiny_bert_dir, **{"training.num_train_epochs": 1})
    progress = read_training_log(result.run_dir)
    state = json.loads((result.run_dir / RunDir.TRAINER_STATE).read_text())
    assert progress.ended and progress.max_steps == state["max_steps"] == progress.step
    expected = [(h["step"], h["loss"]) for h in state["log_history"] if "loss" in h]
    assert [(h["step"], h["loss"]) for h in progress.history if "loss" in h] == expected
    assert any("eval_loss" in h for h in progress.history)


# -- the Train page's config ----------------------------------------------------------------------
def test_form_and_yaml_stay_in_sync():
    data, error = train_config.parse_yaml("task: t\nmodel: {strategy: full, lora: {r: 4}}\ntraining: {seed: 3}\n")
    assert error is None
    values = train_config.form_values(data)
    assert (values["task"], values["strategy"], values["seed"], values["train"]) == ("t", "full", 3, "")
    changed = train_config.with_form(data, {**values, "strategy": "lora", "train": "data/t.tsv", "learning_rate": "1e-4",
                                            "seed": "", "epochs": "2"})
    assert changed["model"] == {"strategy": "lora", "lora": {"r": 4}}  # keys the form does not show are kept
    assert changed["data"] == {"train": "data/t.tsv"}
    assert changed["training"] == {"learning_rate": 1e-4, "num_train_epochs": 2}
    assert train_config.form_values(yaml.safe_load(train_config.dump_yaml(changed)))["learning_rate"] == 1e-4
    assert train_config.parse_yaml("task: [")[1].startswith("YAML:")
    assert train_config.parse_yaml("- a list")[1].startswith("YAML:")


def test_config_file_confines_paths_and_refuses_remote_code(tmp_path):
    root = tmp_path / "runs"
    (root / "data").mkdir(parents=True)
    paths = RootPaths(root)
    path, problems = train_config.config_file(paths, "r1", {"task": "t", "model": {"name_or_path": "packaged:x"},
                                                            "data": {"train": "data/t.tsv"}})
    assert problems == []
    written = yaml.safe_load(path.read_text())
    assert written["data"]["train"] == str(root.resolve() / "data" / "t.tsv")
    assert written["training"]["output_dir"] == str(root.resolve() / "r1")
    assert written["model"]["name_or_path"] == "packaged:x"
    _, problems = train_config.config_file(paths, "r2", {
        "model": {"name_or_path": "../../elsewhere", "trust_remote_code": True, "allow_pickle": True},
        "data": {"train": "../../../etc/passwd", "test": "/etc/hosts"}, "training": {"output_dir": "/tmp/x"}})
    assert len(problems) == 6 and all("outside the runs folder" in p or "not enabled from the UI" in p for p in problems)
    assert train_config.config_file(paths, "../up", {})[1][0].startswith("name:")
    assert train_config.refused_overrides(["training.max_steps=3", "model.trust_remote_code=true",
                                           "training.output_dir=/x", "nonsense"]) == [
        "model.trust_remote_code: cannot be changed from the UI.", "training.output_dir: cannot be changed from the UI.",
        "'nonsense': write KEY=VALUE, e.g. training.max_steps=2000."]


def test_validation_lists_every_problem_of_hftl_validate(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    path, problems = train_config.config_file(RootPaths(root), "r", {
        "task": "text-classification", "model": {"name_or_path": "packaged:all-MiniLM-L6-v2", "stratgy": "full"},
        "data": {"train": "missing.tsv"}, "training": {"learning_rate": -1}})
    assert problems == []
    found = train_config.validation_problems(path)
    assert len(found) >= 3
    assert any("stratgy" in p for p in found) and any("learning_rate" in p for p in found)
    assert any("missing.tsv" in p for p in found)


# -- tokens and the command line ------------------------------------------------------------------
def test_tokens_are_masked_in_what_the_page_shows():
    token = "hf_" + "a1B2" * 9
    assert redact(f"Authorization: Bearer {token} done") == "Authorization: Bearer hf_*** done"
    assert token not in redact(f"HF_TOKEN={token}")


def test_hftl_ui_binds_localhost_unless_told_and_warns_when_told(monkeypatch, caplog, tmp_path):
    pytest.importorskip("gradio")
    import hftl.ui.app
    from hftl.cli import main

    calls = []
    monkeypatch.setattr(hftl.ui.app, "serve",
                        lambda root, host, port, job_niceness: calls.append((root, host, port, job_niceness)))
    with caplog.at_level(logging.WARNING):
        assert main(["ui", "--root", str(tmp_path)]) == 0
    assert calls[-1] == (str(tmp_path), "127.0.0.1", 7860, 0) and not caplog.records
    with caplog.at_level(logging.WARNING):
        assert main(["ui", "--root", str(tmp_path), "--host", "0.0.0.0", "--port", "9", "--job-niceness", "10"]) == 0
    assert calls[-1] == (str(tmp_path), "0.0.0.0", 9, 10)
    assert "anyone who can reach it can read every run" in caplog.text


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no process priorities on this platform")
@pytest.mark.parametrize("niceness", [10, 0])
def test_a_job_runs_below_the_uis_cpu_priority(tmp_path, monkeypatch, niceness):
    """`hftl ui --job-niceness N`: a job's process, and the threads it starts, run N above the UI's nice value,
    read back by the job itself."""
    from hftl.ui.jobs import FINISHED, Job, JobQueue

    monkeypatch.setattr(Job, "command", lambda self: [
        sys.executable, "-c", "import os, threading, time; time.sleep(1.0); "
        "t = threading.Thread(target=lambda: print('thread', os.getpriority(os.PRIO_PROCESS, 0))); t.start(); "
        "t.join(); print('main', os.nice(0))"])
    queue = JobQueue(tmp_path, niceness=niceness)
    job = queue.submit("nice", tmp_path / "unused.yaml", tmp_path / "run")
    deadline = time.time() + 30
    while job.status != FINISHED and time.time() < deadline:
        time.sleep(0.1)
    assert job.status == FINISHED, job.log_tail()
    expected = min(19, os.nice(0) + niceness)
    assert f"main {expected}" in job.log_tail() and f"thread {expected}" in job.log_tail()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_job_gets_sigterm_when_the_ui_is_killed(tmp_path):
    """A SIGKILLed UI runs no clean-up (its atexit stop never runs): its job must still get SIGTERM, on which
    `hftl train` saves a checkpoint and stops, and not train on as an orphan nobody can stop from the page."""
    import signal
    import textwrap

    job = tmp_path / "job.py"
    job.write_text(textwrap.dedent(f"""
        import os, signal, sys, time
        from pathlib import Path
        def stop(signum, frame):
            Path({str(tmp_path / "job-signal")!r}).write_text(str(signum))
            sys.exit(130)
        signal.signal(signal.SIGTERM, stop)
        Path({str(tmp_path / "job-pid")!r}).write_text(str(os.getpid()))
        time.sleep(120)
    """))
    ui = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from hftl.ui.jobs import Job, JobQueue
        Job.command = lambda self: [sys.executable, {str(job)!r}]
        JobQueue(Path({str(tmp_path)!r})).submit("orphan", Path("unused.yaml"), Path("run"))
        time.sleep(120)
    """)], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    job_pid = None
    try:
        deadline = time.time() + 60
        while not (tmp_path / "job-pid").exists() and time.time() < deadline:
            time.sleep(0.1)
        job_pid = int((tmp_path / "job-pid").read_text())
        ui.kill()
        ui.wait()
        deadline = time.time() + 20
        while not (tmp_path / "job-signal").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "job-signal").read_text() == str(int(signal.SIGTERM))
    finally:
        ui.kill()
        if job_pid is not None and not (tmp_path / "job-signal").exists():
            os.kill(job_pid, signal.SIGKILL)
