"""Int8 ONNX export of a finished run, measured on the run's own held-out split before it is handed over.

`export_int8` exports the run's float32 ONNX model (`hftl.onnx_export.export_onnx`), quantizes its weights to
int8 with ONNX Runtime's dynamic quantization (`onnxruntime.quantization.quantize_dynamic`: int8 weights,
activations quantized per batch at run time, so no calibration data is needed), and evaluates three models on
the run's test split (else its validation split) through the run's own recipe, exactly as `hftl evaluate` does:
the float32 PyTorch model (what `hftl predict RUN` serves), the float32 ONNX model and the int8 ONNX model. It
records the task's headline metric, the agreement of predicted labels with the float32 model, the size on disk
and the throughput of each in `quantization.json` and in the export's card (`README.md`, section "Deployment").

When the headline metric falls by more than `max_drop` points (x100, e.g. accuracy 0.912 -> 0.905 is 0.7 points)
the export is refused: the folder is removed and `QuantizationRefused` (exit status 2) carries the figures.

Static quantization (int8 activations with ranges calibrated on data) is not offered: it needs calibration data
and an operator-by-operator choice of what to quantize, and has not been measured against dynamic quantization
here (issue 26 asks for it only where it measurably beats dynamic).

The folder is an ONNX export like `hftl export --onnx` writes: `hftl predict OUT` and `hftl.load(OUT)` serve it
with the run's decisions (temperature, thresholds, score range), and it runs without torch (docs/deployment.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hftl.errors import HftlError
from hftl.onnx_export import AUTO_CLASSES, EXPORT_RECORD, ONNX_FILE, OnnxClassifier, export_onnx
from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)

#: the figures, written into the export folder
QUANTIZATION_RECORD = "quantization.json"
#: the default of `--max-drop`: the largest fall of the headline metric accepted, in points (metric x 100)
DEFAULT_MAX_DROP = 1.0
#: the quantization methods offered
METHODS = ("int8",)
DEPLOYMENT_HEADING = "## Deployment"


class QuantizationRefused(HftlError):
    """The int8 model lost more of the headline metric than allowed; `figures` holds the measurements."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


def check_quantizable(run_dir: str | Path) -> tuple[object, str]:
    """(the run's recipe, its held-out data source); `HftlError` for a run that cannot be quantized and measured:
    not a run folder, a task whose model is neither a text nor a token classifier, no held-out data."""
    from hftl.tasks import recipe_for_run

    run = RunDir.existing(run_dir)
    recipe = recipe_for_run(run.path)
    if recipe.auto_model_class not in AUTO_CLASSES.values():
        raise HftlError(f"--quantize int8 supports text and token classification runs; {run.path} is a "
                        f"'{recipe.task}' run, whose model has more than one logits output or generates text. "
                        "Export it with --merged and serve it with PyTorch.")
    source = recipe.evaluation_source(None)  # DataError when the run has neither test nor validation data
    return recipe, source


