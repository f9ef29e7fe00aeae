"""`hftl export RUN_DIR --merged OUT_DIR`: a plain transformers model (LoRA merged in), usable without hftl."""

from hftl.commands import add_trust_arguments, trust_of


def register(subparsers):
    parser = subparsers.add_parser(
        "export", help="write a plain transformers model (LoRA merged in) that loads with pipeline()",
        description="Merge a LoRA run's adapter into the base weights and save a standard transformers folder "
                    "(model, tokenizer or image processor, card); full and frozen runs are saved as they are.")
    parser.add_argument("run_dir", help="the output_dir of a finished hftl run")
    parser.add_argument("--merged", required=True, metavar="OUT_DIR", help="the folder to write (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.export import export_merged

    out = export_merged(args.run_dir, args.merged, overwrite=args.overwrite, **trust_of(args))
    print(f"merged model written to {out}; load it with transformers.pipeline(..., model={str(out)!r})")
    return 0
