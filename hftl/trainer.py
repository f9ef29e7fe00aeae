"""Build the `transformers.Trainer` for a recipe: hftl's defaults under the user's `training` settings."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_TRAIN_BATCH = 32


def bf16_is_fast() -> bool:
    """True where bfloat16 autocast runs natively: Ampere+ GPUs, CPUs with AVX512-BF16 or AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    is_supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(is_supported and is_supported())


def training_arguments(config, task_defaults: dict | None = None, auto_eval_batch_size_factor: int = 4):
    """`TrainingArguments` from hftl's defaults, the task's, then the user's `training` section (which wins).

    `auto_eval_batch_size_factor` is what `speed.eval_batch_size_factor: auto` means for the task.
    """
    from transformers import TrainingArguments

    speed = config.speed
    train_batch = config.training.get("per_device_train_batch_size", DEFAULT_TRAIN_BATCH)
    factor = auto_eval_batch_size_factor if speed.eval_batch_size_factor == "auto" else speed.eval_batch_size_factor
    defaults = {
        "per_device_train_batch_size": train_batch,
        "per_device_eval_batch_size": train_batch * factor,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 2,
        "logging_steps": 50,
        "report_to": "none",
        "seed": 42,
        "bf16": bf16_is_fast() if speed.bf16 == "auto" else speed.bf16,
        # Keep NaN/inf losses visible: `hftl.callbacks.NonFiniteLossCallback` stops the run on them.
        "logging_nan_inf_filter": False,
    }
    if "save_steps" in config.training and "save_strategy" not in config.training:
        defaults["save_strategy"] = "steps"  # `training.save_steps: N` alone means a checkpoint every N steps
    if speed.group_by_length:
        defaults["train_sampling_strategy"] = "group_by_length"
    import torch

    if defaults["bf16"] and not torch.cuda.is_available():
        defaults["use_cpu"] = True  # transformers allows CPU bf16 autocast only when told it is on CPU
    kwargs = {**defaults, **(task_defaults or {}), **config.training}
    kwargs.setdefault("data_seed", kwargs["seed"])
    return TrainingArguments(**kwargs)


def build_trainer(recipe, model, datasets: dict, processor, args):
    speed = recipe.config.speed
    trainer = trainer_class()(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("validation"),
        data_collator=recipe.data_collator(processor),
        processing_class=processor,
        compute_metrics=recipe.compute_metrics(),
    )
    from hftl.callbacks import add_default_callbacks

    add_default_callbacks(trainer)  # clean stop on SIGINT/SIGTERM, stop on non-finite loss
    if not recipe.loss_is_token_mean:
        # transformers 5 models take **kwargs, so Trainer assumes their loss is a sum divided by
        # num_items_in_batch and multiplies it by the number of processes (and skips gradient-
        # accumulation scaling). Classification losses are per-example means: undo that assumption.
        trainer.model_accepts_loss_kwargs = False
    # Trainer's eval loss is a mean of batch means: for token-mean losses (language models) sorting
    # would change which tokens share a batch and so the reported loss; per-example losses are unaffected.
    trainer.sort_eval_by_length = speed.sort_eval_by_length and not recipe.loss_is_token_mean
    trainer.length_buckets = speed.length_buckets
    # with load_best_model_at_end the weights change after the last evaluation: nothing to reuse
    trainer.reuse_final_eval = speed.reuse_final_eval and not args.load_best_model_at_end
    if speed.cheap_dropout is True or (speed.cheap_dropout == "auto" and args.device.type == "cpu"):
        from hftl.speed.cheap_dropout import use_cheap_dropout

        logger.info("cheap dropout masks in %d dropout layers", use_cheap_dropout(trainer.model))
    if speed.first_token_last_layer is not False:
        from hftl.speed.first_token_last_layer import use_first_token_last_layer

        if use_first_token_last_layer(trainer.model):
            logger.info("last encoder layer computed at position 0 only (speed.first_token_last_layer)")
        elif speed.first_token_last_layer is True:
            logger.warning("speed.first_token_last_layer: not applicable to this model; it runs unchanged")
    return trainer


_TRAINER_CLASS = None


