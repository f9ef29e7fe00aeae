"""Runs several hftl trainings one after another in one distributed launch, for tests/test_conformance.py.

    accelerate launch --config_file recipes/accelerate/cpu_ddp.yaml tests/conformance_worker.py JOBS.json

JOBS.json holds {"root": folder, "jobs": [{"name", "config", "resume", "copy_from", "keep", "env"}, ...]}. Each
job is `hftl train CONFIG` (`--resume` with "resume"); with "copy_from", rank 0 first copies that run's
config.yaml, manifest.json and checkpoint folder "keep" into the job's output folder: a run stopped after that
checkpoint. Every rank writes <root>/result-<rank>.json: per job, its exit status and every file the rank
wrote below <root> (tests/write_audit.py).

With HFTL_TEST_FSDP_ON_CPU=1 the FSDP plugin that `accelerate launch` configures is kept on CPU, where
accelerate 1.15 drops it (see `enable_fsdp_on_cpu`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/: write_audit
from write_audit import WriteAudit  # noqa: E402

ROOT = os.path.realpath(json.loads(Path(sys.argv[1]).read_text())["root"])
RANK = os.environ.get("RANK", "0")


def enable_fsdp_on_cpu() -> None:
    """Keep the FSDP plugin on CPU processes (gloo).

    accelerate 1.15.0's `AcceleratorState.__init__` turns FSDP on only for GPU-like distributed types
    (MULTI_GPU, MULTI_XPU, ...); on CPU processes (MULTI_CPU) it drops the plugin and silently runs DDP.
    torch 2.13's FSDP2 (`fully_shard`) itself runs on CPU with gloo, so this sets what accelerate would have
    set for a GPU: the FSDP distributed type and the plugin. Everything after that (wrapping, sharded
    training, state-dict gathering, FSDP checkpoints) is accelerate's and the Trainer's unchanged code.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = __init__


def copy_stopped_run(source: Path, target: Path, keep: str) -> None:
    """`target`: the run at `source` as if it had stopped right after saving checkpoint `keep`."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("config.yaml", "manifest.json"):
        shutil.copyfile(source / name, target / name)
    shutil.copytree(source / keep, target / keep)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    audit = WriteAudit(ROOT).install()
    if os.environ.get("HFTL_TEST_FSDP_ON_CPU") == "1":
        enable_fsdp_on_cpu()
    import torch.distributed as dist

    from hftl.cli import main as hftl_main

    results = []
    for job in spec["jobs"]:
        os.environ.update(job.get("env", {}))
        if job.get("copy_from") and RANK == "0":
            import yaml

            output = Path(yaml.safe_load(Path(job["config"]).read_text())["training"]["output_dir"])
            copy_stopped_run(Path(job["copy_from"]), output, job["keep"])
        if dist.is_initialized():
            dist.barrier()
        audit.label = job["name"]
        status = hftl_main(["train", job["config"]] + (["--resume"] if job.get("resume") else []))
        audit.label = None
        results.append({"name": job["name"], "status": status, "writes": audit.labelled(job["name"])})
        if dist.is_initialized():
            dist.barrier()
    Path(ROOT, f"result-{RANK}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
