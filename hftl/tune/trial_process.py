"""A trial's process: `hftl train CONFIG --set ...` in a new process per trial, forked from a server that has
already imported what a trial imports (torch, transformers, datasets, ...), or started as a fresh interpreter.

Why a fork server: a fresh interpreter spends about 6 s importing before a trial does anything, which is 16% of a
40 s trial. The server (Python's `multiprocessing` "forkserver", started once per tuner, on its first trial) pays
the imports once (`hftl.tune.trial_preload`); each trial is then a fork of it: still a process of its own, which
exits when its trial ends, so nothing a trial does reaches the next one.

What forking relies on, checked before the first trial (`server_problem`; any failure: every trial of this tuner
starts as a fresh interpreter, the reason logged):
- the server only imports: no Python thread, no torch operation, CUDA not initialised. The one thread it holds is
  pyarrow's jemalloc background thread (`datasets` imports pyarrow), which jemalloc's fork handlers look after, as
  for every forked DataLoader worker or `datasets.map(num_proc=...)`;
- the server's environment is the tuner's: a trial whose environment differs in anything but `HFTL_TUNE_TRIAL` (read
  when training starts, not at import) starts as a fresh interpreter, as a module may read the environment when
  imported;
- the trial dies with its tuner: the trial closes its copy of the server's "alive" pipe, so the server exits when
  the tuner does (end of file on that pipe), and the trial's PR_SET_PDEATHSIG, relative to the server, then sends it
  SIGTERM.
Forked trials share the server's hash seed and numpy's global random state (a fresh interpreter draws its own);
runs seed what they use (`training.seed`), so results do not depend on either.

`HFTL_TUNE_FORKSERVER=0` turns the server off. Trials under `--launcher` (e.g. `accelerate launch`) always start
their command as given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

from hftl.parent_death import parent_death_signal

logger = logging.getLogger(__name__)

#: set to 0 to start every trial as a fresh interpreter
FORKSERVER_ENV = "HFTL_TUNE_FORKSERVER"
#: what the server imports (tests replace it by a lighter list)
PRELOAD = ["hftl.tune.trial_preload"]
#: `python -m MODULE ARGS` commands a fork runs as `MODULE.main(ARGS)` (what their `__main__` block does)
FORKABLE = {"hftl.cli"}
#: threads a forked server may hold: pyarrow's jemalloc background thread, handled by jemalloc's fork handlers
ALLOWED_SERVER_THREADS = {"jemalloc_bg_thd"}
#: variables a trial's environment may differ in from the server's: read when training starts, never at import
#: (`hftl.tune.report.TRIAL_ENV`; not imported from there, which would import transformers into every caller)
PER_TRIAL_ENV = ("HFTL_TUNE_TRIAL",)
#: how long a trial has to stop after SIGTERM (it saves a checkpoint) before it is killed
STOP_GRACE_S = 120.0


class _Stop(Exception):
    """SIGTERM reached the worker: finish the trial's process cleanly, mark the trial failed, stop."""


def _cpu_s(*whos: str) -> float:
    """CPU seconds (user + system) of `getrusage(RUSAGE_<who>)` for each of `whos` ("SELF", "CHILDREN")."""
    import resource

    usages = [resource.getrusage(getattr(resource, f"RUSAGE_{who}")) for who in whos]
    return sum(u.ru_utime + u.ru_stime for u in usages)


