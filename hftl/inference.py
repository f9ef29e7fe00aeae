"""Use a finished run: load it, predict, evaluate on new data."""

from __future__ import annotations

from pathlib import Path

from hftl.errors import HftlError
from hftl.modeling import quiet_loading
from hftl.onnx_export import OnnxClassifier, is_onnx_folder
from hftl.run_dir import RunDir
from hftl.tasks import recipe_for_run


class LoadedRun:
    """A trained run loaded from its folder: `.model`, `.processor`, `.labels`, `.recipe` (with the run's config).

    Args:
        run_dir (`str` or `Path`): a finished run, or a folder from `hftl export` (`--merged`, or `--onnx`:
            predictions with ONNX Runtime through the run's recipe; no `evaluate`).
        trust_remote_code (`bool`, *optional*, defaults to `False`): run modelling code shipped with the base
            checkpoint. Taken from the caller only, never from the run folder's config.
        allow_pickle (`bool`, *optional*, defaults to `False`): allow pickle (.bin) weights of the base checkpoint.
    """

    def __init__(self, run_dir: str | Path, trust_remote_code: bool = False, allow_pickle: bool = False):
        self.run_dir = Path(run_dir)
        self.recipe = recipe_for_run(self.run_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        model = None
        if is_onnx_folder(self.run_dir):  # `hftl export RUN --onnx`: the run's records beside an ONNX model
            model = OnnxClassifier(self.run_dir, expected_class=self.recipe.auto_model_class)
        run = RunDir(self.run_dir)
        with quiet_loading():  # what a load prints is the user's business only when it fails
            self.processor, self.model, self.labels = self.recipe.load_trained(run, model)
        self.model.eval()
        #: what the run fitted on validation (a classifier's temperature, thresholds...), or None
        self.decisions = self.recipe.load_decisions(run, self.model)

    def in_run_precision(self):
        """A context in which the model computes in the precision of the run's own figures
        (`Recipe.inference_precision`: bf16 autocast for a `speed.bf16: true` run, else float32)."""
        from hftl.precision import autocast_for

        return autocast_for(self.model, self.recipe.inference_precision())

    def predict(self, inputs, batch_size: int = 64, **kwargs) -> list[dict]:
        """Predictions for raw inputs (texts for text tasks, image paths for image tasks)."""
        if self.decisions is not None:
            kwargs["decisions"] = self.decisions
        with self.in_run_precision():
            return self.recipe.predict(self.model, self.processor, list(inputs), self.labels, batch_size=batch_size,
                                       **kwargs)

    def evaluate(self, source: str | None = None) -> dict:
        """Metrics on a data source (default: the run's configured test data)."""
        if isinstance(self.model, OnnxClassifier):
            raise HftlError("evaluation runs the PyTorch model through the Trainer; this is an ONNX export. "
                            "Evaluate the run it was exported from, or predict with this folder.")
        with self.in_run_precision():
            return self.recipe.evaluate_trained(self.model, self.processor, self.labels, source,
                                                decisions=self.decisions)


def load(run_dir: str | Path, trust_remote_code: bool = False, allow_pickle: bool = False) -> LoadedRun:
    """Load a finished hftl run for prediction or evaluation (see `LoadedRun`)."""
    return LoadedRun(run_dir, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
