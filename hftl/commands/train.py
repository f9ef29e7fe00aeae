"""`hftl train CONFIG`: one full run (or one per seed with `--seeds N`)."""

from hftl.commands import add_config_arguments, overrides_of


def register(subparsers):
    parser = subparsers.add_parser("train", help="fine-tune a checkpoint as a config describes",
                                   description="Train, evaluate on validation and test, save the run folder.")
    add_config_arguments(parser)
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="train N times with seeds training.seed, +1, ... (runs in output_dir/seed-S/) and "
                             "write the mean ± standard deviation of every metric to output_dir/metrics.json")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.errors import ConfigError
    from hftl.preflight import load_config
    from hftl.report import print_summary
    from hftl.runner import run_recipe
    from hftl.tasks import get_recipe_class

    if args.seeds < 1:
        raise ConfigError([f"--seeds: must be at least 1, got {args.seeds}."])
    config = load_config(args.config, overrides_of(args))
    if args.seeds > 1:
        from hftl.seeds import run_seeds, summary_lines

        result = run_seeds(config, args.seeds)
        recipe = result.runs[-1].recipe
        print("\n".join(["", *summary_lines(result, recipe.summary_metrics)]))
        return 0
    result = run_recipe(get_recipe_class(config.task)(config))
    print_summary(result)
    return 0
