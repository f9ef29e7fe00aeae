"""`hftl tune CONFIG`: hyperparameter and strategy search (Optuna), every trial a run folder (docs/tuning.md)."""

from hftl.commands import RUN_CONFIG_HELP
from hftl.tune.defaults import DEFAULT_PRUNE_AFTER_EPOCHS, DEFAULT_PRUNER, PRUNERS


def register(subparsers):
    parser = subparsers.add_parser(
        "tune", help="search hyperparameters and strategies (Optuna), then pick robustly",
        description="Search the config's `search:` space (or the defaults for its task and strategy) with Optuna's "
                    "TPE sampler and a pruner; every trial is `hftl train` with overrides in a process of its own, "
                    "its run folder trial-N/ inside the study folder (training.output_dir). The objective is the "
                    "validation metric at each trial's best evaluation; test is evaluated once, on the pick. "
                    "Kill and restart: the study continues. Several workers on one --storage share one study.")
    parser.add_argument("config", help=RUN_CONFIG_HELP + ", with an optional search: section")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value for every trial, e.g. --set data.max_train_samples=4000")
    parser.add_argument("--trials", type=int, default=20, metavar="N",
                        help="trials the study holds in all (complete, pruned or running; failed ones are replaced), "
                             "over every worker and restart (default 20)")
    parser.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    parser.add_argument("--storage", metavar="URL",
                        help="the Optuna storage: an RDB URL (postgresql://..., mysql://..., sqlite:///file.db) or "
                             "journal:PATH (a journal file); default: a journal file in the study folder")
    parser.add_argument("--study", dest="study_name", metavar="NAME",
                        help="the study's name in the storage (default: the study folder's name)")
    parser.add_argument("--pruner", choices=PRUNERS, default=DEFAULT_PRUNER,
                        help="stop unpromising trials at an evaluation (default %(default)s): `progress` (below the "
                             "median of the finished trials at the same share of their schedules), "
                             "`progress-examples` (the same, each finished trial taken no further than the judged "
                             "trial's examples), `median` (Optuna's median pruner, at equal training examples), "
                             "`quartile` (stop only trials below the lower quartile), `halving` (successive halving) "
                             "or `none`; with any but `none`, a trial no better than chance (an "
                             "answer ignoring the input: a classifier's most frequent class or a random guess) is "
                             "stopped too, however few trials have finished")
    parser.add_argument("--prune-after-epochs", type=float, default=DEFAULT_PRUNE_AFTER_EPOCHS, metavar="E",
                        help="never prune a trial before it has trained E epochs (default %(default)s): at its first "
                             "evaluations a slow starter looks like a bad trial")
    parser.add_argument("--sampler-seed", type=int, metavar="N",
                        help="seed TPE (default: unseeded): one worker then visits the space in a reproducible order, "
                             "e.g. to compare a study with and without pruning; several workers need different seeds")
    parser.add_argument("--metric", help="the validation metric to optimise (default: training.metric_for_best_model, "
                                         "else the task's: macro-F1 for classification, the loss otherwise)")
    parser.add_argument("--top", type=int, default=1, metavar="K", help="re-run the K best configurations ...")
    parser.add_argument("--seeds", type=int, default=1, metavar="S",
                        help="... with S seeds each (the trial is the first) and pick by the mean (default 1: the "
                             "best trial)")
    parser.add_argument("--launcher", metavar="CMD",
                        help="run each trial under this launcher, e.g. \"accelerate launch --config_file "
                             "recipes/accelerate/multi_gpu.yaml\" (parameters are sampled once per trial)")
    parser.add_argument("--no-select", dest="select", action="store_false",
                        help="run trials only (an extra worker): leave the re-runs, test and best.yaml to the "
                             "worker started without it")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.tune.study import TuneOptions, prepare
    from hftl.tune.workflow import tune

    options = TuneOptions(trials=args.trials, timeout=args.timeout, storage=args.storage, study_name=args.study_name,
                          pruner=args.pruner, prune_after_epochs=args.prune_after_epochs,
                          sampler_seed=args.sampler_seed, metric=args.metric, top=args.top, seeds=args.seeds,
                          launcher=args.launcher, select=args.select)
    plan = prepare(args.config, args.overrides, options)
    return tune(plan, options)
