"""`hftl demo`: the README's main job, a real fine-tune on embedded defaults."""

from pathlib import Path

DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"


def register(subparsers):
    parser = subparsers.add_parser(
        "demo", help="fine-tune the packaged all-MiniLM-L6-v2 on the bundled demo set and print metrics",
        description="A complete run with no network and no downloads: packaged MiniLM checkpoint, LoRA, "
                    "the bundled synthetic sentiment set (hftl/demo_data). --data points it at real data.")
    parser.add_argument("--data", type=Path, help="a folder with train.tsv and test.tsv (e.g. ../shared/datasets/sst2)")
    parser.add_argument("--strategy", default="lora", choices=["full", "freeze", "lora"])
    parser.add_argument("--max-train-samples", type=int, default=None, help="use the first N training rows")
    parser.add_argument("--output-dir", default="runs/demo")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo run")
    parser.set_defaults(func=run)


def demo_config(data_dir: Path | None, strategy: str, max_train_samples: int | None, output_dir: str, overwrite: bool) -> dict:
    data_dir = data_dir or DEMO_DATA
    real = data_dir != DEMO_DATA
    return {  # the task is the recipe's: TextClassificationRecipe fills it in
        "model": {"name_or_path": "packaged:all-MiniLM-L6-v2", "strategy": strategy},
        "data": {"train": str(data_dir / "train.tsv"), "test": str(data_dir / "test.tsv"),
                 "text_column": "sentence", "label_column": "label", "max_length": 64,
                 "max_train_samples": max_train_samples or (8000 if real else None)},
        "training": {"output_dir": output_dir, "num_train_epochs": 1 if real else 5,
                     "learning_rate": 2e-3 if strategy == "lora" else 1e-4 if strategy == "full" else 5e-3,
                     "per_device_train_batch_size": 32, "seed": 42},
        "overwrite": overwrite,
    }


def run(args) -> int:
    from hftl.errors import HftlError
    from hftl.report import print_summary
    from hftl.runner import run_recipe
    from hftl.tasks.text_classification import TextClassificationRecipe

    if args.data and not (args.data / "train.tsv").is_file():
        raise HftlError(f"--data {args.data}: expected a folder with train.tsv and test.tsv.")
    config = demo_config(args.data, args.strategy, args.max_train_samples, args.output_dir, args.overwrite)
    print_summary(run_recipe(TextClassificationRecipe(config)))
    return 0
