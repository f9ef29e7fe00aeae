"""`hftl push RUN_DIR --repo-id user/name`: upload a finished run and its card to the Hugging Face Hub."""

from hftl.commands import add_trust_arguments, trust_of


def register(subparsers):
    parser = subparsers.add_parser(
        "push", help="push a finished run (model, card, metrics) to the Hugging Face Hub",
        description="Create the repository if needed and upload the run in one commit. The token comes from "
                    "HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub. The run folder is never changed.")
    parser.add_argument("run_dir", help="the output_dir of a finished hftl run")
    parser.add_argument("--repo-id", help="'user/name' or 'org/name' (default: the run's hub.repo_id)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--adapter-only", dest="mode", action="store_const", const="adapter",
                      help="LoRA runs: push the adapter weights only (the default for LoRA runs)")
    what.add_argument("--merged", dest="mode", action="store_const", const="merged",
                      help="LoRA runs: push a plain transformers model with the adapter merged in")
    parser.add_argument("--license", help="license id for the card (default: hub.license, else the base model's)")
    parser.add_argument("--message", help="commit message")
    add_trust_arguments(parser)
    parser.set_defaults(func=run, mode="auto")


def run(args) -> int:
    from hftl.hub import push_run

    url = push_run(args.run_dir, repo_id=args.repo_id, private=args.private, mode=args.mode,
                   commit_message=args.message, license=args.license, **trust_of(args))
    print(f"pushed: {url}")
    return 0
