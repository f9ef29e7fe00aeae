"""The run directory: atomic writes, the resolved config, the run manifest and metrics."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

from hftl.config.schema import RunConfig
from hftl.errors import OutputExistsError

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
LABELS_FILE = "labels.json"
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


def prepare_output_dir(config: RunConfig) -> Path:
    """Create the output folder; an existing run is replaced only with `overwrite`, kept with `resume`."""
    out = Path(config.output_dir)
    if out.is_dir() and any(out.iterdir()):
        if config.overwrite:
            shutil.rmtree(out)
        elif not config.resume:
            raise OutputExistsError(
                f"{out} already holds a run. Choose a new training.output_dir, continue it with --resume, "
                "or replace it with --overwrite."
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def save_run_record(out: Path, config: RunConfig, data_fingerprints: dict[str, str], seed: int) -> None:
    """Save the resolved config and the manifest (versions, seed, data fingerprints, command)."""
    write_atomic(out / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    write_json(
        out / MANIFEST_FILE,
        {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "task": config.task,
            "seed": seed,
            "data": data_fingerprints,
            "packages": package_versions(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "command": [os.path.basename(sys.argv[0])] + sys.argv[1:],
        },
    )
