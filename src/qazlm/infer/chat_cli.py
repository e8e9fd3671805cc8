"""`qazlm chat`: an interactive terminal chat with a model folder, through the one inference engine.

Each turn renders the whole history with the chat template (`qazlm.infer.chat.render_chat`) and calls
`qazlm.infer.engine.generate` on it: no second generation loop. When the history no longer fits the
context, the oldest exchanges are dropped (the system prompt stays) and one line says so.
"""

from __future__ import annotations

import sys

from qazlm.config import check_value
from qazlm.errors import QazlmError

CHAT_EPILOG = """commands inside the chat:
  /system TEXT   set the system prompt (/system alone removes it); the history is kept
  /reset         forget the conversation (the system prompt stays)
  /help          list these commands
  /exit          leave (also /quit, Ctrl-D)

examples:
  qazlm chat runs/tiny/pretrain/final --system "Сен көмекшісің. Қазақша жауап бер."
  qazlm chat /models/Qwen3-0.6B --temperature 0.7 --top-p 0.9 --max-new-tokens 512
  printf 'Сәлем!\\n/reset\\nHello!\\n' | qazlm chat runs/tiny/pretrain/final --temperature 0
"""

HELP_TEXT = ("/system TEXT: set the system prompt (/system alone removes it) | /reset: forget the conversation"
             " | /help: this list | /exit or Ctrl-D: leave")


class TooLong(QazlmError):
    """The newest message alone does not fit the context: the chat goes on without it."""


class Session:
    """The conversation: an optional system prompt and alternating user/assistant messages."""

    def __init__(self, system: str | None = None):
        self.system = system or None
        self.turns: list[dict] = []

    def messages(self, turns: list[dict] | None = None) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + (self.turns if turns is None else turns)


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    """Tokens of the rendered prompt (ending with the open assistant turn)."""
    from qazlm.infer.chat import render_chat

    return len(tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"])


def fit_history(tokenizer, session: Session, budget: int) -> int:
    """Drop the oldest user/assistant exchanges until the prompt fits in `budget` tokens; returns how many
    messages were dropped. Raises when even the last user message (with the system prompt) does not fit."""
    dropped = 0
    while (n := prompt_tokens(tokenizer, session.messages())) > budget:
        if len(session.turns) <= 1:
            session.turns.clear()
            raise TooLong(f"this message takes {n} tokens with the system prompt, but the model's context "
                             f"leaves {budget} for it; write a shorter one (or lower --max-new-tokens)")
        cut = 2 if len(session.turns) > 2 and session.turns[1]["role"] == "assistant" else 1
        del session.turns[:cut]
        dropped += cut
    return dropped


def handle_command(line: str, session: Session) -> bool:
    """Run a /command; False when the chat should end."""
    name, _, rest = line.partition(" ")
    if name in ("/exit", "/quit"):
        return False
    if name == "/reset":
        session.turns.clear()
        print("(conversation cleared)")
    elif name == "/system":
        session.system = rest.strip() or None
        print(f"(system prompt {'set' if session.system else 'removed'})")
    elif name == "/help":
        print(HELP_TEXT)
    else:
        print(f"(unknown command {name}; /help lists the commands)")
    return True


def read_line(prompt: str) -> str | None:
    """One line of user input; None at end of input (Ctrl-D, a closed pipe) or Ctrl-C."""
    try:
        return input(prompt)
    except (EOFError, KeyboardInterrupt):
        print()
        return None


class Chat:
    """One loaded model and the sampling settings; `reply` answers the session's last user message."""

    def __init__(self, loaded, args, stop: list[str], budget: int):
        self.loaded, self.args, self.stop, self.budget = loaded, args, stop, budget
        self.replies = 0

    def reply(self, session: Session) -> None:
        from qazlm.infer.chat import render_chat
        from qazlm.infer.engine import generate

        dropped = fit_history(self.loaded.tokenizer, session, self.budget)
        if dropped:
            print(f"(dropped the {dropped} oldest messages to fit the model's {self.args.context}-token context)")

        def stream(row: int, delta: str) -> None:
            sys.stdout.write(delta)
            sys.stdout.flush()

        a = self.args
        prompt = render_chat(self.loaded.tokenizer, session.messages())
        text = generate(self.loaded.model, self.loaded.tokenizer, [prompt], max_new_tokens=a.max_new_tokens,
                        temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                        repetition_penalty=a.repetition_penalty, stop=self.stop, seed=a.seed + self.replies,
                        add_bos=False, device=a.device, stream=stream)[0]
        sys.stdout.write("\n")
        session.turns.append({"role": "assistant", "content": text})
        self.replies += 1


def check_args(args) -> None:
    """Bad sampling values fail before the model loads, with `qazlm generate`'s messages."""
    from qazlm.infer.sampling import SamplingParams

    SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed)
    check_value("chat: --context", args.context, ">= 2")


