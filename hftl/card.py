"""Model cards: gather what a finished run saved, draw its figures, render `README.md` from `model_cards/`.

The card is rendered from the run folder alone (its config, metrics, manifest, labels and trainer state, read
through `RunDir`), so `hftl card RUN_DIR` re-renders it at any time, on any machine: the training settings
shown are the ones recorded when it trained. What differs by task (template, pipeline tag, title, metrics
shown) comes from the task's declaration (`hftl.recipe.Recipe`); every template extends `base.md`.

Nothing machine-specific is written: local models and data appear by folder and file name only, and no
token is ever read here.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from hftl import __version__
from hftl.errors import HftlError
from hftl.files import portable_path, read_json, write_atomic
from hftl.modeling import PACKAGED, PACKAGED_PREFIX, resolve_checkpoint
from hftl.plots import confusion_matrix_figures, plot_training_curves
from hftl.run_dir import RunDir
from hftl.tasks import get_recipe_class, recipe_for_run

logger = logging.getLogger(__name__)

STRATEGY_TEXT = {
    "full": "full fine-tuning (every weight trained)",
    "freeze": "frozen backbone: only the task head{layers} trained",
    "lora": "LoRA adapters (peft) on the attention projections, task head trained fully",
}
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")  # with or without a namespace (gpt2, openai-community/gpt2)
_SPLIT_FOLDERS = {"train", "training", "test", "testing", "validation", "valid", "val", "dev", "eval"}


def template_dirs() -> list[Path]:
    """Where templates are looked up: `hftl/model_cards` (inside the wheel), then the repository's `model_cards/`."""
    here = Path(__file__).resolve().parent
    found = [d for d in (here / "model_cards", here.parent / "model_cards") if d.is_dir()]
    return [d for i, d in enumerate(found) if d.resolve() not in {f.resolve() for f in found[:i]}]


def template_name(task: str) -> str:
    """The card template of `task` (its recipe's `template()`), or base.md where that file does not exist."""
    name = get_recipe_class(task).template()
    return name if any((d / name).is_file() for d in template_dirs()) else "base.md"


# -- naming things without local paths ---------------------------------------------------------------
def _is_local(value: str | None) -> bool:
    return bool(value) and (os.path.isabs(value) or os.path.exists(value))


def base_model_info(name_or_path: str, resolved: str | None = None) -> dict:
    """How the card names the checkpoint a run started from.

    Returns `hub_id` (a Hub model id, or None for a local folder), `display` (no local path: a Hub id, or a
    folder name) and `packaged` (the `packaged:` name, if any).
    """
    if name_or_path.startswith(PACKAGED_PREFIX):
        entry = PACKAGED.get(name_or_path[len(PACKAGED_PREFIX):])
        # the description starts with the Hub id the package copied the checkpoint from
        match = re.match(r"^([\w.-]+/[\w.-]+)", entry.description) if entry else None
        hub_id = match.group(1) if match else None
        return {"hub_id": hub_id, "display": hub_id or name_or_path, "packaged": name_or_path}
    local = resolved if _is_local(resolved) else name_or_path
    if _is_local(local):
        return {"hub_id": None, "display": Path(local).resolve().name, "packaged": None}
    if _HUB_ID.match(name_or_path):
        return {"hub_id": name_or_path, "display": name_or_path, "packaged": None}
    return {"hub_id": None, "display": Path(name_or_path).name, "packaged": None}  # a local folder moved away


