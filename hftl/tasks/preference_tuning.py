"""Preference tuning: DPO (and the other pairwise losses of TRL's `DPOTrainer`) on conversational pairs.

Data: TRL's conversational preference format, `prompt` (messages up to the user's last turn), `chosen` and
`rejected` (the assistant's reply), every problem of every row reported at once with file and line. The
conversation is rendered by `hftl.chat` with the run's template (the tokenizer's own or `data.chat_template`),
as in instruction tuning; the reply and its end-of-turn token are the trained (scored) tokens.

The training loop is TRL's `DPOTrainer`, on top of hftl's Trainer class (`create_trainer`: hftl's callbacks, fault
handling, resume and run record apply), with three things hftl adds:

* The reference model. With `strategy: lora` it is the base model with the adapter disabled (no second copy;
  TRL's extra "ref" adapter is removed). With `full` / `freeze`, a frozen copy of the starting weights (TRL would
  reload it from `name_or_path`, which fails for GGUF and packaged checkpoints, or precompute log-probs before a
  resumed run restores its weights).
* TRL tokenises the pairs itself; hftl checks, before training, that its tokens are the ones `hftl.chat` renders
  for every pair (prompt, reply, end of turn), and stops the run if not: training and inference cannot differ.
* Length: pairs longer than `data.max_length` are dropped or truncated as `data.too_long` says, counted in the log.

Evaluation (test and validation, and the base model before training): `preference_accuracy` (the model's own
preference: the chosen reply has the higher mean log-probability per token), `logp_accuracy` (summed), DPO's
implicit reward `reward_accuracy` and `reward_margin` (beta x (policy - reference) log-ratio, chosen minus rejected,
per reply token for the losses that normalise by length; zero before training by definition), the `length_baseline`
(the chosen reply is the longer one), the accuracies on pairs whose replies are of similar length (within 20%), and
after training how far the model's own ranking moved (`ranking_shift`: the pairs flipped either way, against the gap
a flip must cross).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

from hftl.config.parse import field
from hftl.config.schema import DataConfig
from hftl.data.columns import check_sources
from hftl.data.conversations import read_pairs
from hftl.data.loading import fingerprint
from hftl.errors import DataError
from hftl.recipe import PreparedData, register_task
from hftl.tasks.instruction_tuning import InstructionTuningRecipe, chat_template_problems, hold_out

logger = logging.getLogger(__name__)

#: TRL DPOTrainer losses offered (`loss_type`): sigmoid is DPO, sigmoid_norm DPO on log-ratios per reply token
LOSS_TYPES = ("sigmoid", "sigmoid_norm", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero",
              "apo_down")
#: the losses whose implicit reward TRL divides by the reply's token count (its dpo_trainer `_compute_loss`): their
#: reward metrics are per token too, so that they report what the loss trains
PER_TOKEN_LOSSES = ("sigmoid_norm", "ipo")
#: two replies are of similar length when they differ by at most this share of the longer one
SIMILAR_LENGTH = 0.2
#: the dataset column with each pair's width in DPO's batch (prompt + the longer reply): Trainer's
#: `length_column_name`, so that `speed.group_by_length` batches pairs of similar length
LENGTH_COLUMN = "length"


@dataclass
class PreferenceData(DataConfig):
    prompt_column: str = field("prompt", help="messages up to the user's last turn")
    chosen_column: str = field("chosen", help="the better assistant reply (a list with one assistant message)")
    rejected_column: str = field("rejected", help="the worse assistant reply")
    system_prompt: str | None = field(None, help="a system message put first in every prompt that has none")
    chat_template: str | None = field(None, help="a Jinja chat template file; default: the tokenizer's own")
    loss_type: str = field("sigmoid", help=f"TRL DPOTrainer loss: {', '.join(LOSS_TYPES)} (sigmoid = DPO, "
                                           "sigmoid_norm = length-normalised DPO, ipo = IPO)")
    beta: float = field(0.1, help="DPO's beta: how far the policy may move from the reference")
    sft_weight: float = field(
        0.0, help="weight of an SFT term (the chosen replies' mean token loss) added to the preference loss: "
                  "RPO (arXiv:2404.19733), TRL's 'sft' loss; it keeps the chosen replies' likelihood from falling")
    max_length: int = field(1024, help="the most tokens of prompt + reply")
    too_long: Literal["drop", "truncate"] = field(
        "drop", help="pairs longer than max_length: drop them, or truncate the reply end (counted in the log)")
    baseline: bool = field(True, help="also evaluate the untouched checkpoint before training")

    def check(self) -> list[str]:
        problems = []
        if self.loss_type not in LOSS_TYPES:
            problems.append(f"loss_type: must be one of {', '.join(LOSS_TYPES)}, got '{self.loss_type}'.")
        if self.beta <= 0:
            problems.append(f"beta: must be positive, got {self.beta}.")
        if self.sft_weight < 0:
            problems.append(f"sft_weight: must be 0 (off) or positive, got {self.sft_weight}.")
        if self.max_length < 8:
            problems.append(f"max_length: must be at least 8 tokens, got {self.max_length}.")
        return problems


@dataclass
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


class PreferenceTuningRecipe(InstructionTuningRecipe):
    """Align a chat model with preference pairs (DPO through TRL).

    Example:
        ```python
        import hftl
        from hftl import PreferenceTuningRecipe
        result = hftl.run_recipe(PreferenceTuningRecipe.from_yaml("recipes/configs/oasst_smollm2_dpo.yaml"))
        ```
    """

    task = "preference-tuning"
    title = "Preference tuning (DPO)"
    summary_metrics = ("preference_accuracy", "reward_accuracy", "reward_margin", "length_baseline")
    card_metrics = ("preference_accuracy", "logp_accuracy", "reward_accuracy", "reward_margin", "length_baseline",
                    "similar_length_preference_accuracy", "ranking_flipped_right", "ranking_flipped_wrong")
    index_metrics = {"preference_accuracy": ("accuracy", "Preference accuracy", None)}
    data_config_class = PreferenceData
    input_column = "prompt_column"
    loss_is_token_mean = False  # DPO's loss is a mean over pairs

    @classmethod
    def check_config(cls, config, model_ok: bool) -> list[str]:
        data = config.data
        required = {role: getattr(data, role) for role in ("prompt_column", "chosen_column", "rejected_column")}
        return check_sources(data, required) + chat_template_problems(data)

    def load_data(self) -> PreparedData:
        data = self.config.data
        splits, sources = {}, {}
        for name, source in data.splits().items():
            limit = data.max_train_samples if name == "train" else data.max_eval_samples
            splits[name] = read_pairs(source, data, name, limit)
            sources[name] = source
            if data.system_prompt:
                for pair in splits[name]:
                    if pair.prompt[0]["role"] != "system":
                        pair.prompt.insert(0, {"role": "system", "content": data.system_prompt})
        hold_out(splits, sources, data, self.config.seed)
        return PreparedData(splits, sources, {name: fingerprint(src) for name, src in data.splits().items()})

    def encode_pairs(self, pairs, tokenizer, name: str) -> tuple[list, list]:
        """(kept pairs, their tokens by `hftl.chat`), after the `too_long` rule; refuses replies with no token."""
        from hftl.chat import encode, prompt_ids, template_problems

        data = self.config.data
        problems = template_problems(tokenizer, {m["role"] for p in pairs for m in p.prompt} | {"assistant"})
        if problems:
            raise DataError("\n".join(problems))
        kept, encoded, too_long, empty = [], [], [], []
        for pair in pairs:
            prompt = prompt_ids(tokenizer, pair.prompt)
            replies = []
            for which in ("chosen", "rejected"):
                ids = encode(tokenizer, pair.conversation(which)).input_ids
                if ids[:len(prompt)] != prompt:
                    raise DataError(f"{pair.where}: the chat template renders the prompt differently alone and "
                                    "followed by the reply; use another template (data.chat_template).")
                replies.append(ids[len(prompt):])
            if len(prompt) + max(map(len, replies)) > data.max_length:
                too_long.append(pair.where)
                if data.too_long == "drop":
                    continue
                replies = [r[:max(0, data.max_length - len(prompt))] for r in replies]
            if not all(replies):
                empty.append(pair.where)
                continue
            kept.append(pair)
            encoded.append(EncodedPair(prompt, *replies))
        if empty:
            shown = "; ".join(empty[:20])
            raise DataError(f"data.{name}: {len(empty)} pair(s) keep no reply token after truncation to "
                            f"data.max_length={data.max_length} (the prompt fills it): {shown}. Raise max_length "
                            "or use too_long: drop.")
        if not kept:
            raise DataError(f"data.{name}: no pair is left: all exceed data.max_length={data.max_length}.")
        if too_long:
            logger.warning("data.%s: %d of %d pairs exceed max_length=%d and were %s (first: %s)", name, len(too_long),
                           len(pairs), data.max_length, "dropped" if data.too_long == "drop" else "truncated",
                           too_long[0])
        return kept, encoded

    def preprocess(self, data: PreparedData, tokenizer) -> dict:
        import datasets

        out = {}
        for name, pairs in data.splits.items():
            kept, encoded = self.encode_pairs(pairs, tokenizer, name)
            dataset = datasets.Dataset.from_dict({"prompt": [p.prompt for p in kept],
                                                  "chosen": [p.chosen for p in kept],
                                                  "rejected": [p.rejected for p in kept],
                                                  LENGTH_COLUMN: [len(e.prompt) + max(len(e.chosen), len(e.rejected))
                                                                  for e in encoded]})
            dataset.encoded = encoded  # hftl's tokens: checked against TRL's, and scored by evaluate_split
            out[name] = dataset
        return out

    def prepare_source(self, source: str, tokenizer, labels=None):
        pairs = read_pairs(source, self.config.data, "test", self.config.data.max_eval_samples)
        return self.preprocess(PreparedData({"test": pairs}, {"test": source}), tokenizer)["test"]

    def describe_example(self, index: int) -> str:
        """`hftl validate --show-example N`: pair N rendered, the scored reply tokens marked, and the lengths."""
        from hftl.chat import IGNORE, encode, marked_text, stop_token_ids
        from hftl.tasks.instruction_tuning import leading_count, length_histogram

        data = self.config.data
        pairs = self.load_data().splits["train"]
        if not 0 <= index < len(pairs):
            raise DataError(f"--show-example {index}: the training set has {len(pairs)} pairs (0 to {len(pairs) - 1}).")
        tokenizer = self.load_processor()
        stops = stop_token_ids(tokenizer)
        lines = [f"pair {index} ({pairs[index].where}); scored reply tokens between [[ and ]]:"]
        for which in ("chosen", "rejected"):
            example = encode(tokenizer, pairs[index].conversation(which))
            scored = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE]
            lines += ["", f"--- {which} ({len(example.input_ids)} tokens, {len(scored)} scored)",
                      marked_text(tokenizer, example),
                      f"BOS tokens at the start: {leading_count(example.input_ids, tokenizer.bos_token_id)}; end of "
                      f"turn scored: {'yes' if any(t in stops for t in scored) else 'NO'}"]
        lengths = [len(encode(tokenizer, p.conversation(w)).input_ids) for p in pairs for w in ("chosen", "rejected")]
        over = sum(max(lengths[2 * i], lengths[2 * i + 1]) > data.max_length for i in range(len(pairs)))
        action = "dropped" if data.too_long == "drop" else "truncated"
        lines += ["", f"token lengths of the {len(lengths)} prompt + reply sequences:", length_histogram(lengths),
                  f"{over} of {len(pairs)} pairs exceed max_length={data.max_length}: they will be {action} "
                  "(data.too_long: drop or truncate)."]
        return "\n".join(lines)

    def data_collator(self, tokenizer):
        return None  # DPOTrainer's own (prompt + chosen and prompt + rejected, padded)

    def training_defaults(self) -> dict:
        # the length column (not a model input) is kept for the length-grouped sampler: TRL's collator reads only
        # the token columns it made. Activation checkpointing is TRL's DPOConfig default (a pair is two sequences,
        # and their activations dominate memory); on a CPU it was faster too, 1.05-1.15x with grouped batches
        # (docs/benchmarks.md). The user's `training.gradient_checkpointing: false` turns it off.
        return {"remove_unused_columns": False, "length_column_name": LENGTH_COLUMN, "activation_checkpointing": True}

    def training_arguments(self):
        """hftl's `TrainingArguments` as TRL's `DPOConfig`, with the data section's DPO settings."""
        import dataclasses

        from trl import DPOConfig

        args = super().training_arguments()
        names = {f.name for f in dataclasses.fields(DPOConfig) if f.init}
        values = {k: v for k, v in args.to_dict().items() if k in names}
        data = self.config.data
        losses = {data.loss_type: 1.0, **({"sft": data.sft_weight} if data.sft_weight else {})}
        # the lengths were applied already (too_long); TRL's truncation is a no-op kept as a guard
        return DPOConfig(**values, beta=data.beta, loss_type=list(losses), loss_weights=list(losses.values()),
                         max_length=data.max_length, truncation_mode="keep_start", precompute_ref_log_probs=False,
                         disable_dropout=True)

    def create_trainer(self, base_class, kwargs: dict):
        """TRL's DPOTrainer on hftl's Trainer class; the reference as the module docstring says; tokens checked."""
        import copy

        from trl import DPOTrainer

        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # TRL pings usage data otherwise; hftl never does
        kwargs = dict(kwargs)
        kwargs.pop("compute_loss_func", None)
        model = kwargs["model"]
        is_peft = hasattr(model, "disable_adapter")
        ref_model = None
        if not is_peft:
            ref_model = copy.deepcopy(model).eval()
            ref_model.requires_grad_(False)
        trainer_class = type("HftlDPOTrainer", (DPOTrainer, base_class), {})
        trainer = trainer_class(ref_model=ref_model, **kwargs)
        if is_peft and "ref" in trainer.model.peft_config:
            trainer.model.delete_adapter("ref")  # the reference is the base: adapter disabled (TRL's use_adapter)
            trainer.model.set_adapter("default")
        for split, theirs in (("train", trainer.train_dataset), ("validation", trainer.eval_dataset)):
            ours = kwargs["train_dataset"] if split == "train" else kwargs.get("eval_dataset")
            if ours is not None and theirs is not None:
                check_same_tokens(ours.encoded, theirs, split)
        return trainer

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate_split(self, trainer, name: str, dataset, labels=None, **kwargs) -> dict:
        """Preference and reward figures of the policy against the reference. The runner computes them in the
        run's `inference_precision` (float32 by default, as before training and as `hftl evaluate`): a pair whose
        gap is within bf16's rounding would otherwise flip between before and after by rounding alone."""
        data = self.config.data
        return preference_metrics(trainer, dataset.encoded, data.beta, reference=True,
                                  per_token=data.loss_type in PER_TOKEN_LOSSES)

    def evaluate_before(self, trainer, datasets: dict, labels=None) -> dict:
        if not self.config.data.baseline or self.config.resume:
            return {}
        return {split: preference_metrics(trainer, datasets[split].encoded, self.config.data.beta, reference=False)
                for split in ("validation", "test") if split in datasets}


