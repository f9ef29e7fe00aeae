"""Writing run records safely and portably: atomic writes, JSON, paths relative to the run folder, no secrets.

What the files are called and where they live is `hftl.run_dir.RunDir`'s business, not this module's.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

from hftl.config.schema import RunConfig

TRACKED_PACKAGES = ("hftl", "torch", "transformers", "datasets", "accelerate", "peft", "evaluate", "scikit-learn", "huggingface_hub")


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


#: config fields naming local inputs (as in `hftl.config.load`): saved relative to the run folder
_INPUT_PATH_FIELDS = (("model", "name_or_path"), ("data", "train"), ("data", "validation"), ("data", "test"),
                      ("distillation", "teacher"))
#: never saved, whatever the config holds (hftl reads tokens from HF_TOKEN or the cached login)
_SECRET_TRAINING_KEYS = ("hub_token",)


def portable_path(value, run_dir: str | Path):
    """`value` relative to `run_dir` if it names an existing or absolute local path, else unchanged.

    Hub ids and `packaged:` names pass through. Loading the saved config resolves the relative path
    against the run folder again (`hftl.config.load`), so the absolute path stays in memory only.
    """
    if not isinstance(value, str) or not value or not (os.path.isabs(value) or os.path.exists(value)):
        return value
    try:
        return os.path.relpath(Path(value).resolve(), Path(run_dir).resolve())
    except ValueError:  # another drive (Windows): no relative form exists
        return value


def _portable_output_dir(value: str) -> str:
    """A relative output_dir as written; an absolute one relative to the working folder, or its name."""
    if not os.path.isabs(value):
        return value
    relative = os.path.relpath(value)
    return relative if not relative.startswith("..") else Path(value).name


def portable_config(config: RunConfig, run_dir: str | Path) -> dict:
    """The config as saved in a run folder: local input paths relative to it, no absolute paths, no tokens."""
    data = config.to_dict()
    for section, key in _INPUT_PATH_FIELDS:
        if isinstance(data.get(section), dict) and key in data[section]:
            data[section][key] = portable_path(data[section][key], run_dir)
    training = data.get("training") or {}
    for key, value in training.items():
        if key in _SECRET_TRAINING_KEYS:
            training[key] = None
        elif key == "output_dir" and isinstance(value, str):
            training[key] = _portable_output_dir(value)
        elif isinstance(value, str) and os.path.isabs(value):
            training[key] = portable_path(value, run_dir)
    return data


def portable_argv(argv: list[str], run_dir: Path) -> list[str]:
    """The command line with absolute paths (also in KEY=PATH) made relative to the run folder."""
    portable = []
    for arg in argv:
        key, sep, value = arg.partition("=") if "=" in arg else ("", "", arg)
        portable.append(f"{key}{sep}{portable_path(value, run_dir)}" if os.path.isabs(value) else arg)
    return portable
