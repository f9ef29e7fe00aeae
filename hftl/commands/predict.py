"""`hftl predict RUN_DIR --input FILE|-`: predictions of a finished run, with label names and probabilities."""

import sys

from hftl.commands import add_trust_arguments, trust_of


def register(subparsers):
    parser = subparsers.add_parser(
        "predict", help="predict labels (with probabilities) for texts or images with a finished run",
        description="Read inputs (one text or image path per line, a column of a CSV/TSV/JSONL file, or standard "
                    "input), predict in batches, and write JSONL (default) or CSV.")
    parser.add_argument("run_dir", help="the output_dir of a finished hftl run, or a folder from `hftl export`")
    parser.add_argument("--input", required=True, metavar="FILE",
                        help="a text file (one input per line), a .csv/.tsv/.jsonl/.json file (see --column), "
                             "or - for standard input; image runs take image paths")
    parser.add_argument("--column",
                        help="column to read from a CSV/TSV/JSON(L) input (default: the run's text or image column)")
    parser.add_argument("--pair-column", metavar="COLUMN",
                        help="column of the second text, for a run trained on sentence pairs (default: the run's "
                             "data.text_pair_column)")
    parser.add_argument("--output", default="-",
                        help="where to write the predictions (.jsonl or .csv); default: standard output")
    parser.add_argument("--format", choices=["jsonl", "csv"],
                        help="output format (default: from --output's extension, else jsonl)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="inputs per forward pass of image and token classification (text classification "
                             "batches texts of similar length by a token budget instead)")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


#: inputs predicted per call of the run's `predict`: the input file streams through, never held whole
CHUNK = 4096


def run(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from hftl.batch_inference import chunked
    from hftl.errors import DataError
    from hftl.onnx_export import OnnxClassifier, is_onnx_folder
    from hftl.prediction_io import PredictionWriter, iter_inputs
    from hftl.run_dir import RunDir

    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if is_onnx_folder(args.run_dir) and not RunDir(args.run_dir).config_file.is_file():
        # `hftl export --onnx` of a plain model folder: no run's recipe, a text classifier on ONNX Runtime alone
        predictor = OnnxClassifier(args.run_dir)
        inputs = iter_inputs(args.input, args.column, None, pair_column=args.pair_column)
    else:
        from hftl.inference import load

        predictor = load(args.run_dir, **trust_of(args))
        recipe = predictor.recipe
        default_column = getattr(recipe.config.data, recipe.input_column) if recipe.input_column else None
        inputs = iter_inputs(args.input, args.column, default_column, pair_column=_pair_column(args, recipe))
        if recipe.inputs_are_paths and args.input != "-":
            base = Path(args.input).resolve().parent  # paths are relative to the input file
            inputs = (str(base / p) if not Path(p).is_absolute() and (base / p).exists() else p for p in inputs)
    with PredictionWriter(args.output, args.format) as writer, \
            tqdm(unit="input", desc="Predicting", file=sys.stderr, disable=None) as bar:
        for chunk in chunked(inputs, CHUNK):
            predictions = predictor.predict(chunk, batch_size=args.batch_size)
            writer.write({"input": item, **prediction} for item, prediction in zip(chunk, predictions))
            bar.update(len(chunk))
    if writer.count == 0:
        raise DataError(f"--input {args.input}: no inputs found.")
    if args.output != "-":
        print(f"{writer.count} predictions written to {args.output}", file=sys.stderr)
    return 0


def _pair_column(args, recipe) -> str | None:
    """The column of the second text: `--pair-column`, else the run's own (a run trained on sentence pairs)."""
    from hftl.errors import DataError

    run_pair = getattr(recipe.config.data, recipe.input_pair_column) if recipe.input_pair_column else None
    if args.pair_column and not run_pair:
        raise DataError(f"--pair-column: {args.run_dir} was trained on single inputs, not sentence pairs; "
                        "drop --pair-column.")
    return args.pair_column or run_pair
