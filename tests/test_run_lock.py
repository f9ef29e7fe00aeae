"""A run holds a lock on its folder; a launch that asked for more processes than it got stops (issue 23, item 12).

- `RunLock`: one holder at a time, the second refused naming the first; a lock left by a killed run (its process
  gone, or its pid reused by another process) is cleared; a lock of another host is never cleared; release removes
  only this process's lock.
- Two real runs: a second `run_recipe` on a folder a live `hftl train` holds is refused before any work, naming that
  process; once that process is SIGKILLed, its lock is cleared and the run proceeds, and releases its lock at the end.
- `launch_check`: what `accelerate launch` asked for, read from its command line and config, against the world size.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from hftl import TextClassificationRecipe
from hftl.errors import ConfigError
from hftl.launch_check import launch_problem, requested_by_launcher
from hftl.run_dir import RunDir
from hftl.run_lock import RunFolderInUse
from hftl.runner import run_recipe

REPO = Path(__file__).resolve().parent.parent


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(folder: Path, **holder) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RunDir.LOCK
    path.write_text(json.dumps({"host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00",
                                "command": ["hftl", "train", "other.yaml"], **holder}))
    return path


def test_a_second_lock_is_refused_naming_the_holder_and_release_frees_it(tmp_path):
    first = RunDir(tmp_path / "run").lock().acquire()
    holder = json.loads((tmp_path / "run" / RunDir.LOCK).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
    with pytest.raises(RunFolderInUse) as refused:
        RunDir(tmp_path / "run").lock().acquire()
    message = str(refused.value)
    assert f"process {os.getpid()} on host {socket.gethostname()}" in message and "in use by another run" in message
    first.release()
    assert not (tmp_path / "run" / RunDir.LOCK).exists()
    with RunDir(tmp_path / "run").lock():  # free again
        assert (tmp_path / "run" / RunDir.LOCK).exists()
    assert not (tmp_path / "run" / RunDir.LOCK).exists()


def test_a_lock_left_by_a_killed_run_is_cleared(tmp_path, caplog):
    pid = _dead_pid()
    _write_lock(tmp_path / "run", pid=pid)
    with caplog.at_level(logging.WARNING):
        lock = RunDir(tmp_path / "run").lock().acquire()
    assert f"process {pid} is no longer running" in caplog.text
    assert json.loads((tmp_path / "run" / RunDir.LOCK).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_reused_pid_does_not_hold_the_lock(tmp_path):
    """The recorded start time differs from that of the process now running under the pid: the holder is gone."""
    _write_lock(tmp_path / "run", pid=os.getpid(), process_start="1")
    RunDir(tmp_path / "run").lock().acquire().release()


def test_a_lock_of_another_host_is_never_cleared(tmp_path):
    path = _write_lock(tmp_path / "run", pid=_dead_pid(), host="elsewhere.example")
    with pytest.raises(RunFolderInUse) as refused:
        RunDir(tmp_path / "run").lock().acquire()
    assert "on host elsewhere.example" in str(refused.value) and f"delete {path}" in str(refused.value)
    assert path.exists()


def test_release_keeps_a_lock_another_process_took(tmp_path):
    lock = RunDir(tmp_path / "run").lock().acquire()
    _write_lock(tmp_path / "run", pid=1)  # cleared as stale by someone, and taken by another process
    lock.release()
    assert json.loads((tmp_path / "run" / RunDir.LOCK).read_text())["pid"] == 1


def test_the_lock_is_not_a_run(tmp_path):
    """A folder holding only a lock is empty to `prepare` and the output-folder check; `--overwrite` keeps it."""
    from hftl.checks import check_output_dir

    run = RunDir(tmp_path / "run")
    with run.lock():
        run.prepare(overwrite=False, resume=False)
        (run.path / "old.txt").write_text("x")
        run.prepare(overwrite=True, resume=False)
        assert [p.name for p in run.path.iterdir()] == [RunDir.LOCK]
    config = types.SimpleNamespace(output_dir=str(run.path), overwrite=False, resume=False)
    _write_lock(run.path, pid=_dead_pid())  # a killed run's lock, in a folder otherwise empty
    assert check_output_dir(config) == []
    _write_lock(run.path, pid=os.getpid())  # a live run's
    assert check_output_dir(config) == [f"training.output_dir: {run.path} is in use by another run: process "
                                        f"{os.getpid()} on host {socket.gethostname()}, started "
                                        "2026-01-01T00:00:00+00:00 (hftl train other.yaml). Two runs cannot write "
                                        "one folder. Wait for it to end, or choose another training.output_dir. If "
                                        "that run is no longer running (on another machine, which cannot be checked "
                                        f"from here), delete {run.path / RunDir.LOCK}."]


@pytest.fixture
def train_yaml(tmp_path, text_config):
    def write(name: str, **changes) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(text_config(**changes)))
        return path

    return write


def test_a_second_run_on_a_held_folder_is_refused_and_a_killed_runs_lock_is_cleared(tmp_path, text_config, train_yaml,
                                                                                        caplog):
    out = tmp_path / "run"
    # a first run, slowed down so that it holds the folder a while: many small steps
    config = train_yaml("first", **{"training.output_dir": str(out), "training.num_train_epochs": 200,
                                    "training.per_device_train_batch_size": 1, "training.save_strategy": "no",
                                    "training.eval_strategy": "no"})
    # checked before the first run starts: the two start together, as two launches could
    second = TextClassificationRecipe(text_config(**{"training.output_dir": str(out), "training.max_steps": 2}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "hftl.cli", "train", str(config)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / RunDir.LOCK).exists():
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.2)
        with pytest.raises(RunFolderInUse) as refused:
            run_recipe(second)
        assert f"process {first.pid} on host {socket.gethostname()}" in str(refused.value)
        with pytest.raises(ConfigError) as checked:  # a run checked now is told so by its config check
            TextClassificationRecipe({**text_config(**{"training.output_dir": str(out)}), "overwrite": True})
        assert f"is in use by another run: process {first.pid}" in str(checked.value)
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (out / RunDir.LOCK).exists()  # left behind by the killed run
    config = text_config(**{"training.output_dir": str(out), "training.max_steps": 2})
    config["overwrite"] = True
    with caplog.at_level(logging.WARNING):
        result = run_recipe(TextClassificationRecipe(config))
    assert f"process {first.pid} is no longer running" in caplog.text
    assert (result.run_dir / RunDir.METRICS).is_file()
    assert not (out / RunDir.LOCK).exists()  # released at the end


@pytest.mark.parametrize("command, asked", [
    (["python", "/venv/bin/accelerate", "launch", "--cpu", "--num_machines", "2", "--num_processes", "2",
      "--machine_rank", "1", "--main_process_ip", "127.0.0.1", "--main_process_port", "29500", "recipe.py",
      "--num_processes", "9"], (2, 2)),
    (["/venv/bin/accelerate", "launch", "--cpu", "--num-processes=2", "recipe.py"], (2, 1)),
    (["python", "-m", "accelerate.commands.launch", "--config_file",
      str(REPO / "recipes" / "accelerate" / "cpu_multi_node.yaml"), "--machine_rank", "1", "recipe.py"], (2, 2)),
    (["python", "-m", "accelerate.commands.launch", "--config_file",
      str(REPO / "recipes" / "accelerate" / "cpu_ddp.yaml"), "--num_processes", "3", "recipe.py"], (3, 1)),
])
def test_what_accelerate_launch_asked_for(command, asked):
    requested = requested_by_launcher(command)
    assert (requested["processes"], requested["machines"]) == asked
    assert launch_problem(1, requested).startswith(f"accelerate launch asked for {asked[0]} processes")
    assert launch_problem(max(asked), requested) is None


@pytest.mark.parametrize("command", [["python", "recipe.py"], ["/venv/bin/torchrun", "--nproc_per_node", "2", "x.py"],
                                     ["bash", "-c", "accelerate"], []])
def test_other_launchers_are_not_second_guessed(command):
    assert requested_by_launcher(command) is None
    assert launch_problem(1, None) is None
