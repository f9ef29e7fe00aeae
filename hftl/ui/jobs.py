"""Training jobs: `hftl train` subprocesses run one after another from a queue, stopped the way Ctrl-C stops them.

The UI launches exactly the command a user would type (`python -m hftl.cli train CONFIG [--resume]`), so the run
gets the CLI's checks, fault handling and records. Stop sends SIGINT: `hftl.callbacks.GracefulStopCallback`
finishes the step, saves a checkpoint and exits with status 130; Resume queues the same config with `--resume`.
Each job's output goes to a log file under the root's `.hftl-ui/logs/`, with anything that looks like a token
masked (`redact`). `hftl ui --job-niceness N` runs the jobs at a lower CPU priority than the UI, so that a job
training on every core slows the pages less (docs/ui.md).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hftl.parent_death import parent_death_signal

#: the folder under the root where the UI keeps its configs and job logs (hidden: never listed as a run)
UI_FOLDER = ".hftl-ui"
QUEUED, RUNNING, STOPPING, FINISHED, FAILED, STOPPED, CANCELLED = (
    "queued", "running", "stopping", "finished", "failed", "stopped", "cancelled")
#: exit status of `hftl train` after a graceful stop (`hftl.errors.TrainingInterrupted`)
INTERRUPTED_EXIT = 130
#: how much lower than the UI's a job's CPU priority is by default (its nice value above the UI's): the same. A
#: lower priority keeps the pages quicker while a job trains (docs/ui.md) but slows the job against every other
#: program at normal priority, which a user who launched it would not expect
JOB_NICENESS = 0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TOKEN = re.compile(r"\b(hf_[A-Za-z0-9]{8,}|api_org_[A-Za-z0-9]{8,})")
logger = logging.getLogger(__name__)


def redact(text: str) -> str:
    """`text` with Hugging Face tokens masked: a job's log is shown in the page and must not show one."""
    return _TOKEN.sub("hf_***", text)


@dataclass
class Job:
    """One `hftl train` command in the queue."""

    id: int
    name: str
    config: Path
    run_dir: Path
    resume: bool = False
    overwrite: bool = False
    seeds: int = 1
    overrides: list = field(default_factory=list)
    status: str = QUEUED
    returncode: int | None = None
    log_file: Path | None = None
    started: float | None = None
    ended: float | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "hftl.cli", "train", str(self.config)]
        if self.resume:
            cmd.append("--resume")
        if self.overwrite:
            cmd.append("--overwrite")
        if self.seeds > 1:
            cmd += ["--seeds", str(self.seeds)]
        for override in self.overrides:
            cmd += ["--set", override]
        return cmd

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the job's output (progress bars' carriage returns folded)."""
        if not self.log_file or not self.log_file.is_file():
            return ""
        with self.log_file.open("rb") as handle:
            handle.seek(max(0, self.log_file.stat().st_size - 64_000))
            text = handle.read().decode("utf-8", errors="replace")
        shown = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
        return redact(_ANSI.sub("", "\n".join([line for line in shown if line.strip()][-lines:])))


class JobQueue:
    """Runs queued jobs one at a time in a background thread.

    Args:
        root (`Path`): the runs folder; the subprocesses run there (relative output folders land in it).
        niceness (`int`): how much lower than the UI's the jobs' CPU priority is (`lower_priority`).
    """

    def __init__(self, root: Path, niceness: int = JOB_NICENESS):
        self.root = Path(root)
        self.niceness = niceness
        self.jobs: list[Job] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_with_ui = parent_death_signal(signal.SIGTERM)
        self._thread = threading.Thread(target=self._work, name="hftl-ui-jobs", daemon=True)
        self._thread.start()
        atexit.register(self.stop_all)

    def stop_all(self) -> None:
        """Stop every running job gracefully (the UI is closing: its runs keep a resumable checkpoint)."""
        for job in list(self.jobs):
            if job.status == RUNNING:
                self.stop(job)

    def submit(self, name: str, config: Path, run_dir: Path, resume: bool = False, overwrite: bool = False,
               seeds: int = 1, overrides: list[str] = ()) -> Job:
        job = Job(next(self._ids), name, Path(config), Path(run_dir), resume=resume, overwrite=overwrite, seeds=seeds,
                  overrides=list(overrides))
        logs = self.root / UI_FOLDER / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        job.log_file = logs / f"job-{job.id}-{name}.log"
        with self._lock:
            self.jobs.append(job)
        self._wake.set()
        return job

    def get(self, job_id) -> Job | None:
        return next((j for j in self.jobs if str(j.id) == str(job_id)), None)

    def current(self) -> Job | None:
        return next((j for j in self.jobs if j.status in (RUNNING, STOPPING)), None)

    def running_dirs(self) -> set[str]:
        return {str(j.run_dir.resolve()) for j in self.jobs if j.status in (RUNNING, STOPPING)}

    def stop(self, job: Job) -> str:
        """Stop `job` gracefully (SIGINT: checkpoint, then exit), or take it off the queue if it has not started."""
        with self._lock:
            if job.status == QUEUED:
                job.status = CANCELLED
                return f"job {job.id} ({job.name}) taken off the queue"
            if job.status != RUNNING or job.process is None:
                return f"job {job.id} ({job.name}) is {job.status}: nothing to stop"
            job.status = STOPPING
            job.process.send_signal(signal.SIGINT)
        return (f"job {job.id} ({job.name}): stop requested; it finishes the current step and saves a checkpoint "
                "(Resume continues it)")

    def _next(self) -> Job | None:
        with self._lock:
            job = next((j for j in self.jobs if j.status == QUEUED), None)
            if job is not None:
                job.status = RUNNING
            return job

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_parent(), env.get("PYTHONPATH")) if p)
        job.started = time.time()
        with job.log_file.open("ab") as log:
            log.write(("$ hftl " + " ".join(job.command()[3:]) + "\n").encode())
            log.flush()
            try:
                # SIGTERM if the UI is killed (its atexit stop never runs): the job saves a checkpoint and stops.
                # This thread lives as long as the UI, as PR_SET_PDEATHSIG needs.
                job.process = subprocess.Popen(job.command(), cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=env, preexec_fn=self._stop_with_ui)
            except OSError as err:
                log.write(f"could not start: {err}\n".encode())
                job.status, job.ended = FAILED, time.time()
                return
            lower_priority(job.process.pid, self.niceness)
            if job.status == STOPPING:  # stopped before the process existed
                job.process.send_signal(signal.SIGINT)
            job.returncode = job.process.wait()
        job.ended = time.time()
        job.status = (FINISHED if job.returncode == 0 else
                      STOPPED if job.returncode == INTERRUPTED_EXIT or job.status == STOPPING else FAILED)


def lower_priority(pid: int, niceness: int) -> None:
    """Raise process `pid`'s nice value `niceness` above this process's (at most 19), where the OS allows it.

    Called right after the job's process starts, while its interpreter has a single thread: the threads it starts
    later (torch's among them) inherit the value. Where this fails (no `os.setpriority`, or refused), the job runs
    at the UI's priority and the reason is logged."""
    if niceness <= 0:
        return
    if not hasattr(os, "setpriority"):
        logger.info("jobs run at the UI's CPU priority: os.setpriority is not available on this platform")
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness))
    except OSError as err:  # the process already exited, or the OS refused
        logger.info("job process %d runs at the UI's CPU priority: %s", pid, err)


def _package_parent() -> str:
    """The folder holding this `hftl` package: the subprocess imports the same code as the UI."""
    return str(Path(__file__).resolve().parents[2])
