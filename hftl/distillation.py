"""Knowledge distillation: a run (the student) learns from a finished teacher run's logits as well as its labels.

A config's `distillation` section names the teacher (`hftl distill TEACHER_RUN` writes such a config). Nothing else
in the run changes: the task's recipe loads the data and the student, the Trainer trains it, the run folder, card,
resume and evaluation are a normal run's. Three pieces, put in place by `hftl.trainer.build_trainer`:

* `DistillationLoss`, the Trainer's `compute_loss_func`: alpha x the distillation term + (1 - alpha) x the
  task's hard-label loss (its own `compute_loss_func` where it has one, e.g. class weights; else the model's loss
  written as a sum over items). The distillation term is the KL divergence of the student's from the teacher's
  temperature-softened distribution times temperature^2 (Hinton et al. 2015): softmax per example, a Bernoulli
  per label for multi-label, softmax per labelled token for token classification (padding and ignored positions,
  label -100, are masked out); squared error between the outputs for regression. Both terms are sums over items
  divided by the Trainer's `num_items_in_batch` (the items of the whole accumulated batch on every process), so
  gradient accumulation and data parallelism give what one large batch gives.
* `TeacherLogits`: the teacher's logits of each training example, computed once, on first sight, and cached by
  the example's token ids: later epochs (and a changed example, which misses the cache) cost no extra teacher
  pass. The teacher runs in eval mode on the student's own inputs, so the tokenizers must be the same.
* `distillation_trainer_class`: the run's Trainer class with `compute_loss` handing the teacher's logits to the
  loss beside the labels, during training only; evaluation reports the hard-label loss, as any run does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

from hftl.decisions import MULTI, REGRESSION, SINGLE
from hftl.errors import ConfigError
from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)

#: the transformers Auto classes whose models can be distilled: one `logits` output per text or per token
DISTILLABLE = ("AutoModelForSequenceClassification", "AutoModelForTokenClassification")
#: the model inputs the teacher is given (the student's, less the labels)
TEACHER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IGNORE = -100


# -- checks before anything heavy -------------------------------------------------------------------------
def distillation_problems(config, recipe_cls) -> list[str]:
    """What stops `config`'s distillation section from working: the teacher must be a finished run of the same
    task, whose model is a text or token classifier. Cheap: reads the teacher's config, loads nothing."""
    teacher = config.distillation.teacher
    if not teacher:
        return []
    where = "distillation.teacher"
    if getattr(recipe_cls, "auto_model_class", None) not in DISTILLABLE:
        return [f"distillation: supports text and token classification; task '{config.task}' has no single logits "
                "output to learn from. Remove the distillation section."]
    run = RunDir(teacher)
    if not run.config_file.is_file():
        return [f"{where}: {teacher} is not a finished hftl run (no {RunDir.CONFIG}). Give the output_dir of the "
                "teacher's training run."]
    if not (run.model_dir / RunDir.MODEL_CONFIG).is_file() and not run.is_adapter:
        return [f"{where}: {teacher} holds no model (no {RunDir.MODEL_CONFIG}); did its training finish?"]
    task = run.task_name()
    if task != config.task:
        return [f"{where}: {teacher} is a '{task}' run, this run's task is '{config.task}'. The teacher must solve "
                "the same task, with the same labels."]
    return []


# -- the loss ---------------------------------------------------------------------------------------------
class DistillationTargets(NamedTuple):
    """What the loss compares a training batch's logits with: its labels and the teacher's logits."""

    labels: object
    teacher_logits: object


def _item_count(labels, num_items_in_batch):
    """What the sums are divided by: the Trainer's count of the accumulated batch's items, else this batch's."""
    import torch

    if num_items_in_batch is not None:
        return num_items_in_batch
    return torch.clamp((labels != IGNORE).sum(), min=1)