def context_budget(args, max_len: int) -> int:
    """Prompt tokens available per turn: the context (--context, at most the model's) minus the reply."""
    if args.context is None:
        args.context = max_len
    elif args.context > max_len:
        raise QazlmError(f"chat: --context {args.context} exceeds the model's maximum of {max_len} tokens; "
                         f"give at most {max_len}")
    if args.max_new_tokens >= args.context:
        raise QazlmError(f"chat: --max-new-tokens {args.max_new_tokens} leaves no room for the conversation in "
                         f"a {args.context}-token context; lower --max-new-tokens")
    return args.context - args.max_new_tokens


def _cmd_chat(args) -> int:
    from qazlm.infer.loading import load_model
    from qazlm.tokenizer.special_tokens import IM_END

    check_args(args)
    loaded = load_model(args.model, device=args.device, tokenizer=args.tokenizer)
    budget = context_budget(args, loaded.model.max_len)
    tok = loaded.tokenizer
    if not getattr(tok, "chat_template", None):
        print("(the tokenizer has no chat template: using qazlm's ChatML template)")
    stop = [] if IM_END in tok.get_vocab() else [IM_END]  # not a token here: stop on its text instead
    chat, session = Chat(loaded, args, stop, budget), Session(args.system)
    print(f"qazlm chat with {loaded.name}: /help lists the commands, /exit or Ctrl-D leaves")
    while (line := read_line(">>> ")) is not None:
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not handle_command(line, session):
                break
            continue
        session.turns.append({"role": "user", "content": line})
        try:
            chat.reply(session)
        except TooLong as e:
            print(f"({e})")
        except KeyboardInterrupt:  # Ctrl-C stops the reply, not the chat
            session.turns.pop()
            print("\n(reply interrupted; the message was dropped)")
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    c = sub.add_parser("chat", help="chat with a model folder in the terminal (ours or Hugging Face)",
                       formatter_class=HelpFormatter, epilog=CHAT_EPILOG,
                       description="An interactive multi-turn chat with streaming output, through the same engine "
                                   "as `qazlm generate`. The tokenizer's chat template is used (qazlm's ChatML "
                                   "if it has none); the oldest turns are dropped when the context is full.")
    c.add_argument("model", help="model folder: qazlm (qazlm_model.json) or Hugging Face (config.json)")
    c.add_argument("--system", help="system prompt (change it inside the chat with /system TEXT)")
    c.add_argument("--max-new-tokens", type=int, default=256, help="longest reply in tokens")
    c.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    c.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    c.add_argument("--top-p", type=float, default=0.9, help="sample among the most likely tokens that reach this "
                                                           "probability (1 = off)")
    c.add_argument("--repetition-penalty", type=float, default=1.1,
                   help="> 1 discourages repeating the reply's own tokens")
    c.add_argument("--context", type=int, metavar="TOKENS",
                   help="tokens of history + reply (default: the model's maximum sequence length)")
    c.add_argument("--tokenizer", help="tokenizer folder if the model folder has none")
    c.add_argument("--seed", type=int, default=0, help="sampling seed of the first reply (then +1 per reply)")
    c.add_argument("--device", default="cpu")
    c.set_defaults(func=_cmd_chat)