def data_source_info(source: str | None) -> dict | None:
    """`hub_id` (a Hub dataset id, or None), `display` (folder/file name of a local source) and `name`."""
    if not source:
        return None
    suffix = Path(source).suffix.lower()
    looks_like_file = source.startswith((".", "~")) or suffix in {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt"}
    if _is_local(source) or looks_like_file or not re.match(r"^[\w.-]+(/[\w.-]+)?$", source):
        path = Path(source).resolve() if _is_local(source) else Path(source)  # a file moved away: as written
        shown = [part for part in path.parts[-2:] if part not in ("..", ".", path.anchor)]
        # a file is named by its folder (sst2/test.tsv -> sst2), a folder by itself unless it is a split's
        named_by_parent = len(shown) > 1 and (not path.is_dir() or path.name.lower() in _SPLIT_FOLDERS)
        return {"hub_id": None, "display": "/".join(shown), "name": shown[0] if named_by_parent else path.stem}
    return {"hub_id": source, "display": source, "name": source}


def portable_base_name(name_or_path: str, resolved: str | None, run_dir: Path, for_hub: bool = False) -> str:
    """What `adapter_config.json` records as `base_model_name_or_path` (never an absolute path).

    A Hub id (also the one a `packaged:` checkpoint was copied from) as is; a local folder relative to the
    run folder (as in `config.yaml`), or by its name only where it leaves this machine (`for_hub`).
    """
    info = base_model_info(name_or_path, resolved)
    if info["hub_id"]:
        return info["hub_id"]
    if info["packaged"]:
        return info["packaged"]
    local = resolved if _is_local(resolved) else name_or_path
    return info["display"] if for_hub else portable_path(local, run_dir)


def scrub_adapter_configs(run_dir: Path, base_name: str) -> None:
    """Rewrite the absolute base path peft saved into `adapter_config.json` (and its README) in the run folder.

    hftl loads a LoRA run from `config.yaml`, never through this field, so only the record changes.
    """
    for config_file in [run_dir / RunDir.ADAPTER_CONFIG, *run_dir.glob(f"checkpoint-*/{RunDir.ADAPTER_CONFIG}")]:
        if not config_file.is_file():
            continue
        data = read_json(config_file)
        old = data.get("base_model_name_or_path")
        if old and os.path.isabs(old):
            data["base_model_name_or_path"] = base_name
            write_atomic(config_file, json.dumps(data, indent=2, sort_keys=True) + "\n")
            peft_card = config_file.parent / RunDir.CARD
            if config_file.parent != run_dir and peft_card.is_file():
                text = peft_card.read_text(encoding="utf-8")
                write_atomic(peft_card, text.replace(old, base_name))


def adapter_config_for_hub(run_dir: Path, config) -> bytes | None:
    """The run's `adapter_config.json` with the base model named for the Hub (see `portable_base_name`)."""
    path = run_dir / RunDir.ADAPTER_CONFIG
    if not path.is_file():
        return None
    data = read_json(path)
    data["base_model_name_or_path"] = portable_base_name(config.model.name_or_path, _resolved_model(config), run_dir,
                                                         for_hub=True)
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _resolved_model(config) -> str | None:
    try:
        return resolve_checkpoint(config.model)[0]
    except Exception:  # e.g. a packaged checkpoint whose package is not installed here
        return None


def base_license(info: dict, resolved: str | None) -> str | None:
    """The license the base model's own card declares, if it can be read without the network."""
    from huggingface_hub import metadata_load

    readme = None
    if _is_local(resolved) and Path(resolved, RunDir.CARD).is_file():
        readme = Path(resolved, RunDir.CARD)
    elif info["hub_id"]:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(info["hub_id"], RunDir.CARD)
        readme = Path(cached) if isinstance(cached, str) else None
    try:
        return (metadata_load(readme) or {}).get("license") if readme else None
    except Exception:  # an unreadable card header: no license claimed
        return None


# -- the card data --------------------------------------------------------------------------------------
def _read_optional(path: Path, default):
    return read_json(path) if path.is_file() else default


def _scalar_rows(metrics: dict, shown: tuple[str, ...]) -> tuple[list[str], list[dict]]:
    """Columns and rows (one per split) of the scalar metrics table."""
    splits = [s for s in ("before_training", "validation", "test") if isinstance(metrics.get(s), dict)]
    flat = []  # before_training holds {split: metrics} (language modelling baselines)
    for split in splits:
        values = metrics[split]
        if split == "before_training" and all(isinstance(v, dict) for v in values.values()):
            flat += [(f"{name} (before training)", v) for name, v in values.items()]
        else:
            flat.append((split, values))
    present = {k for _, values in flat for k, v in values.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    columns = [k for k in shown if k in present]
    return columns, [{"split": name, **{c: values.get(c) for c in columns}} for name, values in flat]


def _eval_results(metrics: dict, recipe, dataset: dict | None, dataset_config, split: str):
    from huggingface_hub import EvalResult

    results = []
    values = metrics.get(split) or {}
    dataset = dataset or {"hub_id": None, "name": "local data"}
    for key, (metric_type, name, args) in recipe.index_metrics.items():
        value = values.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            results.append(EvalResult(
                task_type=recipe.pipeline_tag, task_name=recipe.title, dataset_type=dataset["hub_id"] or dataset["name"],
                dataset_name=dataset["name"], dataset_config=dataset_config, dataset_split=split,
                metric_type=metric_type, metric_value=round(float(value), 6),
                metric_name=f"{split.capitalize()} {name}", metric_args=args,
            ))
    return results


def _hyperparameters(run: RunDir, config) -> list[tuple[str, object]]:
    """The effective training settings recorded when the run trained (hftl's and the task's defaults under the
    user's settings, bf16 resolved on that machine)."""
    return [(k, v) for k, v in run.training_settings(config).items() if v not in (None, "", -1)]


def gather_card_data(run_dir: str | Path, repo_id: str | None = None, variant: str | None = None,
                     license: str | None = None, image_dir: str | Path | None = None, recipe=None) -> dict:
    """Everything the templates show, read from the run folder (no network, no token, no local path).

    Args:
        run_dir (`str` or `Path`): a finished hftl run.
        repo_id (`str`, *optional*): the Hub repository the card is for (used in the loading examples).
        variant (`str`, *optional*): what the card's folder holds: `adapter`, `full` or `merged`
            (default: `adapter` for LoRA runs, else `full`).
        license (`str`, *optional*): overrides `hub.license` and the base model's license.
        image_dir (`str` or `Path`, *optional*): where the figures are drawn (default: `run_dir`).
        recipe (`Recipe`, *optional*): the run's recipe (default: the one its config names).
    """
    from huggingface_hub import ModelCardData

    run = RunDir(run_dir)
    run_dir = run.path
    recipe = recipe or recipe_for_run(run_dir)
    config = recipe.config
    metrics, manifest, labels_map, state = run.metrics(), run.manifest(), run.labels(), run.trainer_state()
    labels = list(labels_map.names) if labels_map else []
    is_adapter = run.is_adapter
    variant = variant or ("adapter" if is_adapter else "full")

    resolved = _resolved_model(config)
    base = base_model_info(config.model.name_or_path, resolved)
    sources = {name: data_source_info(src) for name, src in config.data.splits().items()}
    eval_split = "test" if "test" in metrics else "validation" if "validation" in metrics else None

    image_dir = Path(image_dir) if image_dir else run_dir
    images = {"confusion_matrix": confusion_matrix_figures(metrics, labels, image_dir, RunDir.CONFUSION_MATRIX_PNG),
              "training_curves": None}
    if plot_training_curves(state.get("log_history", []), image_dir / RunDir.TRAINING_CURVES_PNG, recipe.curve_metrics):
        images["training_curves"] = RunDir.TRAINING_CURVES_PNG
    images.update(recipe.card_figures(metrics, image_dir))  # the task's own figures (e.g. a reliability diagram)

    name = (repo_id or run_dir.resolve().name).split("/")[-1]
    eval_results = _eval_results(metrics, recipe, sources.get(eval_split), config.data.dataset_config,
                                 eval_split) if eval_split else []
    license = license or config.hub.license or base_license(base, resolved) or "unknown"
    strategy = config.model.strategy
    tags = ["hftl", config.task, strategy] + (["lora", "peft"] if strategy == "lora" else [])
    card_data = ModelCardData(
        license=license,
        base_model=base["hub_id"],
        library_name="peft" if variant == "adapter" else "transformers",
        tags=list(dict.fromkeys(tags)),
        datasets=sorted({s["hub_id"] for s in sources.values() if s and s["hub_id"]}) or None,
        pipeline_tag=recipe.pipeline_tag,
        model_name=name,
        eval_results=eval_results or None,
    )
    train = metrics.get("train", {})
    columns, rows = _scalar_rows(metrics, recipe.card_metrics)
    layers = f" and the top {config.model.trainable_layers} blocks" if config.model.trainable_layers else ""
    return {
        "card_data": card_data.to_yaml(),
        "model_name": name,
        "repo_id": repo_id,
        "model_ref": repo_id or f"path/to/{run_dir.resolve().name}",
        "run_name": run_dir.resolve().name,
        "task": config.task,
        "template": recipe.template(),
        "task_title": recipe.title,
        "pipeline_tag": recipe.pipeline_tag,
        "base": base,
        "license": license,
        "strategy": strategy,
        "strategy_text": STRATEGY_TEXT.get(strategy, strategy).format(layers=layers),
        "lora": config.model.lora if strategy == "lora" else None,
        "distillation": distillation_facts(config),
        "variant": variant,
        "is_adapter": is_adapter,
        "parameters": {k: train[k] for k in ("trainable_params", "total_params", "trainable_percent") if k in train},
        "train_runtime": train.get("train_runtime"),
        "labels": labels,
        "data": config.data,
        "sources": {k: v for k, v in sources.items() if v},
        "hyperparameters": _hyperparameters(run, config),
        "total_steps": state.get("global_step"),
        "metrics": metrics,
        "eval_split": eval_split,
        "eval": metrics.get(eval_split, {}) if eval_split else {},
        "metric_columns": columns,
        "metric_rows": rows,
        "images": images,
        # the most confident mistakes (errors.jsonl) for the run's own card; a card for the Hub quotes none of the
        # user's validation and test inputs (errors.jsonl is not pushed either: RunDir.PUSH_IGNORE)
        "errors": run.errors() if repo_id is None else [],
        "versions": {"hftl": __version__, **manifest.get("packages", {}), "python": manifest.get("python")},
        "seed": manifest.get("seed"),
        "created": manifest.get("created"),
        "tuning": run.tuning() or None,
    }


# -- rendering ------------------------------------------------------------------------------------------
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    dirs = template_dirs()
    if not dirs:
        raise HftlError("hftl's model card templates (model_cards/) are missing; reinstall hftl.")
    env = Environment(loader=FileSystemLoader([str(d) for d in dirs]), undefined=StrictUndefined, autoescape=False,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["num"] = _format_number
    return env


def _format_number(value, digits: int = 4) -> str:
    if value is None:  # e.g. the scores of a class absent from the split
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def render_card_text(data: dict, template: str | None = None) -> str:
    """The card for gathered `data` (see `gather_card_data`), from `template` (default: the task's)."""
    template = template or data["template"]
    if not any((d / template).is_file() for d in template_dirs()):
        template = "base.md"
    text = _environment().get_template(template).render(**data)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_card(run_dir: str | Path, repo_id: str | None = None, variant: str | None = None,
                license: str | None = None, out_dir: str | Path | None = None, recipe=None) -> Path:
    """Write the run's model card (`README.md`) and its figures; returns the card's path.

    Called at the end of every run (main process) and by `hftl card RUN_DIR`. Rendering into the run folder
    also rewrites the absolute base-model path peft records in `adapter_config.json` (`scrub_adapter_configs`).

    Args:
        run_dir (`str` or `Path`): a finished hftl run.
        repo_id, variant, license, recipe: see `gather_card_data`.
        out_dir (`str` or `Path`, *optional*): where to write the card and figures (default: `run_dir`).
    """
    run_dir = Path(run_dir)
    recipe = recipe or recipe_for_run(run_dir)
    out = Path(out_dir) if out_dir else run_dir
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() == run_dir.resolve():
        model = recipe.config.model
        scrub_adapter_configs(run_dir, portable_base_name(model.name_or_path, _resolved_model(recipe.config), run_dir))
    data = gather_card_data(run_dir, repo_id=repo_id, variant=variant, license=license, image_dir=out, recipe=recipe)
    write_atomic(out / RunDir.CARD, render_card_text(data))
    return out / RunDir.CARD


def render_run_card(run_dir: str | Path, recipe=None) -> Path | None:
    """`render_card` at the end of training: a failure is logged, never allowed to fail a finished run."""
    try:
        return render_card(run_dir, recipe=recipe)
    except Exception as err:  # the model and metrics are saved already; the card can be rendered again later
        logger.warning("the model card could not be rendered (%s: %s); the run is saved. Render it again with: "
                       "hftl card %s", type(err).__name__, err, run_dir)
        return None


def distillation_facts(config) -> dict | None:
    """What the card says of a distilled run: the teacher (folder name, its headline test or validation figures),
    the loss's settings, and where the student started (the teacher's layers it kept, for a cut teacher)."""
    settings = config.distillation
    if not settings.teacher:
        return None
    teacher = RunDir(settings.teacher)
    metrics = teacher.metrics() if teacher.path.is_dir() else {}
    split = "test" if "test" in metrics else "validation"
    figures = {k: v for k, v in (metrics.get(split) or {}).items()
               if k in ("accuracy", "f1", "f1_macro", "pearson", "spearman") and isinstance(v, (int, float))}
    student = Path(config.model.name_or_path) / "student.json"  # written by hftl.student
    cut = json.loads(student.read_text(encoding="utf-8")) if student.is_file() else None
    t = settings.temperature
    term = ("the squared error to the teacher's outputs" if getattr(config.data, "problem_type", None) == "regression"
            else f"KL(teacher ‖ student) at temperature {t:g} (× {t:g}²)")
    return {"teacher": teacher.path.name, "alpha": settings.alpha, "temperature": t, "term": term,
            "teacher_split": split, "teacher_metrics": figures,
            "kept_layers": cut.get("kept_layers") if cut else None,
            "teacher_layers": cut.get("teacher_layers") if cut else None}
