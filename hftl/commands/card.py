"""`hftl card RUN_DIR`: (re-)render a run's model card (README.md) and its figures."""


def register(subparsers):
    parser = subparsers.add_parser("card", help="(re-)render the model card (README.md) of a finished run",
                                   description="Render README.md (Hub metadata, metrics, figures, how to load) from "
                                               "the files of a run folder, with the templates in model_cards/.")
    parser.add_argument("run_dir", help="the output_dir of a finished hftl run")
    parser.add_argument("--repo-id", help="the Hub repository the card is for (used in its loading examples)")
    parser.add_argument("--license",
                        help="license id for the card's metadata (default: hub.license, else the base model's)")
    parser.add_argument("--output-dir", help="write the card and figures here instead of the run folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.card import render_card

    path = render_card(args.run_dir, repo_id=args.repo_id, license=args.license, out_dir=args.output_dir)
    print(f"model card written to {path}")
    return 0
