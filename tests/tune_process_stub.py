"""A stand-in for `hftl.cli` in tests/test_tune_process.py: `python -m tune_process_stub ACTION ...`, or forked by
`hftl.tune.trial_process` as `main([ACTION, ...])` (the test adds it to `FORKABLE`). Imports nothing heavy."""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main(argv: list[str]) -> int | None:
    action, args = argv[0], argv[1:]
    if action == "env":  # what the trial sees, to its log
        print(json.dumps({"env": dict(os.environ), "pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv}))
        print("to stderr", file=sys.stderr)
        return 0
    if action == "return":
        return None if args[0] == "none" else int(args[0])
    if action == "exit":
        sys.exit(int(args[0]) if args[0].lstrip("-").isdigit() else args[0])
    if action == "raise":
        raise RuntimeError("the trial failed")
    if action == "state":  # module-level state in a module the server preloaded: a new process never has it
        import multiprocessing

        seen = getattr(multiprocessing, "_hftl_test_state", None)
        multiprocessing._hftl_test_state = os.getpid()
        print(json.dumps({"pid": os.getpid(), "seen": seen}))
        return 0
    if action == "burn":  # CPU for float(args[0]) seconds
        end = time.process_time() + float(args[0])
        while time.process_time() < end:
            pass
        return 0
    if action == "wait":  # until SIGTERM (then exit 7) or 120 s (exit 3)
        def on_term(signum, frame):
            print("got SIGTERM", flush=True)
            sys.exit(7)

        signal.signal(signal.SIGTERM, on_term)
        print("ready", flush=True)
        time.sleep(120)
        return 3
    if action == "signals":  # the dispositions a trial starts with
        names = ("SIGTERM", "SIGINT", "SIGCHLD", "SIGHUP")
        print(json.dumps({n: str(signal.getsignal(getattr(signal, n))) for n in names}))
        return 0
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
