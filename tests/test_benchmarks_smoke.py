"""The speed suite keeps working: its smoke mode runs every variant for two steps on a tiny model.

No timing is asserted (CI machines are too noisy); only that each variant ran, trained and reported.
"""

import json
import subprocess
import sys
from pathlib import Path

from conftest import make_sentences, write_tsv

REPO = Path(__file__).resolve().parents[1]


def test_smoke_runs_every_variant(tmp_path, tiny_bert_dir):
    data = tmp_path / "sst2"
    data.mkdir()
    for name, seed in (("train.tsv", 1), ("dev.tsv", 2), ("test.tsv", 3)):
        write_tsv(data / name, make_sentences(48, seed=seed))
    out = tmp_path / "results.json"
    variants = ["baseline-padded", "baseline-best", "hftl", "hftl[speed.group_by_length=false]"]
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--data", str(data), "--model",
         str(tiny_bert_dir), "--out", str(out), "--workdir", str(tmp_path / "work"), "--variants", *variants],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["summary"]) == variants
    for name, summary in report["summary"].items():
        assert summary["train_steps"] == 2, name
        assert summary["train_samples"] == 16, name  # 2 steps x batch 8
        assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["f1"] <= 1
        assert summary["t_first_step"] < summary["wall_s"]
        assert summary["peak_rss_mb"] > 0
    # padding to max_length (32) wastes most of each batch; dynamic padding wastes less
    assert report["summary"]["baseline-padded"]["padding_fraction"] > report["summary"]["baseline-best"]["padding_fraction"]
    assert set(report["ratios"]) == {f"{h} vs {b}" for h in variants[2:] for b in variants[:2]}
    assert report["startup"]["median_s"] > 0
    assert "baseline-best" in completed.stdout and "hftl --help" in completed.stdout


def test_missing_data_skips_with_a_message(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--data", str(tmp_path / "absent")],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0
    assert "benchmark skipped" in completed.stdout and "train.tsv" in completed.stdout
