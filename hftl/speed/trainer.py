"""`HftlTrainer`: `transformers.Trainer` plus hftl's sampler and evaluation speed-ups, each off unless
`hftl.trainer.build_trainer` switches it on (`speed.*` in the config).

They override private Trainer methods, listed with the versions they were checked on in
`hftl.speed.private_hooks`: `_get_train_sampler(train_dataset)`, `_get_eval_sampler(eval_dataset)` and
`evaluation_loop(...)`. Where a transformers version changed one of them, its override is left out of the class
(`trainer_class`), the switches that rely on it stay off (`speedup_available`), and the log says why.

Two fixes are always on, overriding private methods of transformers 5.24's Trainer: `_load_from_checkpoint`
restores a checkpoint saved under the original weight names (see `load_renamed_checkpoint`), and `_save` keeps
tied weights saved once when given a gathered state dict (FSDP; see `share_tied_weights`). They too are left out,
with a logged reason, where those methods changed.
"""

from __future__ import annotations

import functools
import logging

from hftl.speed import private_hooks

logger = logging.getLogger(__name__)

#: each private `Trainer` method overridden here -> its entry in `private_hooks.HOOKS`
OVERRIDES = {"_get_train_sampler": "train_sampler", "_get_eval_sampler": "eval_sampler",
             "evaluation_loop": "evaluation_loop", "_save": "save", "_load_from_checkpoint": "load_from_checkpoint"}
#: each speed switch the Trainer runs -> the private hooks it needs
SWITCH_HOOKS = {"sort_eval_by_length": ("eval_sampler",), "length_buckets": ("train_sampler",),
                "token_budget": ("train_sampler", "batch_sampler_path"),
                "reuse_final_eval": ("evaluation_loop", "dataset_fingerprint")}


def speedup_available(switch: str) -> bool:
    """Whether the private Trainer methods speed switch `switch` relies on are as checked (else it stays off)."""
    return all(private_hooks.available(hook) for hook in SWITCH_HOOKS[switch])


def trainer_class():
    """`transformers.Trainer` plus hftl's evaluation speed-ups, each off unless `build_trainer` switches it on.

    - `sort_eval_by_length`: evaluate longest examples first, so each batch pads to similar lengths;
      `predict` returns its rows in the dataset's order again.
    - `reuse_final_eval`: the evaluation run at the end of training (eval_strategy "epoch") and the
      recipe's evaluation of the same split right after give the same result: compute it once.

    An override whose private method changed in this transformers is left out: the stock method runs.
    """
    return _trainer_class(frozenset(name for name, hook in OVERRIDES.items() if not private_hooks.available(hook)))


@functools.cache
def _trainer_class(left_out: frozenset):
    import numpy as np
    from transformers import Trainer

    class HftlTrainer(Trainer):
        sort_eval_by_length = False
        length_buckets = False
        token_budget = None  # speed.token_budget, set by build_trainer where it applies
        training_epoch = None  # the epoch the length-sorted samplers draw from (hftl.epoch.TrainingEpoch)
        reuse_final_eval = False
        _eval_order = None  # the sorted order of the latest evaluation sampler
        _final_eval = None  # (key, order, EvalLoopOutput) of the evaluation at the last training step

        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            columns = getattr(dataset, "column_names", None) or ()
            if self.token_budget and "input_ids" in columns:  # a batch sampler (hftl.speed.token_budget)
                from hftl.speed.token_budget import trainer_sampler

                return trainer_sampler(self, dataset)
            if not self.length_buckets or self.args.world_size > 1 or "input_ids" not in columns:
                return super()._get_train_sampler(train_dataset)
            from hftl.speed.samplers import LengthBucketSampler, sampler_seed

            lengths = [len(ids) for ids in dataset["input_ids"]]
            return LengthBucketSampler(lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                       sampler_seed(self.args), self.training_epoch)

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
                if isinstance(getattr(self, "applied_speedups", None), dict):  # build_trainer's record of what ran
                    self.applied_speedups["reuse_final_eval"] = True
                logger.info("%s: reusing the evaluation at step %d (same weights, same data)", description, key[0])
                metrics = {metric_key_prefix + name[len(old_prefix):] if name.startswith(old_prefix + "_") else name: v
                           for name, v in output.metrics.items()}
                return output._replace(metrics=metrics)
            metric = self.compute_metrics
            if self._eval_order is not None and metric is not None:
                # a metric sees the rows in the dataset's order, as `predict` returns them: one that reads rows by
                # position (token classification stitches a sentence's windows) must not get the sorted order
                self.compute_metrics = _in_dataset_order(metric, self._eval_order)
            try:
                output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                                 metric_key_prefix)
            finally:
                self.compute_metrics = metric
            self._final_eval = (key, metric_key_prefix, output) if final and self.is_in_train else None
            return output

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            # transformers 5.24's Trainer._load_from_checkpoint (private; called by `train` on resume, with
            # model=None before the model is wrapped) loads `model.safetensors` with a non-strict load_state_dict,
            # which skips every weight saved under the original names (ViT's attention.attention.query ->
            # q_proj: huggingface/transformers#48805) and only logs them. Where the file lacks some of the
            # model's keys, load it through `from_pretrained` (which converts them) instead; else the stock path.
            if model is None and not self.is_fsdp_enabled and not self.is_deepspeed_enabled:
                if load_renamed_checkpoint(self.model, resume_from_checkpoint):
                    return
            super()._load_from_checkpoint(resume_from_checkpoint, model)

        def _save(self, output_dir=None, state_dict=None):
            # transformers 5.24's Trainer._save (private) gets the gathered state dict under FSDP; save_pretrained
            # drops a tied weight only where it shares storage with the weight it is tied to, which gathered copies
            # do not: GPT-2's lm_head.weight was saved beside transformer.wte.weight
            if state_dict is not None:
                state_dict = share_tied_weights(self.accelerator.unwrap_model(self.model), state_dict)
            super()._save(output_dir, state_dict)

        def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
            output = super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            order, self._eval_order = self._eval_order, None
            if order is None:
                return output
            inverse = np.argsort(np.asarray(order))
            return output._replace(predictions=_take_rows(output.predictions, inverse),
                                   label_ids=_take_rows(output.label_ids, inverse))

    for name in left_out:
        delattr(HftlTrainer, name)
    return HftlTrainer