def export_int8(run_dir: str | Path, out_dir: str | Path, *, max_drop: float | None = DEFAULT_MAX_DROP,
                overwrite: bool = False, threads: int | None = None) -> dict:
    """Write an int8 ONNX export of a finished run and measure it; returns the figures (also in
    `out_dir/quantization.json`).

    Args:
        run_dir (`str` or `Path`): a finished text or token classification run (full, frozen or LoRA).
        out_dir (`str` or `Path`): the folder to write (new or empty).
        max_drop (`float`, *optional*, defaults to `DEFAULT_MAX_DROP`): the largest fall of the headline metric
            accepted, in points; None accepts any.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty `out_dir`.
        threads (`int`, *optional*): ONNX Runtime's intra-op threads while measuring (default: its own).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe, source = check_quantizable(run_dir)
    run, out = RunDir(run_dir), Path(out_dir)
    if max_drop is not None and not max_drop >= 0:
        raise HftlError(f"--max-drop must be a number of points >= 0, got {max_drop}.")
    from hftl.export import prepare_export_folder

    prepare_export_folder(out, run.path, overwrite)
    with tempfile.TemporaryDirectory() as tmp:
        float_dir = export_onnx(run.path, Path(tmp) / "float32")
        for path in float_dir.iterdir():  # tokenizer, configs, the run's records
            if path.is_file() and not path.name.startswith(ONNX_FILE):
                shutil.copyfile(path, out / path.name)
        with _root_logger_at(logging.WARNING):  # the quantizer logs a line per skipped tensor on the root logger
            quantize_dynamic(str(float_dir / ONNX_FILE), str(out / ONNX_FILE), weight_type=QuantType.QInt8,
                             per_channel=False)
        _record_quantization(out, recipe)
        figures = measure(run.path, {"float32 ONNX": float_dir, "int8 ONNX": out}, source, threads=threads)
    figures["max_drop"] = max_drop
    drop = figures["drop_points"]
    if max_drop is not None and drop is not None and drop > max_drop:
        shutil.rmtree(out)
        raise QuantizationRefused(
            f"the int8 model's {figures['metric']} is {drop:.2f} points below the float32 model's on "
            f"{figures['split']} (more than --max-drop {max_drop:g}); nothing was written to {out}.\n"
            f"{deployment_table(figures)}\nServe the float32 export (hftl export --onnx), or raise --max-drop.",
            figures)
    (out / QUANTIZATION_RECORD).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    write_deployment_card(run.path, out, figures)
    logger.info("int8 ONNX model written to %s", out)
    return figures


@contextlib.contextmanager
def _root_logger_at(level: int):
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(before, level))
    try:
        yield
    finally:
        root.setLevel(before)


def _record_quantization(out: Path, recipe) -> None:
    """Say in `onnx_export.json` how the model was quantized, and the longest input (for serving without hftl)."""
    import onnxruntime

    record = json.loads((out / EXPORT_RECORD).read_text(encoding="utf-8"))
    record["quantization"] = {"method": "dynamic", "weights": "int8", "per_channel": False,
                              "onnxruntime": onnxruntime.__version__}
    record["max_length"] = getattr(recipe.config.data, "max_length", None)
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


# -- measuring ----------------------------------------------------------------------------------------------
class OnnxAsModule:
    """An `OnnxClassifier` as a model the `transformers.Trainer` evaluates (built lazily: torch is imported only
    where measuring happens). Each forward records its logits and labels, to compare models batch by batch."""

    def __new__(cls, folder: Path, threads: int | None = None):
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutput

        onnx = OnnxClassifier(folder, threads=threads)

        class OnnxModule(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.config = onnx.config
                self.records = []

            def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None):
                given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
                arrays = {name: given[name].cpu().numpy().astype(np.int64) for name in onnx.input_names}
                logits = torch.from_numpy(np.ascontiguousarray(onnx.forward(arrays), dtype=np.float32))
                self.records.append((logits.numpy(), None if labels is None else labels.cpu().numpy()))
                return SequenceClassifierOutput(loss=torch.zeros(()), logits=logits)

        return OnnxModule()


def _recording(model):
    """Record the logits and labels of each forward pass of a PyTorch model in `model.records`."""
    model.records = []

    def hook(module, args, kwargs, output):
        labels = kwargs.get("labels")
        module.records.append((output.logits.detach().float().cpu().numpy(),
                               None if labels is None else labels.cpu().numpy()))

    model.register_forward_hook(hook, with_kwargs=True)
    return model


def _evaluate(recipe, model, processor, labels, dataset, decisions) -> tuple[dict, float]:
    """(the recipe's report of `model` on `dataset`, seconds taken), through a plain `Trainer` as `hftl evaluate`."""
    from transformers import Trainer, TrainingArguments

    defaults = recipe.training_defaults()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, report_to="none", per_device_eval_batch_size=recipe.evaluation_batch_size,
                                 remove_unused_columns=defaults.get("remove_unused_columns", True), use_cpu=True,
                                 prediction_loss_only=False, disable_tqdm=True,
                                 dataloader_pin_memory=False)
        trainer = Trainer(model=model, args=args, data_collator=recipe.data_collator(processor))
        start = time.perf_counter()
        with_decisions = {} if decisions is None else {"decisions": decisions}
        report = recipe.evaluate_split(trainer, "test", dataset, labels, **with_decisions)
        return report, time.perf_counter() - start


def _predicted(records, decisions: dict, label_names) -> list:
    """What each example (text) or labelled token (token classification) is predicted, from recorded logits."""
    from hftl.decisions import predictions_from_logits

    predicted = []
    for logits, labels in records:
        if logits.ndim == 3:  # token logits: the labelled positions are the predictions that count
            keep = labels != -100 if labels is not None else np.ones(logits.shape[:2], dtype=bool)
            predicted += logits.argmax(-1)[keep].tolist()
        else:
            predicted += [row.get("label", row.get("labels", row.get("score")))
                          for row in predictions_from_logits(logits, decisions or {}, label_names)]
    return predicted


