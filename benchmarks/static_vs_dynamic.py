"""Static against dynamic int8 quantization of one run's ONNX export, side by side in one process (docs/deployment.md).

    .venv/bin/python benchmarks/static_vs_dynamic.py runs/sst2-teacher --calibration-rows 256

`hftl export --quantize int8` uses ONNX Runtime's dynamic quantization (int8 weights; activation ranges computed
per batch at run time). Static quantization fixes the activation ranges beforehand from calibration data (here:
the first --calibration-rows texts of the run's training file, MinMax), which saves the per-batch range
computation but can clip. Both start from the same float32 export; each is timed on the run's test texts (batch
--batch-size, --repeats passes interleaved after a warm-up, the median) and scored by test accuracy (argmax of the
logits, no decisions: the comparison is between the two int8 models and float32). Text classification runs only.
The machine (CPU flags, threads) is printed with the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished text-classification run")
    parser.add_argument("--calibration-rows", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def read_rows(path: Path, text_column: str, label_column: str, limit: int | None = None):
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return [r[text_column] for r in rows], [r[label_column] for r in rows]


def main(argv=None) -> int:
    import numpy as np
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from tokenizers import Tokenizer

    from hftl.onnx_export import export_onnx
    from hftl.run_dir import RunDir
    from machine import interleaved_throughput, print_results

    args = parse_args(argv)
    data = RunDir(args.run).saved_config()["data"]
    columns = data.get("text_column", "text"), data.get("label_column", "label")
    texts, gold = read_rows((args.run / data["test"]).resolve(), *columns)
    calibration, _ = read_rows((args.run / data["train"]).resolve(), *columns, limit=args.calibration_rows)
    labels = json.loads((args.run / "labels.json").read_text(encoding="utf-8"))["id2label"]

    with tempfile.TemporaryDirectory() as tmp:
        float_dir = export_onnx(args.run, Path(tmp) / "float32")
        tokenizer = Tokenizer.from_file(str(float_dir / "tokenizer.json"))
        pad = json.loads((float_dir / "tokenizer_config.json").read_text(encoding="utf-8")).get("pad_token", "[PAD]")
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad)
        tokenizer.enable_truncation(data.get("max_length") or 128)

        def batches(items):
            for start in range(0, len(items), args.batch_size):
                encodings = tokenizer.encode_batch(items[start:start + args.batch_size])
                yield {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                       "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                       "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}

        class Calibration(CalibrationDataReader):
            def __init__(self, names):
                self.feeds = ({k: v for k, v in b.items() if k in names} for b in batches(calibration))

            def get_next(self):
                return next(self.feeds, None)

        source = str(float_dir / "model.onnx")
        names = {i.name for i in onnxruntime.InferenceSession(source).get_inputs()}
        paths = {"float32 ONNX": source, "dynamic int8 (hftl's)": str(Path(tmp) / "dynamic.onnx"),
                 "static int8, QDQ, MinMax": str(Path(tmp) / "static.onnx")}
        quantize_dynamic(source, paths["dynamic int8 (hftl's)"], weight_type=QuantType.QInt8, per_channel=False)
        start = time.perf_counter()
        quantize_static(source, paths["static int8, QDQ, MinMax"], Calibration(names), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=False)
        calibration_seconds = time.perf_counter() - start
        sessions = {name: onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
                    for name, path in paths.items()}
        feeds = [{k: v for k, v in b.items() if k in names} for b in batches(texts)]

        def predict(session):
            return np.concatenate([session.run(["logits"], feed)[0] for feed in feeds]).argmax(-1)

        figures = {}
        for name, session in sessions.items():
            predicted = [labels[str(i)] for i in predict(session)]
            figures[name] = {"accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(gold),
                             "size_mb": Path(paths[name]).stat().st_size / 1e6, "predicted": predicted}
        speeds = interleaved_throughput({name: (lambda s=session: predict(s)) for name, session in sessions.items()},
                                        len(texts), args.repeats)
    reference = figures["float32 ONNX"]["predicted"]
    lines = ["| model | size (MB) | texts/s | test accuracy | label agreement with float32 |", "|---|---:|---:|---:|---:|"]
    for name, row in figures.items():
        row["texts_per_second"] = speeds[name]
        row["agreement"] = sum(a == b for a, b in zip(row.pop("predicted"), reference)) / len(reference)
        lines.append(f"| {name} | {row['size_mb']:.1f} | {row['texts_per_second']:.0f} | {row['accuracy']:.4f} | "
                     f"{row['agreement']:.4f} |")
    print_results(f"{len(texts)} test texts, batch {args.batch_size}, {args.repeats} timed passes each (median); "
                  f"static calibration on {len(calibration)} training texts took {calibration_seconds:.1f} s",
                  lines, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
