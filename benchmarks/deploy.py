"""The deployment table (docs/deployment.md): the teacher, its int8 ONNX export, a distilled student, its int8
ONNX export, the same student trained on the labels alone, and transformers' pipeline() on the teacher, side by
side in one process, on the same test texts.

    .venv/bin/python benchmarks/deploy.py --teacher runs/sst2-teacher --teacher-int8 runs/sst2-teacher-int8 \\
        --student runs/sst2-student --student-int8 runs/sst2-student-int8 --labels-only runs/sst2-student-labels

Per model: size on disk (MB: model.safetensors, or model.onnx), texts/s predicting every test text in one call
(hftl's batching: length-sorted, token budget; pipeline(): batch 64), the latency of one text at a time (p50 and
p95 over --latency-n texts, one call each), and the test metric (accuracy of the predicted labels against the
test file's label column, the run's decisions applied). Models are timed interleaved, --repeats passes each after
a warm-up; the texts/s figure is the median pass. The machine (CPU flags, threads) is printed with the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's run folder")
    parser.add_argument("--teacher-int8", type=Path, help="hftl export TEACHER --onnx DIR --quantize int8")
    parser.add_argument("--student", type=Path, help="the distilled student's run folder")
    parser.add_argument("--student-int8", type=Path, help="the student's int8 export")
    parser.add_argument("--labels-only", type=Path, help="the same student trained without the teacher")
    parser.add_argument("--data", type=Path, help="test file (default: the teacher's data.test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-n", type=int, default=200, help="texts predicted one at a time")
    parser.add_argument("--no-pipeline", action="store_true", help="leave out pipeline() on the teacher")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def read_test(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Texts and gold labels of a TSV/CSV with a header (TSVs without quoting, as hftl reads them)."""
    import csv

    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL))
    return [r[text_column] for r in rows], [str(r[label_column]) for r in rows]


def size_mb(folder: Path) -> float:
    names = ("model.safetensors", "model.onnx", "model.onnx.data")
    return sum(p.stat().st_size for p in folder.iterdir() if p.name in names) / 1e6


def hftl_model(folder: Path):
    import hftl

    loaded = hftl.load(folder)

    def predict(texts):
        return [row["label"] for row in loaded.predict(texts)]

    return predict


def pipeline_model(folder: Path):
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), device="cpu")
    truncation = {"truncation": True, "max_length": 128}

    def predict(texts):
        return [row["label"] for row in classify(texts, batch_size=64, **truncation)]

    return predict


def main(argv=None) -> int:
    import numpy as np

    from hftl.run_dir import RunDir
    from machine import interleaved_throughput, print_results

    args = parse_args(argv)
    config = RunDir(args.teacher).saved_config()
    data = config["data"]
    test = args.data or (args.teacher / data["test"]).resolve()
    texts, gold = read_test(Path(test), data.get("text_column", "text"), data.get("label_column", "label"))
    rows = {"teacher float32 (PyTorch, hftl predict)": (args.teacher, hftl_model),
            "teacher int8 ONNX": (args.teacher_int8, hftl_model),
            "student float32 (PyTorch, distilled)": (args.student, hftl_model),
            "student int8 ONNX (distilled)": (args.student_int8, hftl_model),
            "student float32 (labels only, no teacher)": (args.labels_only, hftl_model)}
    if not args.no_pipeline:
        rows["pipeline() on the teacher"] = (args.teacher, pipeline_model)
    models = {name: (folder, make(folder)) for name, (folder, make) in rows.items() if folder is not None}
    figures = {name: {"size_mb": size_mb(folder), "latency": []} for name, (folder, _) in models.items()}
    for name, (_, predict) in models.items():  # warm-up, and the labels the metric is computed from
        predicted = predict(texts)
        figures[name]["accuracy"] = float(np.mean([str(p) == g for p, g in zip(predicted, gold)]))
    speeds = interleaved_throughput({name: (lambda p=predict: p(texts)) for name, (_, predict) in models.items()},
                                    len(texts), args.repeats)
    for text in texts[:args.latency_n]:
        for name, (_, predict) in models.items():
            start = time.perf_counter()
            predict([text])
            figures[name]["latency"].append(1000 * (time.perf_counter() - start))
    lines = ["| model | size (MB) | texts/s, batch | texts/s, one at a time | latency p50 / p95 (ms) | test accuracy |",
             "|---|---|---|---|---|---|"]
    for name, row in figures.items():
        row["texts_per_second"] = speeds[name]
        latency = np.asarray(row.pop("latency"))
        row["latency_p50_ms"], row["latency_p95_ms"] = float(np.percentile(latency, 50)), float(np.percentile(latency, 95))
        row["one_at_a_time_per_second"] = float(1000 / latency.mean())
        lines.append(f"| {name} | {row['size_mb']:.1f} | {row['texts_per_second']:.0f} | "
                     f"{row['one_at_a_time_per_second']:.0f} | {row['latency_p50_ms']:.1f} / {row['latency_p95_ms']:.1f} | "
                     f"{row['accuracy']:.4f} |")
    print_results(f"{len(texts)} test texts from {test}; {args.repeats} timed passes each (median), "
                  f"{min(args.latency_n, len(texts))} texts one at a time", lines, {"test": str(test), "rows": figures},
                  args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