def trainer_class():
    """`transformers.Trainer` plus hftl's evaluation speed-ups, each off unless `build_trainer` switches it on.

    - `sort_eval_by_length`: evaluate longest examples first, so each batch pads to similar lengths;
      `predict` returns its rows in the dataset's order again.
    - `reuse_final_eval`: the evaluation run at the end of training (eval_strategy "epoch") and the
      recipe's evaluation of the same split right after give the same result: compute it once.
    """
    global _TRAINER_CLASS
    if _TRAINER_CLASS is not None:
        return _TRAINER_CLASS
    import numpy as np
    from transformers import Trainer

    class HftlTrainer(Trainer):
        sort_eval_by_length = False
        length_buckets = False
        reuse_final_eval = False
        _eval_order = None  # the sorted order of the latest evaluation sampler
        _final_eval = None  # (key, order, EvalLoopOutput) of the evaluation at the last training step

        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            columns = getattr(dataset, "column_names", None) or ()
            if not self.length_buckets or self.args.world_size > 1 or "input_ids" not in columns:
                return super()._get_train_sampler(train_dataset)
            lengths = [len(ids) for ids in dataset["input_ids"]]
            return LengthBucketSampler(lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps)

        def _get_eval_sampler(self, eval_dataset):
            self._eval_order = None
            column = "input_ids"
            columns = getattr(eval_dataset, "column_names", None) or ()
            if not self.sort_eval_by_length or self.args.world_size > 1 or column not in columns:
                return super()._get_eval_sampler(eval_dataset)
            lengths = [len(ids) for ids in eval_dataset[column]]
            self._eval_order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
            return self._eval_order

        def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                            metric_key_prefix="eval"):
            state = self.state
            fingerprint = getattr(getattr(dataloader, "dataset", None), "_fingerprint", None)
            key = (state.global_step, fingerprint, prediction_loss_only, tuple(ignore_keys or ()), self._eval_order)
            final = self.reuse_final_eval and fingerprint is not None and state.global_step >= state.max_steps > 0
            if final and self._final_eval is not None and self._final_eval[0] == key:
                old_prefix, output = self._final_eval[1:]
                self._final_eval = None
                logger.info("%s: reusing the evaluation at step %d (same weights, same data)", description, key[0])
                metrics = {metric_key_prefix + name[len(old_prefix):] if name.startswith(old_prefix + "_") else name: v
                           for name, v in output.metrics.items()}
                return output._replace(metrics=metrics)
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
            self._final_eval = (key, metric_key_prefix, output) if final and self.is_in_train else None
            return output

        def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
            output = super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            order, self._eval_order = self._eval_order, None
            if order is None:
                return output
            inverse = np.argsort(np.asarray(order))
            return output._replace(predictions=_take_rows(output.predictions, inverse),
                                   label_ids=_take_rows(output.label_ids, inverse))

    _TRAINER_CLASS = HftlTrainer
    return HftlTrainer


class LengthBucketSampler:
    """Indices whose consecutive `batch_size` slices are batches of similar length, over the whole epoch.

    The examples are sorted by length (ties in random order) and cut into batches; the batches are then
    shuffled, the one incomplete batch last. `LengthGroupedSampler` sorts only inside windows of at most
    50 random batches, so its batches still mix lengths. Randomness comes from torch's global generator,
    which the Trainer seeds and restores on resume.
    """

    def __init__(self, lengths: list[int], batch_size: int):
        self.lengths, self.batch_size = lengths, batch_size

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        size = self.batch_size
        order = sorted(torch.randperm(len(self.lengths)).tolist(), key=self.lengths.__getitem__)
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        rest = [batches.pop()] if batches and len(batches[-1]) < size else []
        batches = [batches[i] for i in torch.randperm(len(batches)).tolist()] + rest
        return iter([index for batch in batches for index in batch])


def _take_rows(value, rows):
    """`value[rows]` through the tuples / lists / dicts the Trainer returns predictions in."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_take_rows(v, rows) for v in value)
    if isinstance(value, dict):
        return {k: _take_rows(v, rows) for k, v in value.items()}
    return value[rows]


def mean_cross_entropy(logits, label_ids) -> float:
    """The mean per-example cross-entropy of gathered evaluation logits.

    Used instead of the Trainer's evaluation loss, which averages per-batch means: under distributed
    evaluation those batches include the examples the sampler repeats to give every process equal
    batches, so that loss is slightly off while the gathered logits and labels are exact.
    """
    import numpy as np
    import torch

    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    labels = torch.as_tensor(np.asarray(label_ids), dtype=torch.long)
    return float(torch.nn.functional.cross_entropy(logits, labels))


def prepare_run_dir(config, args) -> Path:
    """`hftl.outputs.prepare_output_dir` on the main process only, the other processes waiting for it.

    Under distributed training every process runs the recipe; only one may replace or create the folder.
    """
    from hftl.outputs import prepare_output_dir

    with args.main_process_first(local=False, desc="preparing the output folder"):
        if args.process_index == 0:
            return prepare_output_dir(config)
    return Path(config.output_dir)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why checkpoint folder `path` cannot be resumed from, or None if it is complete.

    The Trainer writes `trainer_state.json` last, after the weights, optimizer, scheduler and RNG states,
    so a checkpoint whose state file is missing or unreadable was cut off while being saved.
    """
    import json

    path = Path(path)
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        return "no trainer_state.json: the run stopped while saving it"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "trainer_state.json is cut off: the run stopped while saving it"
    if not isinstance(state, dict) or "global_step" not in state:
        return "trainer_state.json holds no global_step"
    weights = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
               "pytorch_model.bin.index.json", "adapter_model.bin")
    if not any((path / name).is_file() for name in weights):
        return "no model weights"
    return None


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def last_checkpoint(output_dir: str | Path, quiet: bool = False) -> str | None:
    """The newest complete checkpoint in `output_dir`, or None; incomplete ones are skipped with a warning.

    Args:
        output_dir (`str` or `Path`): the run folder holding `checkpoint-<step>` folders.
        quiet (`bool`, *optional*, defaults to `False`): do not log which checkpoint was chosen.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    candidates = []
    for child in output_dir.iterdir():
        name = child.name
        if child.is_dir() and name.startswith(PREFIX_CHECKPOINT_DIR + "-") and name.rsplit("-", 1)[-1].isdigit():
            candidates.append((int(name.rsplit("-", 1)[-1]), child))
    loud = not quiet and _is_main_process()
    for step, child in sorted(candidates, reverse=True):
        problem = checkpoint_problem(child)
        if problem is None:
            if loud:
                logger.warning("Resuming from %s (step %d).", child, step)
            return str(child)
        if loud:
            logger.warning("Skipping incomplete checkpoint %s (%s).", child, problem)
    if loud:
        logger.warning("resume: no complete checkpoint in %s; training starts from step 0.", output_dir)
    return None
