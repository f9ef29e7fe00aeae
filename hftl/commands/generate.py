"""`hftl generate RUN_DIR --prompt TEXT`: continue a prompt with a fine-tuned causal-LM run."""

from hftl.commands import add_trust_arguments, trust_of


def register(subparsers):
    parser = subparsers.add_parser("generate", help="continue a prompt with a language-model run (greedy or sampled)",
                                   description="Load a finished text-generating run (full, frozen or LoRA) and print continuations.")
    parser.add_argument("run_dir", help="the output_dir of a finished run of a text-generating task")
    parser.add_argument("--prompt", action="append", required=True, help="text to continue (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="the most tokens to add (default 50)")
    parser.add_argument("--sample", action="store_true", help="sample (temperature, top-p) instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=None, help="seed for --sample: the same seed gives the same text")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling threshold (with --sample)")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from hftl.errors import HftlError
    from hftl.generation import generate
    from hftl.inference import load

    loaded = load(args.run_dir, **trust_of(args))
    if not loaded.recipe.generates_text:
        from hftl.tasks import registered_tasks

        generating = [name for name, recipe in registered_tasks().items() if recipe.generates_text]
        raise HftlError(f"{args.run_dir} is a '{loaded.recipe.task}' run; generate needs a run of a task that "
                        f"generates text ({', '.join(generating)}).")
    if args.max_new_tokens < 1:
        raise HftlError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    for prompt in args.prompt:
        text = generate(loaded.model, loaded.processor, prompt, max_new_tokens=args.max_new_tokens, sample=args.sample,
                        seed=args.seed, temperature=args.temperature, top_p=args.top_p)
        print(f"{prompt}{text}")
    return 0
