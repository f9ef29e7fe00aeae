"""hftl's speed suite: `hftl train` with its defaults against plain `transformers.Trainer` scripts.

Every variant runs as its own process on the same model, data subset, seed, epochs, batch size and
learning rate; the variants are interleaved (A B C D A B C D ...) so that load from other work on the
machine spreads over all of them, and the table reports the median of the repeats (and the spread).

    .venv/bin/python benchmarks/run.py                       # SST-2 subset, 4 variants x 3 repeats
    .venv/bin/python benchmarks/run.py --variants baseline-best hftl "hftl[speed.fused_optimizer=false]"
    .venv/bin/python benchmarks/run.py --smoke --data DIR --model TINY_MODEL_DIR   # a few steps (CI)

Variants: baseline-padded, baseline-dynamic, baseline-best (see benchmarks/baselines.py), hftl, and
`hftl[key=value,...]`: hftl with `--set` overrides (e.g. `hftl[model.strategy=lora]`).
The data folder holds train.tsv, dev.tsv (validation) and test.tsv with `sentence` and `label` columns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "sst2"
BASELINES = ("baseline-padded", "baseline-dynamic", "baseline-best")
DEFAULT_VARIANTS = (*BASELINES, "hftl")
SMOKE = {"train_rows": 48, "validation_rows": 16, "test_rows": 16, "max_length": 32, "batch_size": 8,
         "repeats": 1, "max_steps": 2}
#: the columns of the printed table: (key in the summary, header, format)
COLUMNS = (
    ("wall_s", "wall s", "{:.1f}"),
    ("t_first_step", "1st step s", "{:.1f}"),
    ("train_s", "train s", "{:.1f}"),
    ("eval_s", "eval s", "{:.1f}"),
    ("train_samples_per_s", "samples/s", "{:.1f}"),
    ("nonpad_tokens_per_s", "tokens/s", "{:.0f}"),
    ("padding_fraction", "pad frac", "{:.2f}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
    ("accuracy", "test acc", "{:.4f}"),
    ("f1", "test F1", "{:.4f}"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with train.tsv, dev.tsv, test.tsv")
    parser.add_argument("--model", default="packaged:all-MiniLM-L6-v2", help="a checkpoint folder or packaged:NAME")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--train-rows", type=int, default=2000, help="first N rows of train.tsv")
    parser.add_argument("--validation-rows", type=int, default=500, help="first N rows of dev.tsv")
    parser.add_argument("--test-rows", type=int, default=None, help="first N rows of test.tsv (default: all)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant (the table shows medians)")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop training after N steps")
    parser.add_argument("--once", nargs="*", default=[], metavar="VARIANT",
                        help="variants run in the first round only (slow ones whose ratio is far from 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every variant (default: unset, torch uses all cores)")
    parser.add_argument("--no-startup", action="store_true", help="skip timing `hftl --help`")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/<time>.json)")
    parser.add_argument("--smoke", action="store_true", help=f"a few steps on tiny data: {SMOKE}")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    for name in args.variants:
        parse_variant(name)  # fail on a typo before running anything
    unknown = set(args.once) - set(args.variants)
    if unknown:
        parser.error(f"--once names variants not in --variants: {', '.join(sorted(unknown))}")
    return args


def parse_variant(name: str) -> tuple[str, list[str]]:
    """('hftl', ['speed.bf16=false']) for 'hftl[speed.bf16=false]'; (name, []) for the others."""
    match = re.fullmatch(r"hftl(?:\[(.*)\])?", name)
    if match:
        return "hftl", [o.strip() for o in (match.group(1) or "").split(",") if o.strip()]
    if name in BASELINES:
        return name, []
    raise SystemExit(f"unknown variant '{name}': use one of {', '.join(DEFAULT_VARIANTS)} or hftl[key=value,...]")


def head_lines(source: Path, target: Path, rows: int | None) -> int:
    """Copy the header and the first `rows` data lines of a TSV byte for byte; returns the rows copied."""
    with source.open(encoding="utf-8") as src, target.open("w", encoding="utf-8") as dst:
        dst.write(src.readline())
        count = 0
        for line in src:
            if rows is not None and count >= rows:
                break
            dst.write(line)
            count += 1
    return count


def prepare_data(args, workdir: Path) -> dict:
    data = Path(args.data)
    names = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    rows = {"train": args.train_rows, "validation": args.validation_rows, "test": args.test_rows}
    files, counts = {}, {}
    for split, name in names.items():
        files[split] = workdir / "data" / name
        files[split].parent.mkdir(parents=True, exist_ok=True)
        counts[split] = head_lines(data / name, files[split], rows[split])
    return {"files": files, "rows": counts}


def resolve_model(name: str) -> str:
    """A folder the baselines can load (they know nothing of hftl's `packaged:` names)."""
    if name.startswith("packaged:"):
        from hftl.config.schema import ModelConfig
        from hftl.modeling import resolve_checkpoint

        return resolve_checkpoint(ModelConfig(name_or_path=name))[0]
    return name


def hftl_config(args, data: dict, output_dir: Path) -> dict:
    """The run config a user writes for this workload: only what the workload fixes, hftl's defaults otherwise."""
    training = {"output_dir": str(output_dir), "num_train_epochs": args.epochs, "learning_rate": args.lr,
                "per_device_train_batch_size": args.batch_size, "seed": args.seed}
    if args.max_steps > 0:
        training["max_steps"] = args.max_steps
    return {
        "task": "text-classification",
        "model": {"name_or_path": args.model},
        "data": {"train": str(data["files"]["train"]), "validation": str(data["files"]["validation"]),
                 "test": str(data["files"]["test"]), "text_column": "sentence", "label_column": "label",
                 "max_length": args.max_length},
        "training": training,
        "overwrite": True,
    }


def command_for(variant: str, args, data: dict, model_dir: str, run_dir: Path) -> tuple[list[str], Path]:
    """(argv after `probe.py OUT --`, file holding the test metrics)."""
    kind, overrides = parse_variant(variant)
    if kind == "hftl":
        import yaml

        config = run_dir / "config.yaml"
        config.write_text(yaml.safe_dump(hftl_config(args, data, run_dir / "out")), encoding="utf-8")
        argv = ["hftl", "train", str(config)]  # the probe runs the console script's entry point
        for override in overrides:
            argv += ["--set", override]
        return argv, run_dir / "out" / "metrics.json"
    results = run_dir / "results.json"
    files = data["files"]
    argv = [str(HERE / "baselines.py"), "--variant", kind.split("-", 1)[1], "--model", model_dir,
            "--train", str(files["train"]), "--validation", str(files["validation"]), "--test", str(files["test"]),
            "--max-length", str(args.max_length), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--seed", str(args.seed), "--max-steps", str(args.max_steps),
            "--output-dir", str(run_dir / "out"), "--results", str(results)]
    return argv, results


def run_once(variant: str, args, data: dict, model_dir: str, run_dir: Path, env: dict) -> dict:
    """One process: wall time and peak RSS from the OS, the rest from the probe and the metrics file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    argv, metrics_file = command_for(variant, args, data, model_dir, run_dir)
    probe_file = run_dir / "probe.json"
    command = [sys.executable, str(HERE / "probe.py"), str(probe_file), "--", *argv]
    log = run_dir / "log.txt"
    start = time.time()
    with log.open("w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=str(run_dir),
                                   env={**env, "BENCH_T0": repr(start)})
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{variant} failed (exit {process.returncode}); log {log}:\n{tail}")
    probe = json.loads(probe_file.read_text(encoding="utf-8"))
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))["test"]
    rss_kb = usage.ru_maxrss  # kilobytes on Linux
    tokens, nonpad, train_s = probe["train_tokens"], probe["train_nonpad_tokens"], probe["train_s"]
    return {
        "wall_s": wall,
        "t_first_step": probe["t_first_step"],
        "train_s": train_s,
        "eval_s": probe["eval_s"],
        "train_steps": probe["train_steps"],
        "train_samples": probe["train_samples"],
        "train_samples_per_s": probe["train_samples"] / train_s if train_s else None,
        "nonpad_tokens_per_s": nonpad / train_s if train_s else None,
        "padding_fraction": 1 - nonpad / tokens if tokens else None,
        "peak_rss_mb": rss_kb / 1024,
        "accuracy": metrics["accuracy"],
        "f1": metrics["f1"],
        "loss": metrics.get("loss"),
    }


def time_startup(env: dict, repeats: int = 5) -> dict:
    """Wall seconds of `hftl --help` (a fresh interpreter each time): median and all runs."""
    hftl = Path(sys.executable).with_name("hftl")
    command = [str(hftl) if hftl.exists() else "hftl", "--help"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return {"command": "hftl --help", "median_s": statistics.median(times), "runs_s": times}


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if values:
            summary[key] = statistics.median(values)
            if len(values) > 1 and key in ("wall_s", "train_s", "eval_s", "t_first_step"):
                summary[f"{key}_range"] = [min(values), max(values)]
    return summary


def ratios(summaries: dict) -> dict:
    """For each hftl variant and each baseline: baseline wall / hftl wall (speed-up) and the same for training."""
    out = {}
    for name, summary in summaries.items():
        if parse_variant(name)[0] != "hftl":
            continue
        for base in BASELINES:
            if base in summaries:
                b = summaries[base]
                out[f"{name} vs {base}"] = {
                    "speedup_wall": b["wall_s"] / summary["wall_s"],
                    "speedup_train": b["train_s"] / summary["train_s"] if summary.get("train_s") else None,
                    "time_ratio_wall": summary["wall_s"] / b["wall_s"],
                    "accuracy_delta": summary["accuracy"] - b["accuracy"],
                }
    return out


def format_table(summaries: dict) -> str:
    header = ["variant"] + [title for _, title, _ in COLUMNS]
    rows = [header]
    for name, summary in summaries.items():
        rows.append([name] + [fmt.format(summary[key]) if summary.get(key) is not None else "-"
                              for key, _, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def machine() -> dict:
    import torch

    flags = ""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        pass
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "")
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": model,
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
            "load_average": os.getloadavg()}


def main(argv=None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data)
    missing = [n for n in ("train.tsv", "dev.tsv", "test.tsv") if not (data_dir / n).is_file()]
    if missing:
        print(f"benchmark skipped: {data_dir} lacks {', '.join(missing)} (give --data FOLDER with train.tsv, "
              "dev.tsv and test.tsv).")
        return 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hftl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # A fresh datasets cache: the first round pays parsing and tokenising, later rounds hit the cache
    # (as a user's re-runs do). Every variant gets the same treatment.
    env = {**os.environ, "HF_DATASETS_CACHE": str(workdir / "hf_datasets_cache"), "HF_HUB_OFFLINE": "1",
           **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    data = prepare_data(args, workdir)
    model_dir = resolve_model(args.model)
    started = datetime.now(timezone.utc)
    print(f"workdir {workdir}; rows {data['rows']}; variants {args.variants}; repeats {args.repeats}", flush=True)

    runs = {name: [] for name in args.variants}
    for repeat in range(args.repeats):
        for index, name in enumerate(args.variants):
            if repeat and name in args.once:
                continue
            run_dir = workdir / "runs" / f"{repeat}-{index}"
            result = run_once(name, args, data, model_dir, run_dir, env)
            runs[name].append(result)
            print(f"[{repeat + 1}/{args.repeats}] {name}: wall {result['wall_s']:.1f} s, train {result['train_s']:.1f} s, "
                  f"test acc {result['accuracy']:.4f}", flush=True)
            shutil.rmtree(run_dir / "out", ignore_errors=True)  # checkpoints: a few hundred MB each

    summaries = {name: summarise(results) for name, results in runs.items()}
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else f"run.py {' '.join(argv)}",
        "machine": machine(),
        "workload": {"model": args.model, "data": str(data_dir), "rows": data["rows"], "max_length": args.max_length,
                     "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                     "max_steps": args.max_steps, "repeats": args.repeats, "once": args.once,
                     "threads": args.threads},
        "summary": summaries,
        "ratios": ratios(summaries),
        "runs": runs,
        "total_s": (datetime.now(timezone.utc) - started).total_seconds(),
    }
    if not args.no_startup:
        report["startup"] = time_startup(env, repeats=1 if args.smoke else 5)

    print()
    print(format_table(summaries))
    for pair, ratio in report["ratios"].items():
        print(f"{pair}: {ratio['speedup_wall']:.2f}x faster end to end (train {ratio['speedup_train']:.2f}x), "
              f"test accuracy {ratio['accuracy_delta']:+.4f}")
    if "startup" in report:
        print(f"hftl --help: {report['startup']['median_s']:.2f} s (median of {len(report['startup']['runs_s'])})")
    out = Path(args.out) if args.out else HERE / "results" / f"{started:%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
