"""`hftl chat RUN_DIR`: talk with a chat run in the terminal, replies streamed as they are generated.

The conversation is rendered by `hftl.chat` with the template saved in the run, as in training.
Commands: /reset starts over, /exit (or Ctrl-D) leaves.
"""

from hftl.commands import add_trust_arguments, trust_of
from hftl.commands.generate import add_decoding_arguments


def register(subparsers):
    parser = subparsers.add_parser("chat", help="chat with an instruction-tuned run (streaming REPL)",
                                   description="Load a finished chat run and talk with it; /reset, /exit.")
    parser.add_argument("run_dir", help="the output_dir of a finished run of a chat task")
    parser.add_argument("--system", default=None, help="a system message put first in the conversation")
    add_decoding_arguments(parser, max_new_tokens=256, temperature=0.7)
    add_trust_arguments(parser)
    parser.set_defaults(func=run)


def run(args, read=input) -> int:
    from hftl.chat import generate
    from hftl.commands.generate import decoding_options, load_chat_run

    options = decoding_options(args)
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
            reply = generate(loaded.model, loaded.processor, messages, **options, stream=True)
        messages.append({"role": "assistant", "content": reply["text"]})