class HardLabelLoss:
    """The loss a classifier's model computes from its `problem_type`, as a sum over items divided by
    `num_items_in_batch` (cross-entropy per example, binary cross-entropy per label, squared error per output)."""

    def __init__(self, problem_type: str):
        self.problem_type = problem_type

    def __call__(self, outputs, labels, num_items_in_batch=None):
        import torch.nn.functional as F

        logits = (outputs["logits"] if isinstance(outputs, dict) else outputs[0]).float()
        if self.problem_type == REGRESSION:
            total = F.mse_loss(logits.view(-1), labels.float().view(-1), reduction="sum")
        elif self.problem_type == MULTI:
            total = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="sum")
        else:
            total = F.cross_entropy(logits.flatten(0, -2), labels.long().flatten(), ignore_index=IGNORE,
                                    reduction="sum")
        return total / _item_count(labels, num_items_in_batch)


def distillation_sum(student, teacher, labels, problem_type: str, temperature: float):
    """The distillation term summed over items: per example, per label (multi-label) or per labelled token."""
    import torch
    import torch.nn.functional as F

    student, teacher = student.float(), teacher.float().to(student.device)
    if problem_type == REGRESSION:
        return ((student.view(-1) - teacher.view(-1)) ** 2).sum()
    t = temperature
    if problem_type == MULTI:  # KL between Bernoullis = cross-entropy to the teacher's - the teacher's entropy
        target = torch.sigmoid(teacher / t)
        kl = (F.binary_cross_entropy_with_logits(student / t, target, reduction="none")
              - F.binary_cross_entropy_with_logits(teacher / t, target, reduction="none"))
        return kl.sum() * t * t
    log_student = F.log_softmax(student / t, dim=-1)
    log_teacher = F.log_softmax(teacher / t, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    if kl.dim() == 2:  # token logits: only the labelled positions (not padding, special tokens, later sub-words)
        kl = kl[labels.to(kl.device) != IGNORE]
    return kl.sum() * t * t


class DistillationLoss:
    """The Trainer's `compute_loss_func` of a distilled run: `alpha` x distillation + (1 - alpha) x `hard`.

    Args:
        hard (`callable`): the hard-label loss, `(outputs, labels, num_items_in_batch) -> loss`.
        problem_type (`str`): single_label_classification (also token classification), multi_label_classification
            or regression.
        alpha (`float`): the weight of the distillation term.
        temperature (`float`): the softening temperature.
    """

    def __init__(self, hard, problem_type: str, alpha: float, temperature: float):
        self.hard, self.problem_type, self.alpha, self.temperature = hard, problem_type, alpha, temperature
        self.weights = getattr(hard, "weights", None)  # the class weights a card reports

    def __call__(self, outputs, labels, num_items_in_batch=None):
        if not isinstance(labels, DistillationTargets):  # evaluation: the task's own loss
            return self.hard(outputs, labels, num_items_in_batch=num_items_in_batch)
        labels, teacher = labels
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        hard = self.hard(outputs, labels, num_items_in_batch=num_items_in_batch) if self.alpha < 1 else 0.0
        soft = distillation_sum(logits, teacher, labels, self.problem_type, self.temperature)
        soft = soft / _item_count(labels, num_items_in_batch)
        return self.alpha * soft + (1 - self.alpha) * hard


# -- the teacher's logits -----------------------------------------------------------------------------------
class TeacherLogits:
    """The teacher's logits of a batch of the student's inputs, each example computed once and then cached by its
    token ids (so an example that changes is computed again).

    Args:
        model: the teacher (a PyTorch model; put in eval mode here).
    """

    def __init__(self, model):
        self.model = model.eval()
        self.cache: dict[bytes, object] = {}
        self.computed = 0  # examples the teacher ran on (the rest came from the cache)

    def __call__(self, inputs: dict):
        import torch

        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        keep = (mask if mask is not None else torch.ones_like(ids)).bool().cpu()
        parts = [ids.cpu()] + ([inputs["token_type_ids"].cpu()] if "token_type_ids" in inputs else [])
        keys = [b"|".join(p[i][keep[i]].numpy().tobytes() for p in parts) for i in range(len(ids))]
        missing = [keys.index(key) for key in dict.fromkeys(k for k in keys if k not in self.cache)]
        if missing:
            device = next(self.model.parameters()).device
            rows = torch.tensor(missing)
            batch = {name: inputs[name].cpu()[rows].to(device) for name in TEACHER_INPUTS if name in inputs}
            with torch.no_grad():
                logits = self.model(**batch).logits.float().cpu()
            for row, i in zip(logits, missing):
                self.cache[keys[i]] = row[keep[i]] if row.dim() == 2 else row
            self.computed += len(missing)
        found = [self.cache[key] for key in keys]
        if found[0].dim() == 1:
            return torch.stack(found).to(ids.device)
        out = torch.zeros(ids.shape + found[0].shape[-1:], dtype=torch.float32)
        for i, row in enumerate(found):
            out[i][keep[i]] = row
        return out.to(ids.device)


def distillation_trainer_class(base: type) -> type:
    """`base` (a `transformers.Trainer` class) whose training steps give the loss the teacher's logits
    (`trainer.teacher_logits`, a `TeacherLogits`) beside the labels."""

    class DistillationTrainer(base):
        teacher_logits = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training and self.teacher_logits is not None and "labels" in inputs:
                teacher = self.teacher_logits(inputs)
                inputs = {**inputs, "labels": DistillationTargets(inputs["labels"], teacher)}
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    DistillationTrainer.__name__ = f"Distillation{base.__name__}"
    return DistillationTrainer


# -- setting a run up ---------------------------------------------------------------------------------------
def load_teacher(recipe, processor, labels):
    """The teacher's model, checked against the student's run: same labels in the same order, same problem
    type, same tokenizer (the teacher reads the student's token ids)."""
    from hftl.config import read_config

    config = recipe.config.distillation
    run = RunDir.existing(config.teacher)
    # the teacher runs the same task (checked up front): the student's recipe class reads its run, as hftl.load does
    recipe_class = type(recipe)
    teacher_config = read_config(run.config_file, {recipe_class.task: recipe_class.data_config_class})
    # never taken from the teacher's folder (it must not switch code execution on by itself): the user's settings
    model = recipe.config.model
    teacher_config.model.trust_remote_code, teacher_config.model.allow_pickle = model.trust_remote_code, model.allow_pickle
    teacher_recipe = recipe_class(teacher_config)
    teacher_processor, teacher_model, teacher_labels = teacher_recipe.load_trained(run)
    problems = []
    names = list(labels.names) if labels is not None else None
    teacher_names = list(teacher_labels.names) if teacher_labels is not None else None
    if names != teacher_names:
        problems.append(f"distillation.teacher: the teacher's labels {teacher_names} are not this run's {names} "
                        "(same names, same order). Train the student on the teacher's data.")
    problem, teacher_problem = _problem_type(recipe), _problem_type(teacher_recipe)
    if problem != teacher_problem:
        problems.append(f"distillation.teacher: the teacher is a {teacher_problem} model, this run is {problem}.")
    if _vocabulary(processor) != _vocabulary(teacher_processor):
        problems.append(f"distillation.teacher: the student's tokenizer ({recipe.config.model.name_or_path}) is not "
                        "the teacher's; the teacher must read the student's token ids. Choose a student "
                        "checkpoint with the teacher's tokenizer, or cut the teacher (hftl distill --layers K).")
    if problems:
        raise ConfigError(problems)
    return teacher_model


def _problem_type(recipe) -> str:
    return getattr(recipe, "problem_type", None) or SINGLE


def _vocabulary(processor) -> dict:
    tokenizer = getattr(processor, "tokenizer", processor)
    return tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}


def distillation_setup(recipe, processor, labels, hard_loss):
    """(Trainer class wrapper, `compute_loss_func`, `TeacherLogits`) of a distilled run; `hard_loss` is the task's
    own `compute_loss_func` or None (the model's loss)."""
    config = recipe.config.distillation
    problem = _problem_type(recipe)
    loss = DistillationLoss(hard_loss or HardLabelLoss(problem), problem, config.alpha, config.temperature)
    teacher = TeacherLogits(load_teacher(recipe, processor, labels))
    logger.info("distilling from %s: alpha %.2f, temperature %.2f", Path(config.teacher).name, config.alpha,
                config.temperature)
    return distillation_trainer_class, loss, teacher