def check_same_tokens(encoded: list, prepared, split: str, count: int = 16) -> None:
    """TRL's tokens of the first `count` pairs must be hftl's (`hftl.chat`): else stop, naming the pair."""
    for i in range(min(count, len(encoded))):
        row = prepared[i]
        ours = encoded[i]
        if (list(row["prompt_ids"]) + list(row["chosen_ids"]) != ours.prompt + ours.chosen
                or list(row["prompt_ids"]) + list(row["rejected_ids"]) != ours.prompt + ours.rejected):
            raise DataError(f"data.{split}: pair {i + 1}: TRL's DPOTrainer tokenised it differently from hftl's chat "
                            "rendering; training would not match inference. Report this with the template used.")


def sequence_logps(model, rows: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8) -> list[tuple]:
    """(sum of log-probabilities of the reply tokens, their count) for each (prompt, reply)."""
    import torch

    out = []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    results: list = [None] * len(rows)
    model.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        seqs = [rows[i][0] + rows[i][1] for i in chunk]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], device=model.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
        logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        for row, i in enumerate(chunk):
            p, r = len(rows[i][0]), len(rows[i][1])
            results[i] = (float(logps[row, p - 1:p - 1 + r].sum()), r)
    out.extend(results)
    return out


def preference_metrics(trainer, encoded: list, beta: float, reference: bool, per_token: bool = False) -> dict:
    """The metrics of the module docstring on pairs `encoded`, for the trainer's model (and its reference)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    pad = trainer.processing_class.pad_token_id or 0
    rows = [(e.prompt, e.chosen) for e in encoded] + [(e.prompt, e.rejected) for e in encoded]
    policy = sequence_logps(model, rows, pad)
    n = len(encoded)
    chosen, rejected = policy[:n], policy[n:]
    similar = [i for i in range(n) if abs(chosen[i][1] - rejected[i][1]) <= SIMILAR_LENGTH * max(chosen[i][1], rejected[i][1])]
    mean_wins = [gap > 0 for gap in per_token_gaps(policy)]
    metrics = {"pairs": n, "preference_accuracy": sum(mean_wins) / n,
               "logp_accuracy": sum(chosen[i][0] > rejected[i][0] for i in range(n)) / n,
               "length_baseline": sum(chosen[i][1] > rejected[i][1] for i in range(n)) / n,
               "similar_length_pairs": len(similar),
               "similar_length_preference_accuracy": (sum(mean_wins[i] for i in similar) / len(similar)
                                                      if similar else None)}
    ref_model = getattr(trainer, "ref_model", None)
    # the reference: TRL's frozen copy (full / freeze), else the base under the adapter; a finished run loaded as a
    # merged or full model has none (`hftl evaluate`), and then reports no reward metrics
    if reference and (ref_model is not None or hasattr(model, "disable_adapter")):
        if ref_model is not None:
            ref = sequence_logps(trainer.accelerator.unwrap_model(ref_model), rows, pad)
        else:
            with model.disable_adapter():
                ref = sequence_logps(model, rows, pad)
        margins = reward_margins(policy, ref, beta, per_token)
        metrics.update(reward_accuracy=sum(m > 0 for m in margins) / n, reward_margin=sum(margins) / n,
                       similar_length_reward_accuracy=(sum(margins[i] > 0 for i in similar) / len(similar)
                                                       if similar else None),
                       **ranking_shift(policy, ref))
    return metrics


def reward_margins(policy: list[tuple], reference: list[tuple], beta: float, per_token: bool) -> list[float]:
    """Each pair's implicit reward margin, beta x (policy - reference) log-ratio of the chosen reply minus the
    rejected one's, from (summed log-prob, tokens) of the chosen replies then the rejected ones; `per_token` divides
    each reply's log-ratio by its tokens, as TRL's length-normalised losses do."""
    n = len(policy) // 2

    def ratio(i: int) -> float:
        return (policy[i][0] - reference[i][0]) / (policy[i][1] if per_token else 1)

    return [beta * (ratio(i) - ratio(n + i)) for i in range(n)]


def per_token_gaps(logps: list[tuple]) -> list[float]:
    """Each pair's gap in mean log-probability per token, chosen minus rejected, from (summed log-prob, tokens) of
    the chosen replies then the rejected ones (`sequence_logps` of `preference_metrics`' rows): above 0, the model
    prefers the chosen reply."""
    n = len(logps) // 2
    return [logps[i][0] / logps[i][1] - logps[n + i][0] / logps[n + i][1] for i in range(n)]


def ranking_shift(policy: list[tuple], reference: list[tuple]) -> dict:
    """How tuning moved the model's own ranking of each pair against the reference's, from (summed log-prob,
    tokens) of the chosen replies then the rejected ones: the pairs whose ranking by mean log-probability per token
    it flipped to right and to wrong, the median shift of that per-token gap (chosen minus rejected), and the median
    gap by which the reference ranks its wrong pairs wrong. A pair flips only when the shift exceeds its gap; DPO's
    small shifts rarely do (Chen et al. 2024, "Preference Learning Algorithms Do Not Learn Preference Rankings",
    arXiv:2405.19534), so the preference accuracy can stay put while the implicit reward learns."""
    from statistics import median

    before, after = per_token_gaps(reference), per_token_gaps(policy)
    wrong = [-b for b in before if b <= 0]
    return {"ranking_flipped_right": sum(b <= 0 < a for b, a in zip(before, after)),
            "ranking_flipped_wrong": sum(a <= 0 < b for b, a in zip(before, after)),
            "ranking_gap_shift": median(a - b for b, a in zip(before, after)),
            "reference_wrong_gap": median(wrong) if wrong else None}


register_task(PreferenceTuningRecipe)
