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
    parser.add_argument("--quantize", choices=["int8"],
                        help="with --onnx: int8 weights (ONNX Runtime dynamic quantization), measured on the run's "
                             "test (else validation) data against the float32 model: metric, label agreement, size, "
                             "throughput, written to OUT_DIR/quantization.json and its card")
    parser.add_argument("--max-drop", type=float, metavar="POINTS",
                        help="with --quantize: refuse (exit 2, nothing written) when the task's headline metric "
                             "falls by more than POINTS (metric x 100); default 1.0")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.errors import HftlError

    if args.quantize and not args.onnx:
        raise HftlError("--quantize applies to --onnx exports: hftl export RUN_DIR --onnx OUT_DIR --quantize int8.")
    if args.max_drop is not None and not args.quantize:
        raise HftlError("--max-drop applies with --quantize int8.")
    if args.quantize:
        from hftl.quantize import DEFAULT_MAX_DROP, deployment_table, export_int8

        max_drop = DEFAULT_MAX_DROP if args.max_drop is None else args.max_drop
        figures = export_int8(args.run_dir, args.onnx, max_drop=max_drop, overwrite=args.overwrite)
        print(deployment_table(figures))
        print(f"int8 ONNX model written to {args.onnx}; predict with: hftl predict {args.onnx} --input FILE")
        return 0
    if args.onnx:
        from hftl.onnx_export import export_onnx

        out = export_onnx(args.run_dir, args.onnx, overwrite=args.overwrite)
        print(f"ONNX model written to {out}; predict with: hftl predict {out} --input FILE")
        return 0
    from hftl.export import export_merged

    out = export_merged(args.run_dir, args.merged, overwrite=args.overwrite, **trust_of(args))
    print(f"merged model written to {out}; load it with transformers.pipeline(..., model={str(out)!r})")
    return 0
