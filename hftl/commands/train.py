"""`hftl train CONFIG`: one full run."""

from hftl.commands import add_config_arguments, overrides_of


def register(subparsers):
    parser = subparsers.add_parser("train", help="fine-tune a checkpoint as a config describes",
                                   description="Train, evaluate on validation and test, save the run folder.")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.preflight import load_config
    from hftl.report import print_summary
    from hftl.tasks import get_recipe_class

    config = load_config(args.config, overrides_of(args))
    result = get_recipe_class(config.task)(config).run()
    print_summary(result)
    return 0
