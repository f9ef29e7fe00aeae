"""`hftl ui [--root RUNS_DIR] [--port P] [--host H] [--job-niceness N]`: the local web app over a folder of runs."""

DESCRIPTION = """\
A web page to list, open, compare, try and train runs: the same functions as the other commands, over the run
folders under --root. It listens on 127.0.0.1 only, unless --host says otherwise. Needs pip install 'hftl[ui]'."""


def register(subparsers):
    from hftl.ui.jobs import JOB_NICENESS

    parser = subparsers.add_parser("ui", help="a local web app to watch, compare, try and launch runs",
                                   description=DESCRIPTION)
    parser.add_argument("--root", default="runs", help="the folder of runs to show (default: runs)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only). Another address lets "
                             "anyone who reaches it read every run under --root and start training")
    parser.add_argument("--job-niceness", type=int, default=JOB_NICENESS, metavar="N",
                        help="run training jobs N (1-19) below the UI's CPU priority: the pages stay quicker while "
                             "a job trains on every core, and the job yields to every other program (default %(default)s: "
                             "the UI's priority)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import importlib.util
    import logging

    from hftl.errors import HftlError

    if importlib.util.find_spec("gradio") is None:
        raise HftlError("hftl ui needs Gradio: pip install 'hftl[ui]'.")
    from hftl.ui.app import LOCAL_HOSTS, serve

    if args.host not in LOCAL_HOSTS:
        logging.getLogger("hftl.ui").warning(
            "listening on %s:%d, not only on this machine: anyone who can reach it can read every run, config and "
            "log under %s, run predictions, and start, stop or push runs (with this machine's Hub login). The UI "
            "has no password; put it behind an authenticating proxy or use --host 127.0.0.1 with an SSH tunnel.",
            args.host, args.port, args.root)
    if not 0 <= args.job_niceness <= 19:
        raise HftlError(f"--job-niceness: must be between 0 and 19, got {args.job_niceness}.")
    serve(args.root, host=args.host, port=args.port, job_niceness=args.job_niceness)
    return 0
