"""A student cut from its teacher: the teacher's model with K of its N layers, spread evenly (every other layer
for K = N / 2, as DistilBERT was initialised from BERT), saved as a plain transformers checkpoint.

The embeddings, the layers kept and the task head are the teacher's; the model's config says `num_hidden_layers:
K`, so `AutoModelFor*.from_pretrained(folder)` builds it with no hftl code and no missing or unused weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hftl.errors import HftlError
from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)

#: written beside the cut model: which teacher, which of its layers
STUDENT_RECORD = "student.json"


def kept_layers(total: int, keep: int) -> list[int]:
    """`keep` layer indices of `total`, spread evenly from the first: 6 -> 3 gives [0, 2, 4], 12 -> 6 every other."""
    if not 1 <= keep < total:
        raise HftlError(f"--layers must be between 1 and {total - 1} (the teacher has {total} layers), got {keep}.")
    return [i * total // keep for i in range(keep)]


def _layer_list(model):
    """(parent module, attribute name, the ModuleList) of the model's stack of transformer layers."""
    import torch

    total = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        for attribute, child in module.named_children():
            if isinstance(child, torch.nn.ModuleList) and len(child) == total and total > 1:
                return module, attribute, child
    raise HftlError(f"cannot find the {total} layers of this {type(model).__name__} to cut. Give a smaller "
                    "checkpoint with the teacher's tokenizer instead (hftl distill --student CHECKPOINT).")


def cut_layers(model, keep: int) -> list[int]:
    """Keep `keep` evenly spread layers of `model` in place; returns the indices kept."""
    import torch

    parent, attribute, layers = _layer_list(model)
    indices = kept_layers(len(layers), keep)
    setattr(parent, attribute, torch.nn.ModuleList([layers[i] for i in indices]))
    for position, layer in enumerate(getattr(parent, attribute)):
        for module in layer.modules():  # attention modules of decoders index their cache by layer
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    config = model.config
    config.num_hidden_layers = keep
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        config.layer_types = [layer_types[i] for i in indices]
    return indices


def write_cut_student(teacher_run: str | Path, keep: int, out_dir: str | Path) -> Path:
    """Save the teacher run's model cut to `keep` layers, with its tokenizer, as a checkpoint in `out_dir` (a new
    or empty folder; an earlier cut of the same teacher and layers there is reused)."""
    from hftl.inference import load

    run, out = RunDir.existing(teacher_run), Path(out_dir)
    record = {"teacher": str(run.path.resolve()), "layers": keep}
    if (out / STUDENT_RECORD).is_file():
        previous = json.loads((out / STUDENT_RECORD).read_text(encoding="utf-8"))
        if {k: previous.get(k) for k in record} == record:
            logger.info("reusing the student cut from the teacher in %s", out)
            return out
    if out.is_dir() and any(out.iterdir()):
        raise HftlError(f"{out} holds something else than a cut of {run.path} to {keep} layers. Choose another "
                        "folder, or delete it.")
    loaded = load(run.path)
    model = loaded.model
    if hasattr(model, "merge_and_unload"):  # a LoRA teacher: its adapter merged into the weights
        model = model.merge_and_unload()
    total = model.config.num_hidden_layers
    indices = cut_layers(model, keep)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    loaded.processor.save_pretrained(out)
    record.update(kept_layers=indices, teacher_layers=total)
    (out / STUDENT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("student: layers %s of the teacher's %d, saved in %s", indices, total, out)
    return out
