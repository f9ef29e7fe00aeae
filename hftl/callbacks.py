"""Trainer callbacks that make a run survive faults: a clean stop on SIGINT/SIGTERM, a stop on non-finite loss; and
the live training log in the run folder (`hftl.training_log`), which `hftl ui` reads while a run trains.

Both are added to every Trainer `hftl.trainer.build_trainer` builds, so they apply to every task. Under
distributed training the decision to stop is agreed by all processes (one small all-reduce per step),
so no process is left waiting in a collective the others have abandoned.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time

from transformers import TrainerCallback

from hftl.errors import NonFiniteLossError, TrainingInterrupted
from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def any_process(flag: bool, device) -> bool:
    """True if `flag` is true on any process (a MAX all-reduce); just `flag` when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    import torch

    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


class GracefulStopCallback(TrainerCallback):
    """On SIGINT or SIGTERM: finish the current step, save a checkpoint, then raise `TrainingInterrupted`.

    A second signal while stopping gets the default behaviour back (Ctrl-C twice aborts at once).

    Args:
        resume_hint (`str`): the command that continues the run, quoted in the message.
        next_step (`str`, *optional*): what to do next, said instead of the resume command (a run that is not to be
            resumed: a trial of `hftl tune`).
    """

    def __init__(self, resume_hint: str = "hftl train CONFIG --resume", next_step: str | None = None):
        self.resume_hint = resume_hint
        self.next_step = next_step
        self.received: str | None = None
        self.stopped_at: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        logger.warning("%s received: stopping after this step and saving a checkpoint (send it again to abort now).",
                       self.received)
        self._restore()

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.received = self.stopped_at = None
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(self.received is not None, args.device):
            self.received = self.received or "a stop signal on another process"
            self.stopped_at = state.global_step
            control.should_save = True  # the Trainer saves checkpoint-<step> right after this event
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._restore()
        if self.stopped_at is not None:
            raise TrainingInterrupted(
                f"training stopped by {self.received} at step {self.stopped_at} of {state.max_steps}; "
                f"checkpoint saved in {args.output_dir}/checkpoint-{self.stopped_at}. "
                + (self.next_step or f"Continue the run with: {self.resume_hint}")
            )


class NonFiniteLossCallback(TrainerCallback):
    """Stop with `NonFiniteLossError` as soon as the training loss is NaN or infinite.

    The check runs before the optimizer step, so the weights in memory and every checkpoint on disk
    stay finite; nothing is saved after the bad step. It reads the Trainer's running loss, which needs
    `logging_nan_inf_filter=False` (hftl's default): with the filter on, the Trainer hides such steps.

    Args:
        trainer (`transformers.Trainer`): the trainer whose loss is watched.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    _warned = False

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # the Trainer's running loss: a private attribute of transformers 5.24 / 5.25's training loop, found only
        # while it trains (hftl.speed.private_hooks cannot probe it before); without it, `on_log` below catches a
        # non-finite loss, after the optimizer step
        running = getattr(self.trainer, "_tr_loss", None)
        if running is None:
            if not self._warned:
                self._warned = True
                logger.warning("the Trainer has no _tr_loss (private, checked on transformers 5.24, 5.25): a NaN or "
                               "infinite loss is caught from the logged loss, after the optimizer step")
            return control
        value = float(running.detach().float().sum().item()) if hasattr(running, "detach") else float(running)
        if any_process(not math.isfinite(value), args.device):
            self._fail(args, state, value)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Fallback for trainers without a running loss attribute.
        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            self._fail(args, state, loss)

    def _fail(self, args, state, value):
        step = state.global_step + 1
        kept = RunDir(args.output_dir).last_checkpoint(quiet=True)
        where = f"The last good checkpoint is {kept}" if kept else "No checkpoint was saved before it"
        raise NonFiniteLossError(
            f"the training loss became {value} at step {step} (epoch {state.epoch or 0:.2f}); training stopped "
            f"before the optimizer step, nothing after step {step - 1} was saved. {where}. Lower "
            "training.learning_rate, set training.max_grad_norm (e.g. 1.0), turn off fp16, or check the data "
            "for extreme values; then resume with --resume or start again with --overwrite."
        )

class TrainingLogCallback(TrainerCallback):
    """Append the Trainer's logs and a heartbeat (at most one a second) to the run folder's training log, from the
    main process only; the format is `hftl.training_log`'s."""

    #: seconds between two heartbeats
    heartbeat_s = 1.0

    def __init__(self):
        self._last_beat = 0.0

    def _write(self, args, state, record: dict) -> None:
        if not state.is_world_process_zero:
            return
        path = RunDir(args.output_dir).path / RunDir.TRAINING_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({**record, "time": round(time.time(), 3)}, default=_plain) + "\n")

    def _beat(self, args, state, phase: str) -> None:
        now = time.monotonic()
        if now - self._last_beat >= self.heartbeat_s:
            self._last_beat = now
            self._write(args, state, {"event": "progress", "phase": phase, "step": state.global_step,
                                      "epoch": state.epoch})

    def on_train_begin(self, args, state, control, **kwargs):
        self._write(args, state, {"event": "begin", "step": state.global_step, "max_steps": state.max_steps,
                                  "num_train_epochs": state.num_train_epochs})

    def on_step_end(self, args, state, control, **kwargs):
        self._beat(args, state, "train")

    def on_prediction_step(self, args, state, control, **kwargs):
        self._beat(args, state, "evaluate")

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._write(args, state, {"event": "log", **(logs or {}), "step": state.global_step})

    def on_train_end(self, args, state, control, **kwargs):
        self._write(args, state, {"event": "end", "step": state.global_step, "epoch": state.epoch})


def _plain(value):
    """numpy values (scalars, arrays) in logged metrics as JSON values."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues this run: the current one with `--resume` (for `hftl train`)."""
    argv = list(sys.argv if argv is None else argv)
    program = os.path.basename(argv[0]) if argv else ""
    if program in ("hftl", "cli.py", "__main__.py") and len(argv) > 1 and argv[1] == "train":
        args = [a for a in argv[1:] if a != "--overwrite"]
        return shlex.join(["hftl", *args] + ([] if "--resume" in args else ["--resume"]))
    return "the same command with resume: true in the config (--set resume=true)"


def add_default_callbacks(trainer) -> None:
    """Add hftl's callbacks to `trainer`; its `train` then restores the signal handlers however it ends."""
    stop = GracefulStopCallback(resume_command())
    trainer.add_callback(stop)
    trainer.add_callback(NonFiniteLossCallback(trainer))
    trainer.add_callback(TrainingLogCallback())
    train = trainer.train

    @functools.wraps(train)
    def train_restoring_handlers(*args, **kwargs):
        try:
            return train(*args, **kwargs)
        finally:  # an error mid-training skips on_train_end: Ctrl-C must not stay captured
            stop._restore()

    trainer.train = train_restoring_handlers
