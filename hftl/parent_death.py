"""Child processes that stop when their parent dies, even by SIGKILL (which runs no clean-up of the parent's).

Linux only: `prctl(PR_SET_PDEATHSIG)` has the kernel send the child a signal when the parent *thread* that started
it exits, so a caller starts its children from a thread that lives as long as it does (the main thread, or a worker
thread that never returns). Elsewhere, or where libc's `prctl` cannot be loaded, children outlive a killed parent
as before, and the reason is logged.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death_signal(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A function that, called in a child process, asks for `signum` when the parent dies: for
    `subprocess.Popen(preexec_fn=...)`, or to call right after `os.fork()`. None where it is unavailable.

    libc is loaded here, in the parent: the child only makes the call. Between fork and exec a child of a
    threaded parent must not import or take locks that another thread might have held (`subprocess`'s warning).
    """
    if not sys.platform.startswith("linux"):
        logger.info("child processes outlive a killed parent on %s: PR_SET_PDEATHSIG is Linux's", sys.platform)
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError) as err:
        logger.info("child processes outlive a killed parent: libc's prctl is unavailable (%s)", err)
        return None

    def ask_for_signal() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum))

    return ask_for_signal
