"""`hftl generate RUN_DIR --prompt TEXT` (continue text) or `--message TEXT` / `--messages FILE` (chat runs: a
reply rendered with the run's chat template, as in training)."""

from hftl.commands import add_trust_arguments, trust_of


def register(subparsers):
    parser = subparsers.add_parser("generate", help="continue a prompt, or reply to messages, with a run (greedy or sampled)",
                                   description="Load a finished text-generating run (full, frozen or LoRA) and print "
                                   "continuations, or replies of a chat run.")
    parser.add_argument("run_dir", help="the output_dir of a finished run of a text-generating task")
    parser.add_argument("--prompt", action="append", default=[], help="text to continue (repeatable)")
    parser.add_argument("--message", action="append", default=[],
                        help="chat runs: a user message to reply to (repeatable; each is its own conversation)")
    parser.add_argument("--messages", default=None,
                        help="chat runs: a JSON file holding one conversation, a list of {\"role\", \"content\"}")
    add_decoding_arguments(parser, max_new_tokens=50, temperature=1.0)
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def add_decoding_arguments(parser, max_new_tokens: int, temperature: float) -> None:
    """The decoding flags `hftl generate` and `hftl chat` share; `decoding_options` reads them back."""
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"the most tokens of one reply or continuation (default {max_new_tokens})")
    parser.add_argument("--sample", action="store_true", help="sample (temperature, top-p) instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=None, help="seed for --sample: the same seed gives the same text")
    parser.add_argument("--temperature", type=float, default=temperature,
                        help=f"sampling temperature (with --sample; default {temperature})")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling threshold (with --sample)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="above 1, tokens already in the reply are made less likely: breaks greedy loops "
                        "(default 1.0: none; 1.1-1.3 are usual)")


def decoding_options(args) -> dict:
    """The decoding flags as keyword arguments of `hftl.chat.generate` / `hftl.generation.generate`, after checking
    them (before a model is loaded)."""
    from hftl.errors import HftlError

    if args.max_new_tokens < 1:
        raise HftlError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    if args.repetition_penalty <= 0:
        raise HftlError(f"--repetition-penalty must be above 0 (1.0: none), got {args.repetition_penalty}.")
    return dict(max_new_tokens=args.max_new_tokens, sample=args.sample, seed=args.seed,
                temperature=args.temperature, top_p=args.top_p, repetition_penalty=args.repetition_penalty)


def _load_generating(run_dir, trust: dict):
    from hftl.errors import HftlError
    from hftl.inference import load

    loaded = load(run_dir, **trust)
    if not loaded.recipe.generates_text:
        from hftl.tasks import registered_tasks

        generating = [name for name, recipe in registered_tasks().items() if recipe.generates_text]
        raise HftlError(f"{run_dir} is a '{loaded.recipe.task}' run; generate needs a run of a task that "
                        f"generates text ({', '.join(generating)}).")
    return loaded


def load_chat_run(run_dir, trust: dict):
    """A finished run whose task renders chat messages (its recipe declares `chat = True`)."""
    from hftl.errors import HftlError

    loaded = _load_generating(run_dir, trust)
    if not getattr(loaded.recipe, "chat", False):
        raise HftlError(f"{run_dir} is a '{loaded.recipe.task}' run, which continues text: use --prompt.")
    return loaded


def run(args) -> int:
    import json
    from pathlib import Path

    from hftl.errors import HftlError

    options = decoding_options(args)
    if not (args.prompt or args.message or args.messages):
        raise HftlError("give --prompt TEXT (continue text), or --message TEXT / --messages FILE (chat runs).")
    if args.message or args.messages:
        from hftl.chat import generate

        loaded = load_chat_run(args.run_dir, trust_of(args))
        conversations = [[{"role": "user", "content": text}] for text in args.message]
        if args.messages:
            try:
                conversations.append(json.loads(Path(args.messages).read_text(encoding="utf-8")))
            except (OSError, ValueError) as err:
                raise HftlError(f"--messages {args.messages}: not a readable JSON list of messages ({err}).") from None
        for messages in conversations:
            with loaded.in_run_precision():
                print(generate(loaded.model, loaded.processor, messages, **options)["text"])
        return 0
    from hftl.generation import generate

    loaded = _load_generating(args.run_dir, trust_of(args))
    for prompt in args.prompt:
        with loaded.in_run_precision():
            text = generate(loaded.model, loaded.processor, prompt, **options)
        print(f"{prompt}{text}")
    return 0
