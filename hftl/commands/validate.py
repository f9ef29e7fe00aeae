"""`hftl validate CONFIG`: every check `train` makes before loading a model, and those `hftl tune` makes of the
config's `search:` section (keys, ranges, and every value the space can give), and nothing else.

`--show-example N` also prints training example N as the model will see it, for tasks that can show one (the
recipe's `describe_example`): the rendered text with the trained tokens marked, and the training set's lengths.
"""

from hftl.commands import add_config_arguments, overrides_of


def register(subparsers):
    parser = subparsers.add_parser("validate", help="check a config and its data without training",
                                   description="Run all config and data checks; exit 2 listing every problem.")
    add_config_arguments(parser)
    parser.add_argument("--show-example", type=int, default=None, metavar="N",
                        help="also print training example N as the model sees it (trained tokens between [[ ]]), "
                        "with the token-length histogram of the training set (chat tasks)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.errors import ConfigError, HftlError
    from hftl.preflight import load_config
    from hftl.tasks import get_recipe_class
    from hftl.tune.space import read_space

    overrides = overrides_of(args)
    try:
        config, problems = load_config(args.config, overrides), []
    except ConfigError as err:
        config, problems = None, list(err.problems)
    # a search: section is checked as `hftl tune` checks it before its first trial, in the same message
    space, _, search_problems = read_space(args.config, overrides, defaults=False)
    problems += [p for p in search_problems if p not in problems]
    if problems:
        raise ConfigError(problems, str(args.config))
    print(f"{args.config}: OK (task {config.task}, model {config.model.name_or_path}, strategy {config.model.strategy})")
    if space is not None:
        print(f"search: {space.summary()}; hftl tune samples it (docs/tuning.md)")
    if args.show_example is not None:
        recipe = get_recipe_class(config.task)(config)
        describe = getattr(recipe, "describe_example", None)
        if describe is None:
            raise HftlError(f"--show-example: task '{config.task}' has no example view.")
        print(describe(args.show_example))
    return 0