def process_alive(pid: int) -> bool:
    """Whether process `pid` on this machine is alive (a killed one not yet reaped by its parent, a zombie, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


# -- started as a fresh interpreter --------------------------------------------------------------------------
class SubprocessTrial:
    """`command` as a process of its own (output to `log_path`); its CPU seconds from this process's
    RUSAGE_CHILDREN (a worker waits for one trial process at a time)."""

    how = "subprocess"

    def __init__(self, command: list[str], log_path: Path, env: dict):
        self._cpu_before = _cpu_s("CHILDREN")
        with open(log_path, "ab") as log:
            # SIGTERM when the worker dies: the trial then saves a checkpoint and stops
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             preexec_fn=parent_death_signal(signal.SIGTERM))
        self.pid = self._process.pid

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, signum: int) -> None:
        self._process.send_signal(signum)

    def measured(self) -> dict:
        return {"how": self.how, "cpu_s": _cpu_s("CHILDREN") - self._cpu_before}


# -- forked from the server ----------------------------------------------------------------------------------
_server: dict = {}  # this tuner's server: {"problem": str | None, "env": the environment it started with}


def _forkserver_context():
    import multiprocessing

    return multiprocessing.get_context("forkserver")


@contextlib.contextmanager
def _main_module_hidden():
    """multiprocessing imports the parent's `__main__` into each fork (a script without the `if __name__ ==
    "__main__"` guard would run again there); a trial runs `hftl.cli`'s main, never the tuner's, so `start()` is
    shown a `__main__` without a file or spec. This process starts trials from one thread."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _close_alive_pipe() -> bool:
    """Close this fork's copy of the server's "alive" pipe (multiprocessing hands one to every fork), so the server
    sees end of file, and exits, when the tuner dies, even while a trial runs. False where multiprocessing keeps it
    elsewhere (another Python): then the trial would outlive a killed tuner, and the server is not used."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if not isinstance(fd, int):
        return False
    os.close(fd)
    server._forkserver_alive_fd = None
    return True


def stop_server() -> None:
    """Stop this tuner's server, if it started one, and wait for it: the trials it forked (and reaped) then count as
    this process's children in `getrusage` (`time hftl tune`, a benchmark's CPU accounting), as trials started as our
    own children do; a server left to exit with the tuner would be reaped by init, their CPU time with it. Relies on
    multiprocessing's private `forkserver._forkserver._stop()` (closes the alive pipe, waits for the server); where
    it is missing the server exits with the tuner as before, and the reason is logged."""
    if _server.get("problem", "not started") is not None:
        return  # no server in use here
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is None:
        logger.info("the trials' fork server is left to exit with this process (multiprocessing has no "
                    "forkserver._forkserver._stop here): its trials' CPU time is not counted as this process's.")
        return
    stop()
    _server.clear()  # a later trial starts a new server


def _probe(conn, preload: list[str]) -> None:  # runs in a fork of the server
    """What the server's state lets a fork rely on (checked by `server_problem`)."""
    tasks = Path(f"/proc/{os.getppid()}/task")
    try:
        threads = sorted(Path(tasks, t, "comm").read_text().strip() for t in os.listdir(tasks))
    except OSError:
        threads = None
    torch = sys.modules.get("torch")
    conn.send({"missing": [m for m in preload if m not in sys.modules], "threads": threads,
               "cuda_initialized": bool(torch and torch.cuda.is_initialized()),
               "alive_pipe_closed": _close_alive_pipe(), "hftl": sys.modules["hftl"].__file__
               if "hftl" in sys.modules else None})
    conn.close()


def _import_error(modules: list[str]) -> str:
    """Why `modules` do not import here (the server swallows ImportError)."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any failure is the reason
            return f"{name}: {type(err).__name__}: {err}"
    return ", ".join(modules)


def server_problem() -> str | None:
    """Why trials cannot be forked from the server (None: they can), starting the server on the first call."""
    if os.environ.get(FORKSERVER_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"turned off ({FORKSERVER_ENV}={os.environ[FORKSERVER_ENV]})"
    if "problem" in _server:
        return _server["problem"]
    problem = None
    try:
        if not sys.platform.startswith("linux"):
            raise RuntimeError(f"not Linux ({sys.platform})")
        import multiprocessing.forkserver

        context = _forkserver_context()
        context.set_forkserver_preload(list(PRELOAD))
        _server["env"] = dict(os.environ)
        multiprocessing.forkserver.ensure_running()
        receive, send = context.Pipe(duplex=False)
        probe = context.Process(target=_probe, args=(send, list(PRELOAD)), name="hftl-trial-probe")
        with _main_module_hidden():
            probe.start()
        send.close()
        report = receive.recv() if receive.poll(600) else None
        probe.join(30)
        receive.close()
        if report is None:
            problem = f"the server did not answer (exit code {probe.exitcode})"
        elif report["missing"]:
            problem = f"the server could not import {_import_error(report['missing'])}"
        elif report["threads"] is None or len(report["threads"]) - 1 > sum(
                t in ALLOWED_SERVER_THREADS for t in report["threads"]):
            problem = f"the server holds threads ({report['threads']}): forking it is not safe"
        elif report["cuda_initialized"]:
            problem = "the server initialised CUDA: a fork could not use it"
        elif not report["alive_pipe_closed"]:
            problem = "multiprocessing keeps the server's alive pipe elsewhere: a trial would outlive its tuner"
        elif "hftl" in sys.modules and report["hftl"] != sys.modules["hftl"].__file__:
            problem = f"the server imported hftl from {report['hftl']}, this tuner from {sys.modules['hftl'].__file__}"
    except Exception as err:  # noqa: BLE001 - whatever fails, trials start as fresh interpreters
        problem = f"{type(err).__name__}: {err}"
    _server["problem"] = problem
    if problem:
        logger.warning("trials start as fresh interpreters, not forked from a preloaded server: %s", problem)
    else:
        logger.info("trials are forked from a server that has imported %s", ", ".join(PRELOAD) or "nothing")
    return problem


def _trial_main(module: str, argv: list[str], env: dict, log_path: str, conn, tuner_pid: int) -> None:
    """In the fork: become `python -m MODULE ARGV` with `env`, output to `log_path`, and report to the tuner when
    `MODULE.main` was entered and the CPU seconds it took. `sys.exit` with main's status, as `-m` does."""
    import atexit
    import importlib
    import traceback

    alive_closed = _close_alive_pipe()
    ask_for_signal = parent_death_signal(signal.SIGTERM)
    if ask_for_signal is not None:
        ask_for_signal()  # relative to the server, which exits when the tuner does (see the module's docstring)
    if not process_alive(tuner_pid):  # the tuner died before the line above: nobody waits for this trial
        os._exit(1)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(env)
    entry = importlib.import_module(module)
    sys.argv = [entry.__file__, *argv]
    code, interrupted = 1, False
    conn.send({"entered": time.time(), "alive_pipe_closed": alive_closed})
    try:
        code = entry.main(argv)
    except SystemExit as err:  # what the interpreter makes of it
        code = err.code
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: BLE001 - printed, exit status 1, as an uncaught exception does
        traceback.print_exc()
        code = 1
    finally:
        if hasattr(atexit, "_run_exitfuncs"):  # an interpreter runs them on exit; multiprocessing ends with _exit
            atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        try:
            conn.send({"cpu_s": _cpu_s("SELF", "CHILDREN")})
            conn.close()
        except OSError:  # the tuner is gone
            pass
    if interrupted:  # as the interpreter does on an uncaught Ctrl-C: die of SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.exit(code)


class ForkedTrial:
    """`python -m MODULE ARGV` as a fork of the server: `MODULE.main(ARGV)` with `env`, output to `log_path`."""

    how = "fork"

    def __init__(self, module: str, argv: list[str], log_path: Path, env: dict, started: float | None = None):
        context = _forkserver_context()
        self._reports, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_trial_main, name="hftl-trial",
                                        args=(module, list(argv), dict(env), str(log_path), send, os.getpid()))
        self.started = started or time.time()
        with _main_module_hidden():
            self._process.start()
        send.close()
        self.pid = self._process.pid
        self._report: dict = {}

    def wait(self, timeout: float | None) -> int | None:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is not None and process_alive(self.pid):
            # the server died under the trial (its exit code is then 255): the trial got SIGTERM from it; wait as
            # for a stopped trial, so that no two trials of this worker ever run at once
            deadline = time.time() + STOP_GRACE_S
            while process_alive(self.pid) and time.time() < deadline:
                time.sleep(0.5)
            if process_alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        return code

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signum)

    def measured(self) -> dict:
        try:
            while self._reports.poll():
                self._report.update(self._reports.recv())
        except (EOFError, OSError):
            pass
        out = {"how": self.how, "cpu_s": self._report.get("cpu_s")}
        if "entered" in self._report:
            out["start_s"] = self._report["entered"] - self.started
        return out


def _forkable(command: list[str]) -> str | None:
    """The module of a `this-python -m MODULE ...` command a fork can run (None: start the command as given)."""
    if len(command) >= 3 and command[0] == sys.executable and command[1] == "-m" and command[2] in FORKABLE:
        return command[2]
    return None


def start_trial_process(command: list[str], log_path: Path, env: dict):
    """The trial's process: forked from the server where the command is `python -m hftl.cli ...` and the server
    can be used, else `command` as a process of its own. The first forked trial's start includes the server's."""
    started, module = time.time(), _forkable(command)
    if module and not server_problem():
        differ = sorted(k for k in set(env) | set(_server["env"]) if k not in PER_TRIAL_ENV
                        and env.get(k) != _server["env"].get(k))
        if not differ:
            return ForkedTrial(module, command[3:], log_path, env, started)
        logger.info("this trial's environment differs from the fork server's (%s): it starts as a fresh interpreter",
                    ", ".join(differ[:5]))
    return SubprocessTrial(command, log_path, env)


def launch(command: list[str], log_path: Path, env: dict, beat=None, heartbeat_s: float = 10.0,
           measured: dict | None = None) -> int:
    """Run `command` (output to `log_path`), calling `beat()` every `heartbeat_s` seconds; on SIGTERM or Ctrl-C the
    process is asked to stop (it saves a checkpoint) and `_Stop` is raised once it has. Its exit status is returned;
    `measured` (if given) receives how it started ("how"), its CPU seconds ("cpu_s", None if unknown) and, for a
    forked trial, the seconds from its start to entering `hftl.cli`'s main ("start_s")."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process = start_trial_process(command, log_path, env)

    def stop(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            code = process.wait(heartbeat_s)
            if code is not None:
                return code
            if beat:
                beat()
    except (_Stop, KeyboardInterrupt) as err:
        if isinstance(err, _Stop):  # Ctrl-C reached the whole process group already; a second signal aborts
            process.send_signal(signal.SIGTERM)
        if process.wait(STOP_GRACE_S) is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        raise _Stop(str(err) or "SIGINT") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if measured is not None:
            measured.update(process.measured())
