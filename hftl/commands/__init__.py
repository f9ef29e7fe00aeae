"""`hftl` subcommands: each module defines `register(subparsers)`; keep their imports light."""

RUN_CONFIG_HELP = "a run config (YAML); see recipes/configs/ and docs/config.md"


def add_config_arguments(parser) -> None:
    """CONFIG plus the override flags shared by `train` and `validate`."""
    parser.add_argument("config", help=RUN_CONFIG_HELP)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.learning_rate=1e-4 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")


def overrides_of(args) -> list[str]:
    extra = [f"{flag}=true" for flag in ("overwrite", "resume") if getattr(args, flag, False)]
    return list(args.overrides) + extra


def add_trust_arguments(parser) -> None:
    """The two switches that let a finished run's base checkpoint run code; only the user turns them on, never
    the run folder's saved config."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run modelling code shipped with the base checkpoint (off unless given here)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow pickle (.bin) weights of the base checkpoint; unpickling can run arbitrary code")


def trust_of(args) -> dict:
    return {"trust_remote_code": args.trust_remote_code, "allow_pickle": args.allow_pickle}
