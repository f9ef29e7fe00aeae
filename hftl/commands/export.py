"""`hftl export RUN_DIR --merged OUT_DIR | --onnx OUT_DIR`: a plain transformers model (LoRA merged in), usable
without hftl, or an ONNX model for CPU serving with ONNX Runtime."""

from hftl.commands import add_trust_arguments, trust_of


def register(subparsers):
    parser = subparsers.add_parser(
        "export", help="write a plain transformers model (LoRA merged in) or an ONNX model for CPU serving",
        description="--merged: merge a LoRA run's adapter into the base weights and save a standard transformers "
                    "folder (model, tokenizer or image processor, card); full and frozen runs are saved as they are. "
                    "--onnx: an ONNX model of a text or token classifier, checked against PyTorch, that "
                    "`hftl predict OUT_DIR` serves with ONNX Runtime (needs pip install 'hftl[onnx]').")
    parser.add_argument("run_dir", help="the output_dir of a finished hftl run")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--merged", metavar="OUT_DIR", help="a plain transformers model folder (new or empty)")
    what.add_argument("--onnx", metavar="OUT_DIR", help="an ONNX Runtime folder (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.onnx:
        from hftl.onnx_export import export_onnx

        out = export_onnx(args.run_dir, args.onnx, overwrite=args.overwrite)
        print(f"ONNX model written to {out}; predict with: hftl predict {out} --input FILE")
        return 0
    from hftl.export import export_merged

    out = export_merged(args.run_dir, args.merged, overwrite=args.overwrite, **trust_of(args))
    print(f"merged model written to {out}; load it with transformers.pipeline(..., model={str(out)!r})")
    return 0
