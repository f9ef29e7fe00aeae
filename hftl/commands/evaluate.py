"""`hftl evaluate RUN_DIR [--data FILE]`: metrics of a finished run."""

from hftl.commands import add_trust_arguments, trust_of


def register(subparsers):
    parser = subparsers.add_parser("evaluate", help="metrics of a finished run on its test data or a new file",
                                   description="Evaluate a saved run (full, frozen or LoRA) and print its metrics.")
    parser.add_argument("run_dir", help="the output_dir of a finished hftl run")
    parser.add_argument("--data", help="a data file with the same columns as the training data (default: the run's test data)")
    parser.add_argument("--output", help="also write the metrics as JSON to this file")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.files import write_json
    from hftl.inference import load
    from hftl.report import format_split

    loaded = load(args.run_dir, **trust_of(args))
    metrics = loaded.evaluate(args.data)
    print(format_split(args.data or "test", metrics, loaded.recipe.summary_metrics))
    if args.output:
        write_json(args.output, metrics)
    return 0
