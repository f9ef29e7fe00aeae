"""`bash benchmarks/gpu.sh --dry-run` works end to end on CPU: every workload x variant row, numbers where they apply.

No timing is asserted; the dry run only proves the command, the Trainer wiring (attention, optimiser,
torch.compile, first-token last layer) and the table.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_bench import COLUMNS, VARIANTS  # noqa: E402


def _table(stdout: str) -> list[list[str]]:
    """The rows of the final table, each split on runs of two or more spaces."""
    import re

    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("workload") and "MFU %" in line)
    rows = []
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith("results:") or line.startswith("encoder at"):
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def test_dry_run_prints_every_variant_with_numbers(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": ""}
    completed = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run", "--peak-tflops", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    stdout = completed.stdout
    assert "RANDOM weights" in stdout and "avx512_bf16=" in stdout and "transformers" in stdout
    rows = _table(stdout)
    expected = [(workload, v.name) for workload, variants in VARIANTS.items() for v in variants]
    assert [(r[0], r[1]) for r in rows] == expected
    for row in rows:
        values = row[2:2 + len(COLUMNS)]
        if row[1] == "padding-free":
            assert values == ["-"] * len(COLUMNS) and "n/a:" in row[-1], row
            continue
        numbers = [float(v) for v in values]  # every column numeric
        samples_per_s, tokens_per_s, pad_fraction, step_ms, peak, _ = numbers  # MFU of tiny models prints as 0.0
        assert samples_per_s > 0 and tokens_per_s > samples_per_s and step_ms > 0 and peak > 0, row
        assert 0 <= pad_fraction < 1
        if row[0] == "encoder-seq128" or row[0] == "vit":
            assert pad_fraction == 0, row
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and len(report["rows"]) == len(expected)
    assert all(r["mfu"] > 0 for r in report["rows"] if r["variant"] != "padding-free")
    sst2 = {r["variant"]: r for r in report["rows"] if r["workload"] == "encoder-sst2"}
    assert sst2["compile"]["pad_fraction"] >= sst2["sdpa+fused"]["pad_fraction"]  # bucketed to multiples of 32
