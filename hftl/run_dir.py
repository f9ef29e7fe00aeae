"""`RunDir`: the one owner of a run folder's layout. Training writes it, and the card, push, export, inference,
evaluation and resume read it, all through this class; no other module knows a file name of the run folder.

A run folder holds the model (or LoRA adapter) with its processor, and the run's records:

    config.yaml      the resolved config (portable: paths relative to the folder, no secrets)
    manifest.json    when, the task, the seed, the effective training settings, package versions, data fingerprints
    metrics.json     metrics by split
    labels.json      id2label / label2id of classification tasks
    calibration.json classification: problem type, temperature and decision thresholds fitted on validation
    tuning.json      the run `hftl tune` picked: how its hyperparameters were chosen (the card shows it)
    errors.jsonl     the most confident mistakes on validation and test, one JSON object a line (error analysis)
    README.md        the model card, with its figures (*.png)
    merged/          LoRA language-model runs: the merged model, a plain checkpoint
    checkpoint-N/    the Trainer's resumable checkpoints
    .hftl-run.lock   while a run writes the folder: who holds it (`RunDir.lock`, `hftl.run_lock`)
    training_log.jsonl  the Trainer's logs and a heartbeat, appended while the run trains (`hftl.training_log`)
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from hftl.config.schema import RunConfig
from hftl.data.labels import LabelMap
from hftl.errors import HftlError, OutputExistsError
from hftl.files import package_versions, portable_argv, portable_config, read_json, write_atomic, write_json

logger = logging.getLogger(__name__)

#: the effective `TrainingArguments` recorded in the manifest (what the card shows as hyperparameters)
TRAINING_SETTINGS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "per_device_eval_batch_size", "optim", "weight_decay", "lr_scheduler_type", "warmup_steps", "max_grad_norm",
    "bf16", "fp16", "seed", "world_size",
)
#: weights files whose presence makes a checkpoint folder complete
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin",
            "pytorch_model.bin.index.json", "adapter_model.bin",
            "pytorch_model_fsdp.bin")  # accelerate's FSDP checkpoint with FULL_STATE_DICT (rank 0 writes it)
#: FSDP checkpoints with SHARDED_STATE_DICT: a torch.distributed.checkpoint folder per model (accelerate 1.x names
#: it `pytorch_model_fsdp_<i>`, the name transformers' `_load_from_checkpoint` also looks for), no weights file
_FSDP_SHARDED_WEIGHTS = "pytorch_model_fsdp_0"


class RunDir:
    """A run folder: its files by role, reading and writing the run's records.

    Args:
        path (`str` or `Path`): the folder (`training.output_dir` of a run).
    """

    CONFIG = "config.yaml"
    MANIFEST = "manifest.json"
    METRICS = "metrics.json"
    LABELS = "labels.json"
    CALIBRATION = "calibration.json"
    TUNING = "tuning.json"
    ERRORS = "errors.jsonl"
    CARD = "README.md"
    LOCK = ".hftl-run.lock"
    ADAPTER_CONFIG = "adapter_config.json"
    MODEL_CONFIG = "config.json"
    TRAINER_STATE = "trainer_state.json"
    MERGED = "merged"
    TRAINING_CURVES_PNG = "training_curves.png"
    CONFUSION_MATRIX_PNG = "confusion_matrix.png"
    TRAINING_LOG = "training_log.jsonl"
    #: the run's records, copied beside an exported model so that it is a run folder too
    RECORDS = (LABELS, CALIBRATION, METRICS, MANIFEST, TRAINER_STATE)
    #: never pushed: resumable checkpoints, pickled training state, the merged copy of language-model runs, logs,
    #: and the error analysis (it quotes the validation and test inputs: the user's evaluation data stays local)
    PUSH_IGNORE = ("checkpoint-*", f"{MERGED}/*", "runs/*", "training_args.bin", "*.pt", "*.pth", "*.pkl", ".*", "*.tmp",
                   ERRORS)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- what the folder holds --------------------------------------------------------------------
    @classmethod
    def existing(cls, path: str | Path) -> "RunDir":
        """The run folder at `path`; `HftlError` if it is not one."""
        run = cls(path)
        if not run.config_file.is_file():
            raise HftlError(f"{run.path} is not an hftl run folder (no {cls.CONFIG}). "
                            "Give the training.output_dir of a finished run.")
        return run

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG

    def saved_config(self) -> dict:
        """The run's config.yaml as saved, unparsed ({} if the folder has none): for reading a value or two
        without the task's schema (`hftl.config.read_config` parses it)."""
        if not self.config_file.is_file():
            return {}
        data = yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}
        return data if isinstance(data, dict) else {}

    def task_name(self) -> str | None:
        """The task the run's config names (read without parsing the rest of the config)."""
        return self.saved_config().get("task")

    @property
    def is_adapter(self) -> bool:
        """True for a LoRA run saved as an adapter over its base model."""
        return (self.path / self.ADAPTER_CONFIG).is_file()

    @property
    def merged_dir(self) -> Path:
        return self.path / self.MERGED

    @property
    def model_dir(self) -> Path:
        """Where the complete model is: `merged/` where a LoRA run saved one, else the folder itself."""
        merged = self.merged_dir
        return merged if (merged / self.MODEL_CONFIG).is_file() else self.path

    # -- starting a run -----------------------------------------------------------------------------
    def lock(self):
        """The lock a run holds on this folder while it writes it (`hftl.run_lock.RunLock`; `acquire()` or `with`)."""
        from hftl.run_lock import RunLock

        return RunLock(self.path / self.LOCK)

    def holds_files(self) -> bool:
        """Whether the folder holds anything but a run's lock."""
        return self.path.is_dir() and any(child.name != self.LOCK for child in self.path.iterdir())

    def prepare(self, overwrite: bool, resume: bool) -> None:
        """Create the folder; a folder holding a run is replaced only with `overwrite`, kept with `resume`. The lock
        of the run preparing it stays."""
        if self.holds_files():
            if overwrite:
                for child in self.path.iterdir():
                    if child.name == self.LOCK:
                        continue
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            elif not resume:
                raise OutputExistsError(
                    f"{self.path} already holds a run. Choose a new training.output_dir, continue it with --resume, "
                    "or replace it with --overwrite."
                )
        self.path.mkdir(parents=True, exist_ok=True)

    def write_record(self, config: RunConfig, data_fingerprints: dict[str, str], training_settings: dict,
                     speedups: dict | None = None) -> None:
        """Save `config.yaml` and `manifest.json`: versions, seed, effective training settings, the speed-ups that
        ran, data fingerprints, the command.

        No absolute path of this machine is written (see `hftl.files.portable_config`).
        """
        self.write_config(config)
        write_json(self.path / self.MANIFEST, {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "task": config.task,
            "seed": training_settings.get("seed", config.seed),
            "training": training_settings,
            "speedups": speedups or {},
            "data": data_fingerprints,
            "packages": package_versions(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "command": [os.path.basename(sys.argv[0])] + portable_argv(sys.argv[1:], self.path),
        })

    def record_speedups(self, speedups: dict | None) -> None:
        """Update the manifest's `speedups` with what ran up to now (`write_record` saw the start of the run)."""
        write_json(self.path / self.MANIFEST, {**self.manifest(), "speedups": speedups or {}})

    def write_config(self, config: RunConfig) -> None:
        write_atomic(self.config_file, yaml.safe_dump(portable_config(config, self.path), sort_keys=False))

    # -- records ----------------------------------------------------------------------------------
    def _read(self, name: str, default):
        path = self.path / name
        return read_json(path) if path.is_file() else default

    def manifest(self) -> dict:
        return self._read(self.MANIFEST, {})

    def metrics(self) -> dict:
        return self._read(self.METRICS, {})

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.path / self.METRICS, metrics)

    def trainer_state(self) -> dict:
        return self._read(self.TRAINER_STATE, {})

    def labels(self) -> LabelMap | None:
        """The label map of a classification run (None for tasks without labels)."""
        saved = self._read(self.LABELS, None)
        if saved is None:
            return None
        id2label = saved["id2label"]
        return LabelMap(tuple(id2label[str(i)] for i in range(len(id2label))))

    def write_labels(self, labels: LabelMap) -> None:
        write_json(self.path / self.LABELS, {"id2label": labels.id2label, "label2id": labels.label2id})

    def calibration(self) -> dict:
        """What a classification run fitted on validation (problem type, temperature, thresholds); {} if none."""
        return self._read(self.CALIBRATION, {})

    def write_calibration(self, values: dict) -> None:
        write_json(self.path / self.CALIBRATION, values)

    def errors(self) -> list[dict]:
        """The rows of the run's error analysis (`write_errors`); [] if it has none."""
        import json

        path = self.path / self.ERRORS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def write_errors(self, rows) -> None:
        """Save the error analysis: one JSON object a line (e.g. split, input, gold, predicted, confidence),
        in the order given (most confident mistakes first, by convention)."""
        import json

        write_atomic(self.path / self.ERRORS,
                     "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))

    def tuning(self) -> dict:
        """How `hftl tune` chose this run's hyperparameters (space, trials, pruner, seeds); {} for other runs."""
        return self._read(self.TUNING, {})

    def write_tuning(self, values: dict) -> None:
        write_json(self.path / self.TUNING, values)

    def training_settings(self, config: RunConfig) -> dict:
        """The effective training settings recorded at training time; the config's own for older runs."""
        recorded = self.manifest().get("training")
        return recorded if recorded is not None else {k: v for k, v in config.training.items() if k in TRAINING_SETTINGS}

    # -- checkpoints --------------------------------------------------------------------------------
    @staticmethod
    def checkpoint_problem(path: str | Path) -> str | None:
        """Why checkpoint folder `path` cannot be resumed from, or None if it is complete.

        The Trainer writes `trainer_state.json` last, after the weights, optimizer, scheduler and RNG states,
        so a checkpoint whose state file is missing or unreadable was cut off while being saved.
        """
        import json

        path = Path(path)
        state_file = path / RunDir.TRAINER_STATE
        if not state_file.is_file():
            return "no trainer_state.json: the run stopped while saving it"
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return "trainer_state.json is cut off: the run stopped while saving it"
        if not isinstance(state, dict) or "global_step" not in state:
            return "trainer_state.json holds no global_step"
        if not any((path / name).is_file() for name in _WEIGHTS) and not _has_sharded_weights(path):
            return "no model weights"
        return None

    def last_checkpoint(self, quiet: bool = False) -> str | None:
        """The newest complete checkpoint, or None; incomplete ones are skipped with a warning.

        Args:
            quiet (`bool`, *optional*, defaults to `False`): do not log which checkpoint was chosen.
        """
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        if not self.path.is_dir():
            return None
        candidates = []
        for child in self.path.iterdir():
            name = child.name
            if child.is_dir() and name.startswith(PREFIX_CHECKPOINT_DIR + "-") and name.rsplit("-", 1)[-1].isdigit():
                candidates.append((int(name.rsplit("-", 1)[-1]), child))
        loud = not quiet and os.environ.get("RANK", "0") == "0"
        for step, child in sorted(candidates, reverse=True):
            problem = self.checkpoint_problem(child)
            if problem is None:
                if loud:
                    logger.warning("Resuming from %s (step %d).", child, step)
                return str(child)
            if loud:
                logger.warning("Skipping incomplete checkpoint %s (%s).", child, problem)
        if loud:
            logger.warning("resume: no complete checkpoint in %s; training starts from step 0.", self.path)
        return None


def _has_sharded_weights(path: Path) -> bool:
    """A sharded FSDP checkpoint: its `torch.distributed.checkpoint` metadata file is written after the shards."""
    return (path / _FSDP_SHARDED_WEIGHTS / ".metadata").is_file()


def training_settings(args) -> dict:
    """The effective values of `TrainingArguments` `args` worth recording (bf16/fp16 resolved, world size...)."""
    values = args.to_dict()
    values["world_size"] = args.world_size
    return {key: getattr(values.get(key), "value", values.get(key)) for key in TRAINING_SETTINGS if key in values}
