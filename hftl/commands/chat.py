"""`hftl chat RUN_DIR`: talk with a chat run in the terminal, replies streamed as they are generated.

The conversation is rendered by `hftl.chat` with the template saved in the run, as in training.
Commands: /reset starts over, /exit (or Ctrl-D) leaves.
"""

from hftl.commands import add_trust_arguments, trust_of


def register(subparsers):
    parser = subparsers.add_parser("chat", help="chat with an instruction-tuned run (streaming REPL)",
                                   description="Load a finished chat run and talk with it; /reset, /exit.")
    parser.add_argument("run_dir", help="the output_dir of a finished run of a chat task")
    parser.add_argument("--system", default=None, help="a system message put first in the conversation")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="the most tokens of one reply (default 256)")
    parser.add_argument("--sample", action="store_true", help="sample (temperature, top-p) instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=None, help="seed for --sample")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (with --sample)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling threshold (with --sample)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="above 1, tokens already in the reply are made less likely: breaks greedy loops "
                        "(default 1.0: none; 1.1-1.3 are usual)")
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def run(args, read=input) -> int:
    from hftl.chat import generate
    from hftl.commands.generate import check_generation_options, load_chat_run

    check_generation_options(args)
    loaded = load_chat_run(args.run_dir, trust_of(args))
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    print("hftl chat: /reset starts over, /exit leaves.")
    while True:
        try:
            text = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            messages = list(start)
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("model> ", end="", flush=True)
        with loaded.in_run_precision():
            reply = generate(loaded.model, loaded.processor, messages, max_new_tokens=args.max_new_tokens,
                             sample=args.sample, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
                             repetition_penalty=args.repetition_penalty, stream=True)
        messages.append({"role": "assistant", "content": reply["text"]})
