"""Export a classifier to ONNX for CPU serving, and run it with ONNX Runtime through hftl's batching path.

The exported folder holds `model.onnx` (dynamic batch and sequence axes, output `logits`), the tokenizer,
the model's `config.json`, the run's records when there are some (`config.yaml`, `labels.json`), and
`onnx_export.json` (logits per text or token, inputs, versions, and the largest logit difference from PyTorch measured right
after the export). `OnnxClassifier` loads such a folder and predicts like `hftl.load(run).predict` (the run's
`Decisions`), its raw probabilities like `hftl.batch_inference.uncalibrated_probabilities` (same tokenisation, length sorting and token budget), with neither torch nor the run's weights.

The export uses `torch.onnx.export(dynamo=True)`, not optimum-onnx: optimum-onnx 0.1.0 (the latest release)
requires transformers<4.58 and optimum~=2.1, and installing it would downgrade transformers 5.x to 4.57.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from hftl.batch_inference import DEFAULT_CHUNK_SIZE, DEFAULT_TOKEN_BUDGET, run_batched, softmax
from hftl.decisions import SINGLE, Decisions
from hftl.data.labels import LabelMap
from hftl.errors import HftlError
from hftl.export import prepare_export_folder
from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
EXPORT_RECORD = "onnx_export.json"
#: what the one `logits` output is given for -> the transformers Auto class exported
AUTO_CLASSES = {"text": "AutoModelForSequenceClassification", "token": "AutoModelForTokenClassification"}
#: traced at batch 2 (a size-1 axis would be specialised to 1), the second row padded
EXAMPLE = ["an example sentence to trace the model with", "and a shorter one"]
#: checked after the export: a batch of another size and length than the traced one
CHECK = ["a check sentence", "one more, which is somewhat longer than the first one was", "third", "a fourth text"]
#: protobuf cannot hold a model over 2 GB in one file: larger weights go to `model.onnx.data`
_ONE_FILE_LIMIT = 1_500_000_000


def _logits_per(folder: Path) -> str:
    """"text" or "token": what the classifier in `folder` predicts for, from its run's task declaration (a plain
    model folder: its architecture's name)."""
    if RunDir(folder).config_file.is_file():
        from hftl.tasks import get_recipe_class

        task = RunDir(folder).task_name()
        name = get_recipe_class(str(task)).auto_model_class
        per = {auto: per for per, auto in AUTO_CLASSES.items()}.get(name)
        if per is None:
            raise HftlError(f"ONNX export supports text and token classifiers; {folder} is a '{task}' run.")
        return per
    architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or [""]
    return "token" if architectures[0].endswith("ForTokenClassification") else "text"


def export_onnx(model_dir: str | Path, out_dir: str | Path, logits_per: str | None = None, *, overwrite: bool = False,
                opset: int | None = None, atol: float = 1e-4) -> Path:
    """Write an ONNX Runtime-ready folder for a text or token classifier.

    Args:
        model_dir (`str` or `Path`): a plain transformers model folder: a full or frozen hftl run, a merged
            export (`hftl export --merged`), or any saved classifier. A LoRA run is merged first.
        out_dir (`str` or `Path`): the folder to write (new or empty).
        logits_per (`str`, *optional*): "text" (a sequence classifier) or "token" (a token classifier); default:
            from the run's task, else the model's architecture.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty `out_dir`.
        opset (`int`, *optional*): the ONNX opset (default: torch's).
        atol (`float`, *optional*, defaults to 1e-4): the largest logit difference from PyTorch accepted (times
            the largest logit when that is over 1).
    """
    source, out = Path(model_dir), Path(out_dir)
    if not (source / "config.json").is_file() and not (source / "adapter_config.json").is_file():
        raise HftlError(f"{source} holds no transformers model (no config.json). Give a finished run folder or "
                        "a folder written by `hftl export --merged`.")
    _import_onnxruntime()  # before the slow export, not after it
    per = logits_per or _logits_per(source)
    if per not in AUTO_CLASSES:
        raise HftlError(f"logits_per must be one of {', '.join(AUTO_CLASSES)}, got '{per}'.")
    prepare_export_folder(out, source, overwrite)
    if (source / "adapter_config.json").is_file():
        from hftl.export import export_merged

        with tempfile.TemporaryDirectory() as merged:
            export_merged(source, Path(merged) / "model", card=False)
            return _export(Path(merged) / "model", out, per, opset, atol, records_from=source)
    return _export(source, out, per, opset, atol, records_from=source)