def _agreement(reference: list, other: list) -> tuple[float | None, float | None]:
    """(share of equal predicted labels, largest score difference for regression)."""
    if not reference:
        return None, None
    if isinstance(reference[0], float):
        return None, float(np.max(np.abs(np.asarray(reference) - np.asarray(other))))
    return float(np.mean([a == b for a, b in zip(reference, other)])), None


def _size_mb(folder: Path, names) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name in names) / 1e6


def measure(run_dir: Path, onnx_folders: dict[str, Path], source: str, threads: int | None = None) -> dict:
    """The headline metric, label agreement with the float32 PyTorch model, size and throughput of the run's
    model and of each ONNX folder in `onnx_folders` (name -> folder), on `source` (the run's held-out data)."""
    from hftl.inference import load

    loaded = load(run_dir)
    recipe, processor, labels = loaded.recipe, loaded.processor, loaded.labels
    dataset = recipe.prepare_source(source, processor, labels)
    metric = next(iter(recipe.index_metrics), None) or recipe.summary_metrics[0]
    decisions = loaded.decisions  # the run's, applied as hftl evaluate and hftl predict apply them
    names = labels.names if labels is not None else None
    run = RunDir(run_dir)
    models = {"float32 (PyTorch)": (_recording(loaded.model), _size_mb(run.model_dir, (
        "model.safetensors", "adapter_model.safetensors")))}
    for name, folder in onnx_folders.items():
        models[name] = (OnnxAsModule(folder, threads), _size_mb(folder, (ONNX_FILE, ONNX_FILE + ".data")))
    rows, reference = {}, None
    for name, (model, size) in models.items():
        report, seconds = _evaluate(recipe, model, processor, labels, dataset, decisions)
        predicted = _predicted(model.records, decisions, names)
        reference = predicted if reference is None else reference
        agreement, score_difference = _agreement(reference, predicted)
        rows[name] = {"metric": report.get(metric), "size_mb": round(size, 2), "seconds": round(seconds, 3),
                      "examples_per_second": round(len(dataset) / seconds, 1), "label_agreement": agreement,
                      "max_abs_score_difference": score_difference}
    base, int8 = rows["float32 (PyTorch)"], rows[list(onnx_folders)[-1]]
    drop = None if base["metric"] is None or int8["metric"] is None else round(100 * (base["metric"] - int8["metric"]), 3)
    split = "test" if source == recipe.config.data.test else "validation"
    return {"metric": metric, "split": split, "examples": len(dataset), "models": rows, "drop_points": drop,
            "speedup": round(int8["examples_per_second"] / base["examples_per_second"], 2),
            "size_ratio": round(base["size_mb"] / int8["size_mb"], 2) if int8["size_mb"] else None,
            "measured_on": "the run's held-out data through its recipe's evaluation (hftl evaluate), batch "
                           f"{recipe.evaluation_batch_size}, CPU"}


# -- the card ---------------------------------------------------------------------------------------------
def deployment_table(figures: dict) -> str:
    """The figures as a Markdown table."""
    metric = figures["metric"]
    lines = [f"| model | size (MB) | {figures['split']} {metric} | label agreement with float32 | examples/s |",
             "|---|---|---|---|---|"]
    for name, row in figures["models"].items():
        agreement = "—" if row["label_agreement"] is None else f"{row['label_agreement']:.4f}"
        value = "—" if row["metric"] is None else f"{row['metric']:.4f}"
        lines.append(f"| {name} | {row['size_mb']:.1f} | {value} | {agreement} | {row['examples_per_second']:.1f} |")
    return "\n".join(lines)


def write_deployment_card(run_dir: Path, out: Path, figures: dict) -> None:
    """The export's card: the run's card (if it has one) with a "Deployment" section holding the figures."""
    card = RunDir(run_dir) / RunDir.CARD
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# {Path(run_dir).name}\n"
    text = text.split(f"\n{DEPLOYMENT_HEADING}\n")[0].rstrip() + "\n"
    drop = figures["drop_points"]
    text += (f"\n{DEPLOYMENT_HEADING}\n\nThis folder holds the model quantized to int8 (ONNX Runtime dynamic "
             f"quantization), measured on the run's {figures['split']} split ({figures['examples']} examples):"
             f" {figures['metric']} {'' if drop is None else f'{-drop:+.2f} points, '}"
             f"{figures['speedup']:.2f}x the float32 model's throughput, {figures['size_ratio']}x smaller.\n\n"
             f"{deployment_table(figures)}\n\nServe it with `hftl predict {out.name} --input FILE`, `hftl.load(...)`,"
             " or ONNX Runtime and tokenizers alone (see hftl's docs/deployment.md).\n")
    (out / RunDir.CARD).write_text(text, encoding="utf-8")
