"""Export a finished run as a plain transformers model folder (LoRA merged into the weights), usable without hftl
and with `pipeline(...)`; the folder keeps the run's records, so it is an hftl run folder too."""

from __future__ import annotations

import shutil
from pathlib import Path

from hftl.card import render_card
from hftl.errors import HftlError, OutputExistsError
from hftl.run_dir import RunDir
from hftl.tasks import recipe_for_run


def prepare_export_folder(out: Path, source: Path, overwrite: bool) -> None:
    """Create `out` for an export of `source`: outside it, and new or empty (replaced only with `overwrite`)."""
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise HftlError(f"the export folder {out} must be outside the folder it exports, {source}.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out} is not empty. Choose a new folder, or replace it with --overwrite.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def export_merged(run_dir: str | Path, out_dir: str | Path, overwrite: bool = False, card: bool = True,
                  trust_remote_code: bool = False, allow_pickle: bool = False) -> Path:
    """Write a plain transformers model (LoRA merged into the weights) that loads with `pipeline(...)`.

    The folder also holds the run's records (`config.yaml`, `labels.json`, `metrics.json`...) and its card,
    so `hftl.load(out_dir)` and `hftl predict out_dir` work on it too. Full and frozen runs are copied as is.

    Args:
        run_dir (`str` or `Path`): a finished hftl run.
        out_dir (`str` or `Path`): an empty or new folder.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty `out_dir`.
        card (`bool`, *optional*, defaults to `True`): also render the model card (`README.md`) there.
        trust_remote_code, allow_pickle (`bool`, *optional*, default `False`): see `hftl.load`; never read from
            the run folder.
    """
    run_dir, out = Path(run_dir), Path(out_dir)
    recipe = recipe_for_run(run_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    prepare_export_folder(out, run_dir, overwrite)
    run = RunDir(run_dir)
    processor, model, _ = recipe.load_trained(run)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    RunDir(out).write_config(recipe.config)
    for name in RunDir.RECORDS:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    if card:
        render_card(run_dir, variant="merged" if run.is_adapter else None, out_dir=out, recipe=recipe)
    return out