def _export(source: Path, out: Path, per: str, opset: int | None, atol: float, records_from: Path) -> Path:
    import inspect

    import torch
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = getattr(transformers, AUTO_CLASSES[per]).from_pretrained(source, use_safetensors=True).eval()
    model.config.use_cache = False  # decoders: no key/value cache outputs in the graph
    accepted = inspect.signature(model.forward).parameters
    example = tokenizer(EXAMPLE, padding=True, return_tensors="pt")
    names = [name for name in example if name in accepted]
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    kwargs = {name: example[name] for name in names}
    one_file = sum(p.numel() * p.element_size() for p in model.parameters()) < _ONE_FILE_LIMIT
    torch.onnx.export(model, (), str(out / ONNX_FILE), kwargs=kwargs, input_names=names, output_names=["logits"],
                      dynamic_shapes={name: {0: batch, 1: sequence} for name in names}, dynamo=True,
                      external_data=not one_file, opset_version=opset, verbose=False)
    tokenizer.save_pretrained(out)
    model.config.save_pretrained(out)
    for name in (RunDir.CONFIG, *RunDir.RECORDS):  # the run's records: the folder still says what the run was
        if (records_from / name).is_file():
            shutil.copyfile(records_from / name, out / name)
    difference, scale = _max_difference(model, tokenizer, out, names)
    record = {"logits_per": per, "inputs": names, "output": "logits", "max_abs_logit_difference": difference,
              "max_abs_logit": scale,
              "torch": torch.__version__, "transformers": transformers.__version__, "source": str(source)}
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if not difference <= atol * max(1.0, scale):  # float32 rounding grows with the logits' size
        raise HftlError(f"the ONNX model in {out} differs from PyTorch by {difference:.2e} in logits of up to "
                        f"{scale:.1f} (more than {atol:g} x max(1, {scale:.1f})); the exporter mis-translated an operation of this architecture. Serve the "
                        "PyTorch model instead, and report the model type.")
    logger.info("ONNX model written to %s (largest logit difference from PyTorch %.1e)", out, difference)
    return out


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise HftlError("ONNX export and serving need onnxruntime, onnx and onnxscript: pip install 'hftl[onnx]'.") from None
    return onnxruntime


def _max_difference(model, tokenizer, out: Path, names: list[str]) -> tuple[float, float]:
    """(largest |ONNX - PyTorch| logit difference, largest |logit|) on a batch unlike the traced one."""
    import torch

    onnxruntime = _import_onnxruntime()

    batch = tokenizer(CHECK, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**{name: batch[name] for name in names}).logits.numpy()
    session = onnxruntime.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {name: batch[name].numpy() for name in names})[0]
    mask = batch["attention_mask"].numpy().astype(bool)
    if expected.ndim == 3:  # token logits: padding positions are not predictions
        expected, got = expected[mask], got[mask]
    return float(np.abs(expected - got).max()), float(np.abs(expected).max())


def is_onnx_folder(folder: str | Path) -> bool:
    """Whether `folder` was written by `export_onnx`."""
    return (Path(folder) / ONNX_FILE).is_file() and (Path(folder) / EXPORT_RECORD).is_file()


def _label_names(folder: Path, model_config) -> list[str]:
    """The run's labels (labels.json), else the exported model's own `id2label`."""
    labels = RunDir(folder).labels() or LabelMap.from_model_config(model_config)
    return list(labels.names)


def _max_length(folder: Path) -> int | None:
    """The run's `data.max_length` (None for a folder exported from a plain model, without config.yaml)."""
    return (RunDir(folder).saved_config().get("data") or {}).get("max_length")


