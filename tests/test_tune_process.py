"""How `hftl tune` starts a trial's process (`hftl.tune.trial_process`): forked from a server that has imported
what trials import, else as a fresh interpreter. The trials here are `tests/tune_process_stub.py` (seconds, no
training); real trials through the fork server are tests/test_tune.py's studies. The server here preloads only
`multiprocessing` unless an earlier test of the session started the real one: the behaviour is the same."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hftl.tune import trial_process
from hftl.tune.report import TRIAL_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is used on Linux")

TESTS = Path(__file__).resolve().parent
STUB = [sys.executable, "-m", "tune_process_stub"]


@pytest.fixture
def forkable(monkeypatch):
    """The stub forkable as hftl.cli is; a light server if none was started yet in this session."""
    monkeypatch.setattr(trial_process, "FORKABLE", {*trial_process.FORKABLE, "tune_process_stub"})
    monkeypatch.delenv(trial_process.FORKSERVER_ENV, raising=False)
    if "problem" not in trial_process._server:
        monkeypatch.setattr(trial_process, "PRELOAD", ["multiprocessing"])
    assert trial_process.server_problem() is None
    return {**trial_process._server["env"], TRIAL_ENV: json.dumps({"trial_id": 7})}


def run(tmp_path, argv, env, name="trial.log") -> tuple[int, dict, str]:
    measured: dict = {}
    log = tmp_path / name
    code = trial_process.launch([*STUB, *argv], log, env, measured=measured)
    return code, measured, log.read_text()


def test_per_trial_env_is_the_trial_env():
    assert trial_process.PER_TRIAL_ENV == (TRIAL_ENV,)


def test_a_forked_trial_gets_its_env_exactly_and_writes_to_its_log(tmp_path, forkable):
    code, measured, log = run(tmp_path, ["env"], forkable)
    assert code == 0 and measured["how"] == "fork", (measured, log)
    seen = json.loads(log.splitlines()[0])
    assert seen["env"] == forkable and seen["env"][TRIAL_ENV] == forkable[TRIAL_ENV]  # the tuner's has none
    assert seen["pid"] != os.getpid() and seen["ppid"] != os.getpid()  # a fork of the server, not of this process
    assert "to stderr" in log  # stdout and stderr, at the file descriptors
    assert seen["argv"][1:] == ["env"] and seen["argv"][0].endswith("tune_process_stub.py")  # as `python -m` sets it
    assert 0 < measured["start_s"] < 30 and measured["cpu_s"] > 0


def _fresh_env(forkable: dict) -> dict:
    """The environment of a trial started as a fresh interpreter: the stub modules of tests/ importable."""
    return {**forkable, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("argv, code", [(["return", "0"], 0), (["return", "5"], 5), (["exit", "3"], 3),
                                        (["exit", "a message"], 1), (["raise"], 1), (["return", "none"], 0)])
def test_exit_status_as_a_fresh_interpreter_gives_it(tmp_path, forkable, monkeypatch, argv, code):
    forked, measured, log = run(tmp_path, argv, forkable)
    assert measured["how"] == "fork" and forked == code, log
    monkeypatch.setenv(trial_process.FORKSERVER_ENV, "0")
    env = _fresh_env(forkable)
    fresh, measured, fresh_log = run(tmp_path, argv, env, "fresh.log")
    assert measured["how"] == "subprocess" and fresh == code, fresh_log
    if argv[0] == "exit" and code == 1:
        assert "a message" in log
    if argv[0] == "raise":
        assert "RuntimeError: the trial failed" in log


def test_two_trials_are_two_processes(tmp_path, forkable):
    _, first, log = run(tmp_path, ["state"], forkable)
    _, second, log = run(tmp_path, ["state"], forkable)
    assert first["how"] == second["how"] == "fork"
    one, two = (json.loads(line) for line in log.splitlines())
    assert one["pid"] != two["pid"]
    assert one["seen"] is None and two["seen"] is None  # what the first set in a preloaded module, the second lacks


def test_cpu_seconds_are_the_trials(tmp_path, forkable):
    _, idle, _ = run(tmp_path, ["return", "0"], forkable)
    _, busy, _ = run(tmp_path, ["burn", "0.6"], forkable)
    assert busy["how"] == "fork" and busy["cpu_s"] >= 0.6 > idle["cpu_s"]


def test_signal_dispositions_as_a_fresh_interpreter_gets_them(tmp_path, forkable, monkeypatch):
    """A forked trial handles signals as a fresh interpreter started here would: Python's defaults, except a signal
    the tuner was started ignoring (`nohup` ignores SIGHUP), which stays ignored, as across an exec."""
    _, measured, log = run(tmp_path, ["signals"], forkable)
    assert measured["how"] == "fork"
    monkeypatch.setenv(trial_process.FORKSERVER_ENV, "0")
    env = _fresh_env(forkable)
    _, fresh_measured, fresh_log = run(tmp_path, ["signals"], env, "fresh.log")
    assert fresh_measured["how"] == "subprocess"
    forked, fresh = json.loads(log), json.loads(fresh_log)
    assert forked == fresh
    defaults = {"SIGTERM": signal.SIG_DFL, "SIGINT": signal.default_int_handler, "SIGCHLD": signal.SIG_DFL,
                "SIGHUP": signal.SIG_DFL}
    assert forked == {name: str(signal.SIG_IGN if _ignored_at_start(name) else default)
                      for name, default in defaults.items()}


def _ignored_at_start(name: str) -> bool:
    """Whether this process ignores the signal: as its parent started it (Python keeps an ignored disposition, and
    nothing in these tests changes one)."""
    mask = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("SigIgn:")).split()[1], 16)
    return bool(mask >> (getattr(signal, name) - 1) & 1)


def test_turned_off_or_another_env_starts_a_fresh_interpreter(tmp_path, forkable, monkeypatch):
    env = _fresh_env(forkable)
    # an environment the server was not started with: a module may read it at import
    code, measured, log = run(tmp_path, ["env"], env)
    assert (code, measured["how"]) == (0, "subprocess") and "start_s" not in measured
    seen = json.loads(log.splitlines()[0])
    assert seen["ppid"] == os.getpid() and seen["env"]["PYTHONPATH"] == env["PYTHONPATH"]
    monkeypatch.setenv(trial_process.FORKSERVER_ENV, "0")
    assert "turned off" in trial_process.server_problem()
    code, measured, _ = run(tmp_path, ["env"], {**forkable, trial_process.FORKSERVER_ENV: "0", **env}, "off.log")
    assert (code, measured["how"]) == (0, "subprocess")


# -- a tuner of its own: signals, its death, a server that cannot preload --------------------------------------
TUNER = """
import json, os, sys
from pathlib import Path
from hftl.tune import trial_process as tp
tp.PRELOAD = json.loads(sys.argv[1])
tp.FORKABLE.add("tune_process_stub")
measured = {}
try:
    code = tp.launch([sys.executable, "-m", "tune_process_stub", *sys.argv[3:]], Path(sys.argv[2]), dict(os.environ),
                     measured=measured)
    print(json.dumps({"code": code, **measured}))
