"""What `qazlm sft` trains: the model (ours converted in memory, or Hugging Face), its tokenizer with a
training-compatible chat template, and the conversations of a `qazlm sft-data` folder, all checked first so a
mistake is one line before any training starts."""

from __future__ import annotations

import json
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.infer.tools import canonical_tool_calls
from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE, IM_END, IM_START

ROLES = ("system", "user", "assistant", "tool")
QAZLM_TEMPLATE_HINT = ('set chat_template = "qazlm" (in the [sft], [rm] or [dpo] table, or --set chat_template=qazlm) '
                       "to install qazlm's ChatML template")


def load_model(path: str | Path, device: str):
    """(transformers causal LM in fp32, kind 'qazlm' | 'hf'): our folders are converted in memory to the
    Qwen3/Llama module `qazlm export hf` writes, so the trainer and the saved result are plain transformers."""
    import torch

    from qazlm.infer.loading import model_kind

    kind = model_kind(path)
    if kind == "qazlm":
        from qazlm.model.hf import to_transformers

        model = to_transformers(path)
    else:
        from transformers import AutoModelForCausalLM

        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise QazlmError(f"{path}: cannot load the HF model ({first}); check config.json and the weights") from None
    return model.to(device), kind


def load_chat_tokenizer(path: str | Path, kind: str, chat_template: str):
    """The model's tokenizer with the chat template training uses; every way it could train on nothing (no
    template, no {% generation %} markers, ChatML tokens missing) is one error naming the fix."""
    from qazlm.infer.loading import load_tokenizer

    tok = load_tokenizer(path)
    if chat_template == "qazlm":
        missing = [t for t in (IM_START, IM_END) if t not in tok.get_vocab()]
        if missing:
            raise QazlmError(f"{path}: tokenizer has no {' / '.join(missing)} token; qazlm's chat template needs "
                             f"{IM_START} and {IM_END} as single tokens, so use the model's own template (chat_template = \"\")")
        tok.chat_template = CHAT_TEMPLATE
    elif not tok.chat_template:
        if kind == "hf":
            raise QazlmError(f"{path}: has no chat template; {QAZLM_TEMPLATE_HINT}, or add one to its "
                             "tokenizer_config.json")
        tok.chat_template = CHAT_TEMPLATE  # a base model of ours: qazlm's tokenizers reserve the ChatML tokens
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def check_template(tok, conversation: list[dict], where: str | Path) -> None:
    """The template must mark what the model learns ({% generation %}); qazlm.infer.chat says why not."""
    from qazlm.infer.chat import assistant_mask

    try:
        assistant_mask(tok, conversation)
    except QazlmError as e:
        hint = f"; or {QAZLM_TEMPLATE_HINT}" if "generation" in str(e) else ""
        raise QazlmError(f"{where}: {e}{hint}") from None


def check_messages(messages) -> str | None:
    """Why a record's `messages` cannot be trained on, or None when it can."""
    if not isinstance(messages, list) or not messages:
        return "no `messages` list"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"message {i}: role must be one of {', '.join(ROLES)}"
        if not isinstance(m.get("content", ""), str | type(None)):
            return f"message {i}: content is not text"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn (nothing to learn)"
    return None


def read_conversations(path: Path, limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """(usable {"messages": ...} records, set-aside {"line", "reason"}) of a messages JSONL file."""
    kept, rejected = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(kept) >= limit:
                break
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                rejected.append({"file": path.name, "line": lineno, "reason": f"malformed JSON ({e.msg})"})
                continue
            reason = check_messages(rec.get("messages") if isinstance(rec, dict) else None)
            if not reason:
                try:   # tool-call arguments as JSON object text, once: the form the template writes
                    messages = canonical_tool_calls(rec["messages"])
                except QazlmError as e:
                    reason = str(e)
            if reason:
                rejected.append({"file": path.name, "line": lineno, "reason": reason})
            else:
                kept.append({"messages": [{k: m[k] for k in ("role", "content", "tool_calls") if k in m}
                                          for m in messages],
                             # as JSON text: tools of different records then share one dataset column type
                             "tools": json.dumps(rec["tools"], ensure_ascii=False) if rec.get("tools") else None})
    return kept, rejected


def read_sft_data(data: str | Path, max_heldout: int) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, held-out, set aside) conversations of a `qazlm sft-data` folder."""
    data = Path(data)
    if not data.is_dir():
        raise QazlmError(f"{data}: no such data folder; build one with `qazlm sft-data -o {data}`")
    train_path = data / "train.jsonl"
    if not train_path.is_file():
        raise QazlmError(f"{data}: no train.jsonl; not a `qazlm sft-data` folder (build one with qazlm sft-data)")
    train, rejected = read_conversations(train_path)
    if not train:
        why = f" ({len(rejected)} lines set aside, e.g. line {rejected[0]['line']}: {rejected[0]['reason']})" if rejected else ""
        raise QazlmError(f"{train_path}: no usable conversations{why}; give chat records "
                         '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}')
    held, held_rejected = [], []
    if max_heldout and (data / "heldout.jsonl").is_file():
        held, held_rejected = read_conversations(data / "heldout.jsonl", limit=max_heldout)
    return train, held, rejected + held_rejected


def check_lora_targets(model, targets: list[str], where: str | Path) -> None:
    """Each LoRA target must name some linear layer (peft matches by name suffix); list the names otherwise."""
    import torch

    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for t in targets:
        if not any(n == t or n.endswith("." + t) for n in names):
            available = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise QazlmError(f"[sft.lora] target_modules: {t!r} matches no layer of {where}; "
                             f"available: {', '.join(available)}")


def set_aside_overlong(tok, conversations: list[dict], max_len: int) -> tuple[list[dict], list[dict]]:
    """(conversations that fit in `max_len` tokens, the others with the reason): TRL would cut a longer one,
    and a cut tool call or answer teaches the wrong thing, so it is counted and left out instead."""
    from qazlm.infer.chat import render_chat

    kept, rejected = [], []
    for i, c in enumerate(conversations):
        tools = json.loads(c["tools"]) if c.get("tools") else None
        text = render_chat(tok, c["messages"], add_generation_prompt=False, tools=tools)
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        if n > max_len:
            rejected.append({"file": "train.jsonl", "line": i + 1,
                             "reason": f"longer than max_len ({n} > {max_len} tokens)"})
        else:
            kept.append(c)
    return kept, rejected
