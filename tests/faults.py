"""Faults injected into training runs by the tests: a signal sent at a given step."""

from __future__ import annotations

import os


def signal_at_step(signum: int, step: int, event: str = "on_step_end"):
    """Make every `transformers.Trainer` built from now on send `signum` to its own process when `global_step`
    equals `step` at `event` (`on_step_begin` or `on_step_end`); returns a function that undoes it."""
    import transformers

    class Fault(transformers.TrainerCallback):
        def _check(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signum)

    setattr(Fault, event, Fault._check)
    original = transformers.Trainer.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Fault())

    transformers.Trainer.__init__ = __init__
    return lambda: setattr(transformers.Trainer, "__init__", original)