def _in_dataset_order(metric, order: list[int]):
    """`metric` (a `compute_metrics`) given the rows of a length-sorted evaluation back in the dataset's order."""
    import numpy as np
    from transformers import EvalPrediction

    inverse = np.argsort(np.asarray(order))

    def in_order(eval_pred):
        inputs, losses = eval_pred.inputs, eval_pred.losses
        return metric(EvalPrediction(
            predictions=_take_rows(eval_pred.predictions, inverse), label_ids=_take_rows(eval_pred.label_ids, inverse),
            inputs=None if inputs is None else _take_rows(inputs, inverse),
            losses=_take_rows(losses, inverse) if np.ndim(losses) == 1 and len(losses) == len(inverse) else losses))

    return in_order


def share_tied_weights(model, state_dict: dict) -> dict:
    """`state_dict` with each tied weight (transformers 5's `model.all_tied_weights_keys`: tied -> source) the very
    tensor of its source, where the two are equal, so that `save_pretrained` saves it once."""
    import torch

    tied = getattr(model, "all_tied_weights_keys", None) or {}
    shared = dict(state_dict)
    for target, source in tied.items():
        a, b = shared.get(target), shared.get(source)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a is not b and a.shape == b.shape \
                and torch.equal(a, b):
            shared[target] = b
    return shared


def _keys_not_in_file(model, weights_file) -> list[str]:
    """The keys of `model`'s state dict that `weights_file` lacks, tied weights (saved once) left out."""
    from safetensors import safe_open

    with safe_open(weights_file, framework="pt") as f:
        saved = set(f.keys())
    state = model.state_dict(keep_vars=True)
    saved_storage = {state[k].data_ptr() for k in saved if k in state}
    return [k for k, v in state.items() if k not in saved and v.data_ptr() not in saved_storage]


def load_renamed_checkpoint(model, checkpoint: str) -> bool:
    """Restore a full-weights checkpoint whose file names some weights otherwise than `model` does (saved under the
    original names transformers 5 converts on load); False, changing nothing, where the stock load suffices.

    Loads the checkpoint with `type(model).from_pretrained` (transformers' own conversion of the names) and copies
    every weight into `model` in place (parameters, their `requires_grad` and tied weights stay as they are).
    Raises `RuntimeError` naming the keys where any weight of the model is still missing.
    """
    import os

    from transformers import PreTrainedModel

    weights = os.path.join(checkpoint, "model.safetensors")
    if not isinstance(model, PreTrainedModel) or not os.path.isfile(weights):
        return False  # adapters (PEFT), sharded or .bin checkpoints: the stock path
    missing = _keys_not_in_file(model, weights)
    if not missing:
        return False
    logger.info("resuming: %s names %d weights otherwise than the model (e.g. %s): loading it through "
                "from_pretrained, which converts the names", weights, len(missing), missing[0])
    loaded, info = type(model).from_pretrained(checkpoint, output_loading_info=True)
    problems = {kind: sorted(info.get(kind) or ()) for kind in ("missing_keys", "mismatched_keys")}
    if any(problems.values()):
        raise RuntimeError(f"cannot resume from {checkpoint}: its weights do not fit the model "
                           f"({'; '.join(f'{k}: {v[:5]}' for k, v in problems.items() if v)}).")
    model.load_state_dict(loaded.state_dict(), strict=True)
    return True


def _take_rows(value, rows):
    """`value[rows]` through the tuples / lists / dicts the Trainer returns predictions in."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(_take_rows(v, rows) for v in value)
    if isinstance(value, dict):
        return {k: _take_rows(v, rows) for k, v in value.items()}
    return value[rows]
