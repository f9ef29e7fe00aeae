"""`hftl validate CONFIG`: every check `train` makes before loading a model, and nothing else."""

from hftl.commands import add_config_arguments, overrides_of


def register(subparsers):
    parser = subparsers.add_parser("validate", help="check a config and its data without training",
                                   description="Run all config and data checks; exit 2 listing every problem.")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.preflight import load_config

    config = load_config(args.config, overrides_of(args))
    print(f"{args.config}: OK (task {config.task}, model {config.model.name_or_path}, strategy {config.model.strategy})")
    return 0
