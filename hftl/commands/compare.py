"""`hftl compare RUN_OR_STUDY ...`: one table over runs, multi-seed runs and studies (see `hftl.compare`)."""


def register(subparsers):
    parser = subparsers.add_parser(
        "compare", help="compare finished runs, multi-seed runs or whole studies side by side",
        description="One table (task, checkpoint, strategy, the hyperparameters that differ, validation and test "
                    "metrics as mean ± std for seed groups, training time, trainable parameters), the config diff, "
                    "overlaid training curves and, for a study, Optuna's figures. Printed, and written to --output.")
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_STUDY",
                        help="run folders (training.output_dir), multi-seed folders or study folders")
    parser.add_argument("--output", metavar="DIR",
                        help="folder for comparison.md, comparison.csv and the figures (default: compare/ inside the "
                             "study when one study is given, else ./comparison)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from hftl.compare import compare_runs

    comparison = compare_runs(args.paths)
    if args.output:
        output = Path(args.output)
    elif len(args.paths) == 1 and comparison.studies:
        output = comparison.studies[0] / "compare"
    else:
        output = Path("comparison")
    files = comparison.write(output)
    print(comparison.terminal_table())
    if comparison.config_diff:
        print("\nconfig diff:")
        for key, values in comparison.config_diff.items():
            print(f"  {key}: " + " | ".join("" if v is None else str(v) for v in values))
    print(f"\nwritten: {', '.join(str(p) for p in files.values())}")
    return 0
