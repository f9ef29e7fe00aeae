"""Run a training command with timing probes in every `transformers.Trainer` it builds.

    python benchmarks/probe.py OUT.json -- hftl train config.yaml
    python benchmarks/probe.py OUT.json -- benchmarks/baselines.py --variant best ...

The same probes wrap hftl and the baselines, so their cost is shared. OUT.json gets:
    t_first_step   seconds from the launch (env BENCH_T0, set by the suite) to the first optimizer step's start
    train_s        seconds inside `Trainer.train`, minus the evaluations run during training
    eval_s         seconds in `Trainer.evaluate` / `Trainer.predict` (during and after training)
    train_samples   examples fed to the model in training (rows of input_ids, or of pixel_values for images; DPO's
                    batches hold each pair's chosen and rejected rows)
    train_tokens, train_nonpad_tokens   input_ids elements fed to the model, and those the attention mask keeps
                    (all of them when there is no mask, as in packed causal-LM blocks); 0 for images
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import shutil
import sys
import time
import types


def install(out_path: str) -> None:
    import transformers
    from transformers import Trainer, TrainerCallback

    t0 = float(os.environ.get("BENCH_T0", time.time()))
    stats = {"t_first_step": None, "train_s": 0.0, "eval_s": 0.0, "eval_in_train_s": 0.0,
             "checkpoint_s": 0.0, "save_model_s": 0.0, "train_samples": 0, "train_tokens": 0, "train_nonpad_tokens": 0, "train_steps": 0}
    state = {"in_train": False, "in_loss": False}

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if stats["t_first_step"] is None:
                stats["t_first_step"] = time.time() - t0

        def on_step_end(self, args, state, control, **kwargs):
            stats["train_steps"] += 1

    original_init, original_train = Trainer.__init__, Trainer.train
    original_compute_loss = Trainer.compute_loss

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(Probe())
        if type(self).compute_loss is not Trainer.compute_loss:  # a subclass's own loss (TRL's DPOTrainer)
            self.compute_loss = types.MethodType(counted(type(self).compute_loss), self)

    def train(self, *args, **kwargs):
        state["in_train"], start, eval_before = True, time.perf_counter(), stats["eval_s"]
        try:
            return original_train(self, *args, **kwargs)
        finally:
            state["in_train"] = False
            in_train_eval = stats["eval_s"] - eval_before
            stats["eval_in_train_s"] += in_train_eval
            stats["train_s"] += time.perf_counter() - start - in_train_eval

    def count(inputs):
        mask = inputs.get("attention_mask")
        ids = inputs.get("input_ids")
        if ids is not None:
            stats["train_samples"] += int(ids.shape[0]) if ids.dim() > 1 else 1
            stats["train_tokens"] += int(ids.numel())
            # packed causal-LM blocks carry no mask (or one of all ones): every token counts
            stats["train_nonpad_tokens"] += int(mask.sum()) if mask is not None else int(ids.numel())
        elif inputs.get("pixel_values") is not None:  # images: samples only, no tokens
            stats["train_samples"] += int(inputs["pixel_values"].shape[0])

    def counted(method):
        """`method` (a compute_loss) counting its training batch once, also when it calls another compute_loss."""
        def wrapper(self, model, inputs, *args, **kwargs):
            outer = state["in_loss"]
            if model.training and not outer:
                count(inputs)
            state["in_loss"] = True
            try:
                return method(self, model, inputs, *args, **kwargs)
            finally:
                state["in_loss"] = outer
        return wrapper

    compute_loss = counted(original_compute_loss)

    def timed(method, key):
        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                stats[key] += time.perf_counter() - start

        return wrapper

    Trainer.__init__, Trainer.train, Trainer.compute_loss = init, train, compute_loss
    Trainer.evaluate, Trainer.predict = timed(Trainer.evaluate, "eval_s"), timed(Trainer.predict, "eval_s")
    # checkpoints are saved inside `train` (so they count in train_s); the final model after it
    Trainer._save_checkpoint = timed(Trainer._save_checkpoint, "checkpoint_s")
    save_model, timed_save_model = Trainer.save_model, timed(Trainer.save_model, "save_model_s")
    Trainer.save_model = lambda self, *a, **kw: (save_model if kw.get("_internal_call") else timed_save_model)(self, *a, **kw)

    def write():
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump({**stats, "transformers": transformers.__version__}, handle, indent=2)

    atexit.register(write)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out_path, command = argv[0], argv[2:]
    install(out_path)
    sys.argv = command
    if command[0].endswith(".py"):
        runpy.run_path(command[0], run_name="__main__")
        return 0
    # a console script such as `hftl`: run its entry point in this process
    from importlib.metadata import entry_points

    entry = next((e for e in entry_points(group="console_scripts") if e.name == command[0]), None)
    if entry is None:
        raise SystemExit(f"probe: no console script '{command[0]}' (found {shutil.which(command[0])})")
    return entry.load()() or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