except tp._Stop as err:
    print(json.dumps({"stopped": str(err), **measured}))
"""


def tuner(tmp_path, preload: list[str], *argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    env.pop(trial_process.FORKSERVER_ENV, None)
    return subprocess.Popen([sys.executable, "-c", TUNER, json.dumps(preload), str(tmp_path / "trial.log"), *argv],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, text: str, process: subprocess.Popen | None = None, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        content = path.read_text() if path.is_file() else ""
        if text in content:
            return content
        if process is not None and process.poll() is not None:
            pytest.fail(f"the tuner ended: {process.communicate()}")
        time.sleep(0.1)
    pytest.fail(f"{text!r} never reached {path}")


def test_sigterm_to_the_tuner_reaches_the_trial(tmp_path):
    process = tuner(tmp_path, [], "wait")
    wait_for(tmp_path / "trial.log", "ready", process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    result = json.loads(out)
    assert result["stopped"] == "SIGTERM" and result["how"] == "fork", (out, err)
    assert "got SIGTERM" in (tmp_path / "trial.log").read_text()


def test_a_trial_dies_with_its_tuner(tmp_path):
    """SIGKILL to the tuner: its server sees the end of its alive pipe and exits; the trial's PR_SET_PDEATHSIG,
    relative to the server, sends it SIGTERM."""
    process = tuner(tmp_path, [], "wait")
    wait_for(tmp_path / "trial.log", "ready", process)
    process.kill()
    process.wait()  # (not communicate: the server and the trial hold the tuner's stdout until they exit)
    wait_for(tmp_path / "trial.log", "got SIGTERM", timeout=30)


def test_a_server_that_cannot_preload_is_not_used(tmp_path):
    process = tuner(tmp_path, ["hftl_no_such_module"], "env")
    out, err = process.communicate(timeout=120)
    result = json.loads(out)
    assert (result["code"], result["how"]) == (0, "subprocess"), (out, err)
    assert "not forked from a preloaded server: the server could not import hftl_no_such_module" in err
    assert json.loads((tmp_path / "trial.log").read_text().splitlines()[0])["ppid"] == process.pid


def test_trial_start_benchmark_smoke(forkable, monkeypatch):
    """benchmarks/trial_start.py, both ways once, with a light import list (the real one takes seconds a start)."""
    monkeypatch.syspath_prepend(str(TESTS.parent / "benchmarks"))
    monkeypatch.setattr(trial_process, "PRELOAD", trial_process.PRELOAD)  # the benchmark sets it; restored after
    # the benchmark passes its environment; pytest changed PYTEST_CURRENT_TEST since the server started
    monkeypatch.setitem(trial_process._server, "env", dict(os.environ))
    import trial_start

    figures = trial_start.run(1, ["json"])
    assert figures["fresh_start_s"] > 0 and figures["fork_start_s"] > 0 and figures["fork_cpu_s"] > 0
    assert figures["ratio"] == pytest.approx(figures["fresh_start_s"] / figures["fork_start_s"])
    assert any("fork of the preloaded server (n=1)" in line for line in trial_start.render(figures))


STOPPING_TUNER = TUNER + """
tp.stop_server()
import resource
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"children_cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def test_stopping_the_server_counts_its_trials_cpu_as_the_tuners(tmp_path):
    """The tuner stops and reaps its server when it is done, so its trials' CPU seconds are its children's (getrusage,
    `time hftl tune`, a benchmark's accounting), as when trials were its own children; an unreaped server would take
    them along when it exits."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    env.pop(trial_process.FORKSERVER_ENV, None)
    out = subprocess.run([sys.executable, "-c", STOPPING_TUNER, "[]", str(tmp_path / "trial.log"), "burn", "1.0"],
                         env=env, capture_output=True, text=True, timeout=120)
    launched, stopped = (json.loads(line) for line in out.stdout.splitlines()[-2:])
    assert (launched["code"], launched["how"]) == (0, "fork"), out
    assert stopped["children_cpu_s"] >= 1.0, out
