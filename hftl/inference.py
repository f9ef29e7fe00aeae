"""Use a finished run: load it, predict, evaluate on new data."""

from __future__ import annotations

from pathlib import Path

from hftl.outputs import CONFIG_FILE


class LoadedRun:
    """A trained run loaded from its folder: `.model`, `.processor`, `.recipe` (with the run's config)."""

    def __init__(self, run_dir: str | Path):
        from hftl.config import load_config
        from hftl.errors import HftlError
        from hftl.tasks import get_recipe_class

        self.run_dir = Path(run_dir)
        if not (self.run_dir / CONFIG_FILE).is_file():
            raise HftlError(f"{self.run_dir} is not an hftl run folder (no {CONFIG_FILE}). Give the training.output_dir of a finished run.")
        config = load_config(self.run_dir / CONFIG_FILE, check=False)
        self.recipe = get_recipe_class(config.task)(config)
        self.processor, self.model = self.recipe.load_trained(self.run_dir)
        self.model.eval()

    def predict(self, inputs, batch_size: int = 64) -> list[dict]:
        """Predictions for raw inputs (texts for text tasks), each with label, score and probabilities."""
        return self.recipe.predict(self.model, self.processor, list(inputs), batch_size=batch_size)

    def evaluate(self, source: str | None = None) -> dict:
        """Metrics on a data source (default: the run's configured test data)."""
        return self.recipe.evaluate_trained(self.model, self.processor, source)


def load(run_dir: str | Path) -> LoadedRun:
    """Load a finished hftl run for prediction or evaluation."""
    return LoadedRun(run_dir)
