"""`hftl distill TEACHER_RUN --student CHECKPOINT | --layers K`: train a smaller student on a finished run's
data, learning from the teacher's logits as well as the labels (knowledge distillation, docs/deployment.md)."""

from hftl.commands import overrides_of


def register(subparsers):
    parser = subparsers.add_parser(
        "distill", help="train a smaller student to match a finished text or token classification run",
        description="The student's config is the teacher's (task, data, training settings) with the student as "
                    "model and a distillation section naming the teacher; the run is a normal run (folder, card, "
                    "metrics, resume). --layers K cuts the teacher to K evenly spread layers (a plain "
                    "transformers checkpoint, saved in OUTPUT_DIR-init); --student takes any smaller checkpoint "
                    "with the teacher's tokenizer.")
    parser.add_argument("teacher", help="the output_dir of a finished text or token classification run")
    student = parser.add_mutually_exclusive_group(required=True)
    student.add_argument("--student", metavar="CHECKPOINT",
                         help="the student's starting checkpoint (packaged:NAME, a local folder, a Hub id)")
    student.add_argument("--layers", type=int, metavar="K",
                         help="start from the teacher cut to K of its layers (every other one for half)")
    parser.add_argument("--output-dir", help="the student's run folder (default: TEACHER-student)")
    parser.add_argument("--alpha", type=float, help="weight of the distillation term (default 0.5)")
    parser.add_argument("--temperature", type=float, help="softening temperature (default 2.0)")
    parser.add_argument("--labels-only", action="store_true",
                        help="the same student trained on the labels alone, without the teacher: the control that "
                             "shows what distillation adds")
    parser.add_argument("--write-config", metavar="FILE",
                        help="write the student's config (YAML) to FILE and stop; train it with hftl train FILE or "
                             "accelerate launch (several processes)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the student's config, e.g. --set training.num_train_epochs=2")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in the output folder")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output folder")
    parser.set_defaults(func=run)


def student_config(args) -> dict:
    """The student's config as data: the teacher's, with the student model and the distillation section."""
    from pathlib import Path

    from hftl.config import read_config
    from hftl.run_dir import RunDir
    from hftl.tasks import get_recipe_class

    teacher = RunDir.existing(args.teacher)
    recipe_class = get_recipe_class(str(teacher.task_name()))
    config = read_config(teacher.config_file, {recipe_class.task: recipe_class.data_config_class}).to_dict()
    output_dir = args.output_dir or f"{str(teacher.path).rstrip('/')}-student"
    student = args.student
    if args.layers is not None:
        from hftl.student import write_cut_student

        student = str(write_cut_student(teacher.path, args.layers, f"{output_dir.rstrip('/')}-init").resolve())
    distillation = {"teacher": None if args.labels_only else str(teacher.path.resolve())}
    distillation.update({k: v for k, v in (("alpha", args.alpha), ("temperature", args.temperature)) if v is not None})
    return {**config, "model": {"name_or_path": student, "strategy": "full"}, "hub": {},
            "training": {**config["training"], "output_dir": str(Path(output_dir))},
            "distillation": distillation, "overwrite": False, "resume": False}


def run(args) -> int:
    import yaml

    from hftl.preflight import load_config
    from hftl.report import print_summary
    from hftl.runner import run_recipe
    from hftl.tasks import get_recipe_class

    data = student_config(args)
    config = load_config(data, overrides_of(args))
    if args.write_config:
        from pathlib import Path

        Path(args.write_config).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
        print(f"student config written to {args.write_config}; train it with: hftl train {args.write_config}")
        return 0
    result = run_recipe(get_recipe_class(config.task)(config))
    print_summary(result)
    return 0