class OnnxClassifier:
    """A classifier exported by `export_onnx`, run with ONNX Runtime on hftl's batching path.

    A text classifier predicts here by itself (`predict`, `uncalibrated_probabilities`). Either kind is also a model the
    recipes predict with: `hftl.load(folder)` of an export of a run gives it to the run's recipe, which calls
    `forward` where it would call the PyTorch model (`hftl.batch_inference.model_forward`).

    Attributes: `label_names`, `decisions` (the run's calibration.json: problem type, temperature, thresholds,
    score range), `max_length` (the run's `data.max_length`, else the tokenizer's limit), `tokenizer`, `session`,
    `config` (the model's transformers config), `logits_per` ("text" or "token"), `device_type` ("cpu").

    Args:
        folder (`str` or `Path`): a folder written by `export_onnx`.
        threads (`int`, *optional*): ONNX Runtime's intra-op threads (default: one per physical core).
        providers (`list[str]`, *optional*): execution providers (default: CPU).
        spin (`bool`, *optional*, defaults to `False`): let idle worker threads spin-wait for work. Off: on a
            shared CPU spinning threads take cycles from everything else, and batches here are large enough
            that waking threads costs little.
        expected_class (`str`, *optional*): the transformers Auto class a recipe predicts with; an export of
            another kind is refused.
    """

    device_type = "cpu"

    def __init__(self, folder: str | Path, *, threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = False, expected_class: str | None = None):
        onnxruntime = _import_onnxruntime()
        from transformers import AutoConfig, AutoTokenizer

        self.folder = Path(folder)
        if not is_onnx_folder(self.folder):
            raise HftlError(f"{self.folder} is not an ONNX export (no {ONNX_FILE} and {EXPORT_RECORD}). Write one "
                            f"with `hftl export RUN_DIR --onnx {self.folder}`.")
        record = json.loads((self.folder / EXPORT_RECORD).read_text(encoding="utf-8"))
        self.logits_per = record.get("logits_per")
        if expected_class and AUTO_CLASSES.get(self.logits_per) != expected_class:
            raise HftlError(f"{self.folder} holds an ONNX {self.logits_per} classifier, not the "
                            f"{expected_class} this run's task predicts with.")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = onnxruntime.InferenceSession(str(self.folder / ONNX_FILE), options,
                                                    providers=providers or ["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.config = AutoConfig.from_pretrained(self.folder)
        self.label_names = _label_names(self.folder, self.config)
        # as `ClassificationRecipe.load_trained` reads them: the run's calibration.json, else the model's problem type
        self.decisions = Decisions.load(RunDir(self.folder), self.config.problem_type or SINGLE)
        self.max_length = _max_length(self.folder)

    def forward(self, arrays: dict) -> np.ndarray:
        """float32 logits of one padded batch (int64 arrays by input name)."""
        return self.session.run(["logits"], {name: arrays[name] for name in self.input_names})[0]

    def eval(self) -> "OnnxClassifier":
        """Nothing to switch (an exported graph has no dropout); there for code that puts models in eval mode."""
        return self

    def _text_classifier_only(self) -> None:
        if self.logits_per != "text":
            raise HftlError(f"{self.folder} is a token classifier: predict with the run's recipe, "
                            f"`hftl.load('{self.folder}').predict(...)` (or `hftl predict {self.folder}`).")

    def uncalibrated_probabilities(self, texts: Iterable, *, max_length: int | None = None,
                                   token_budget: int = DEFAULT_TOKEN_BUDGET, chunk_size: int = DEFAULT_CHUNK_SIZE,
                                   progress: bool = True, total: int | None = None,
                                   return_logits: bool = False) -> Iterator[tuple[list, np.ndarray]]:
        """`(inputs, probabilities)` chunk by chunk in input order (see
        `hftl.batch_inference.uncalibrated_probabilities`): the softmax of the raw logits, without the run's
        temperature or thresholds (`predict` applies them), so a multi-label or regression export needs
        `return_logits=True`."""
        self._text_classifier_only()
        if not return_logits and self.decisions.problem_type != SINGLE:
            raise HftlError(f"{self.folder} is a {self.decisions.problem_type} model: its outputs are not "
                            "softmax probabilities. Use predict(), or "
                            "uncalibrated_probabilities(..., return_logits=True).")
        for chunk, logits in run_batched(self.forward, self.tokenizer, texts, max_length=max_length or self.max_length,
                                         token_budget=token_budget, chunk_size=chunk_size, progress=progress,
                                         total=total):
            yield chunk, logits if return_logits else softmax(logits)

    def predict(self, texts: Iterable, batch_size: int | None = None, **kwargs) -> list[dict]:
        """One dict per text, as `hftl.load(run).predict` gives it: the run's temperature, thresholds and score
        range applied (`Decisions.apply`). Batches are formed by token budget: `batch_size` is accepted
        for that interface and not used."""
        chunks = [logits for _, logits in self.uncalibrated_probabilities(texts, progress=False, return_logits=True,
                                                                          **kwargs)]
        if not chunks:
            return []
        return self.decisions.apply(np.concatenate(chunks), self.label_names)
