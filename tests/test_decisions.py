"""The decisions a classification run fits on validation and every consumer applies, and the run's error analysis."""

from __future__ import annotations

from hftl.run_dir import RunDir


def test_errors_jsonl_round_trip(tmp_path):
    run = RunDir(tmp_path)
    assert run.errors() == []
    rows = [{"split": "test", "input": "ça va \"bien\"\nnon", "gold": "neg", "predicted": "pos", "confidence": 0.97},
            {"split": "validation", "input": ["a", "b"], "gold": "pos", "predicted": "neg", "confidence": 0.8}]
    run.write_errors(rows)
    assert (tmp_path / RunDir.ERRORS).read_text(encoding="utf-8").count("\n") == 2  # one object a line
    assert run.errors() == rows
