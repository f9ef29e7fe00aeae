"""The lock a run holds on its folder, so that two runs never write one folder (`RunDir.lock()`).

The lock is a file in the run folder (`RunDir.LOCK`), created with `O_CREAT | O_EXCL` (one creator wins, on local
and NFS v3+ file systems) by the run's main process alone, holding who holds it: host, process id, the process's
start time (so that a reused pid is not mistaken for the holder), when and by which command. A second run finds it
and refuses, naming the holder. A lock whose holder is gone (same host, that pid not running or started at
another time) was left by a killed run: it is cleared, with a warning, and taken. The lock is released when the run
ends, however it ends short of being killed. `hftl tune` workers lock each trial's folder the same way.

Not covered: a lock held on another host cannot be checked from here; the message says how to clear it by hand.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from hftl.errors import HftlError

logger = logging.getLogger(__name__)

#: an unreadable lock younger than this is being written by its creator; older, its creator died writing it
_BEING_WRITTEN_S = 30.0


class RunFolderInUse(HftlError):
    """Another live run holds the run folder's lock."""


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux's /proc), or None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before it may hold spaces


def _alive(pid: int, started: str | None) -> bool:
    """Whether process `pid` of this host runs and is the one that started at `started` (where recorded)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


class RunLock:
    """The lock on run folder `path`, held by this process from `acquire()` to `release()` (or the `with` block).

    Args:
        lock_file (`Path`): the lock file (`RunDir.lock_file`).
    """

    def __init__(self, lock_file: Path):
        self.path = Path(lock_file)
        self.held = False

    def holder(self) -> dict | None:
        """What the lock file says of its holder ({} if it cannot be read), or None where there is no lock."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _stale_reason(self, holder: dict) -> str | None:
        """Why the lock's holder is gone, or None if it may be running."""
        if not holder:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return "it was just released"
            return f"it is unreadable and {age:.0f} s old" if age > _BEING_WRITTEN_S else None
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return None  # another machine's process: it cannot be checked from here
        if not _alive(holder["pid"], holder.get("process_start")):
            return f"process {holder['pid']} is no longer running on {holder['host']}"
        return None

    def in_use_by(self) -> str | None:
        """Why the folder cannot be locked now (another live run holds it, named), or None."""
        holder = self.holder()
        if holder is None or self._stale_reason(holder) is not None:
            return None
        return self._in_use_message(holder)

    def acquire(self) -> "RunLock":
        """Take the lock; clear a lock left by a killed run; `RunFolderInUse` naming the holder if it is held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock cleared, or one released between our two looks, gets another try
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue
                reason = self._stale_reason(holder)
                if reason is None:
                    raise RunFolderInUse(self._in_use_message(holder)) from None
                logger.warning("%s: clearing the lock of a run that ended without releasing it (%s): %s",
                               self.path.parent, reason, _describe(holder))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self._record(), f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise RunFolderInUse(f"{self.path.parent}: could not take the run folder's lock {self.path.name} after "
                             "three tries; another run is starting there. Choose another training.output_dir.")

    def release(self) -> None:
        """Give the lock up (only the lock this process holds is removed)."""
        if not self.held:
            return
        self.held = False
        holder = self.holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @staticmethod
    def _record() -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]][:12]}

    def _in_use_message(self, holder: dict) -> str:
        folder = self.path.parent
        if not holder:
            return (f"{folder} is in use: another run is creating its lock {self.path.name} right now. Choose "
                    "another training.output_dir, or wait for that run to end.")
        return (f"{folder} is in use by another run: {_describe(holder)}. Two runs cannot write one folder. Wait "
                "for it to end, or choose another training.output_dir. If that run is no longer running (on "
                f"another machine, which cannot be checked from here), delete {self.path}.")


def _describe(holder: dict) -> str:
    command = " ".join(holder.get("command") or [])
    return (f"process {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
            + (f" ({command})" if command else ""))
