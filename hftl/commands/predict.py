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
    parser.add_argument("--output", default="-",
                        help="where to write the predictions (.jsonl or .csv); default: standard output")
    parser.add_argument("--format", choices=["jsonl", "csv"],
                        help="output format (default: from --output's extension, else jsonl)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def _pick_column(columns: list, column: str | None, default: str | None, where: str) -> str:
    from hftl.config.parse import did_you_mean
    from hftl.errors import DataError

    if column:
        if column not in columns:
            raise DataError(f"{where} has no column '{column}'.{did_you_mean(column, columns)} "
                            f"Columns: {', '.join(columns)}.")
        return column
    if default in columns:
        return default
    if len(columns) == 1:
        return columns[0]
    raise DataError(f"{where}: which column holds the inputs? Give --column (columns: {', '.join(columns)}).")


def read_inputs(source: str, column: str | None = None, default_column: str | None = None) -> list[str]:
    """The inputs in `source`: lines of a text file or stdin (`-`), or one column of a CSV/TSV/JSON(L) file."""
    import json
    from pathlib import Path

    from hftl.data.tables import is_delimited, open_table
    from hftl.errors import DataError

    if source == "-":
        return [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    path = Path(source)
    if not path.is_file():
        raise DataError(f"--input {source}: no such file. Give a file of inputs, or - to read standard input.")
    suffix = path.suffix.lower()
    if is_delimited(path):
        with open_table(path) as reader:
            name = _pick_column(list(reader.fieldnames or []), column, default_column, source)
            return [row[name] for row in reader]
    with path.open(encoding="utf-8", newline="") as handle:
        if suffix in (".jsonl", ".json"):
            rows = json.load(handle) if suffix == ".json" else [json.loads(line) for line in handle if line.strip()]
            if not isinstance(rows, list):
                raise DataError(f"{source}: expected a list of objects or strings.")
            if all(isinstance(row, str) for row in rows):
                return rows
            columns = list(dict.fromkeys(key for row in rows if isinstance(row, dict) for key in row))
            name = _pick_column(columns, column, default_column, source)
            missing = [i for i, row in enumerate(rows, start=1) if not isinstance(row, dict) or name not in row]
            if missing:
                raise DataError(f"{source}, row {missing[0]}: no '{name}' value. Fill it in or drop the row.")
            return [row[name] for row in rows]
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def _csv_row(item: dict) -> dict:
    import json

    row = {}
    for key, value in item.items():
        if key == "probabilities" and isinstance(value, dict):
            row.update({f"prob_{label}": p for label, p in value.items()})
        else:
            row[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return row


def write_predictions(rows: list[dict], output: str, fmt: str) -> None:
    import csv
    import json
    from pathlib import Path

    handle = sys.stdout if output == "-" else Path(output).open("w", encoding="utf-8", newline="")
    try:
        if fmt == "csv":
            flat = [_csv_row(row) for row in rows]
            fields = list(dict.fromkeys(key for row in flat for key in row))
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(flat)
        else:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if handle is not sys.stdout:
            handle.close()


def run(args) -> int:
    from pathlib import Path

    from tqdm.auto import tqdm

    from hftl.errors import DataError
    from hftl.inference import load

    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}.")
    loaded = load(args.run_dir, **trust_of(args))
    recipe = loaded.recipe
    default_column = getattr(recipe.config.data, recipe.input_column) if recipe.input_column else None
    inputs = read_inputs(args.input, args.column, default_column)
    if not inputs:
        raise DataError(f"--input {args.input}: no inputs found.")
    if recipe.inputs_are_paths and args.input != "-":
        base = Path(args.input).resolve().parent  # paths are relative to the input file
        inputs = [str(base / p) if not Path(p).is_absolute() and (base / p).exists() else p for p in inputs]
    fmt = args.format or ("csv" if args.output.lower().endswith((".csv", ".tsv")) else "jsonl")
    rows = []
    with tqdm(total=len(inputs), unit="input", desc="Predicting", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(inputs), args.batch_size):
            chunk = inputs[start:start + args.batch_size]
            for item, prediction in zip(chunk, loaded.predict(chunk, batch_size=args.batch_size)):
                rows.append({"input": item, **prediction})
            bar.update(len(chunk))
    write_predictions(rows, args.output, fmt)
    if args.output != "-":
        print(f"{len(rows)} predictions written to {args.output}", file=sys.stderr)
    return 0
