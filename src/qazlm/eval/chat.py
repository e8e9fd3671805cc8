"""`qazlm eval --chat`: does a model behave as a chat model? Base and SFT models side by side.

Every model answers the same chat prompts (`qazlm.eval.chat_items`) through the one inference engine
(`qazlm.infer.engine.generate_ids`, prompts rendered by `qazlm.infer.chat.render_chat`, batched, greedy by
default, stopping at `<|im_end|>`). Per model:

- end-of-turn rate: replies that close their turn with `<|im_end|>` within `max_new_tokens`, judged on the
  items whose reference answer fits in that limit;
- language fidelity (the headline): replies in the language the user wrote in, or the one the instruction
  or system prompt asked for, per language, by `qazlm.text.langid`; replies too short to identify are left
  out of the denominator and counted;
- task scores: exact match or chrF per held-out task, SIB-200 test topic accuracy (chance 1/7), FLORES+
  devtest chrF in six directions, and the second turn of held-out multi-turn dialogues.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from qazlm.config import check_fields
from qazlm.errors import QazlmError
from qazlm.paths import LANGS

CHAT_SETS = ("heldout", "multiturn", "sib200", "flores")
MIN_WORDS = 3          # replies with fewer words are too short for language ID (numbers, one word, a label)
_WORD = re.compile(r"[^\W\d_]+")
_EDGE = " \t\n.,;:!?\"'«»“”„()[]`*"


@dataclass
class ChatEvalSettings:
    """What `qazlm eval --chat` runs (also the `[chat_eval]` recipe table, plus `models` there)."""

    sft_data: str = ""                  # a `qazlm sft-data` folder: its heldout.jsonl
    sets: list[str] = field(default_factory=lambda: list(CHAT_SETS))
    limit: int | None = 20              # held-out items per task (None: all)
    sib_limit: int | None = 20          # SIB-200 test items per language
    flores_per_direction: int | None = 20  # FLORES+ devtest sentences per translation direction
    max_new_tokens: int = 48
    batch_size: int = 16
    temperature: float = 0.0            # 0: greedy
    repetition_penalty: float = 1.0
    samples: int = 2                    # sample dialogues per language in the report
    data_dir: str | None = None         # evaluation data (SIB-200); default ../shared/data/eval
    device: str = "auto"                # auto: cuda when there is one, else cpu
    seed: int = 1234

    def __post_init__(self):
        from qazlm.runs import resolve_device

        self.device = resolve_device(self.device, "eval --chat:")
        check_fields(self, "eval --chat: ", {
            "limit": ">= 1", "sib_limit": ">= 1", "flores_per_direction": ">= 1", "max_new_tokens": ">= 1",
            "batch_size": ">= 1", "temperature": ">= 0", "repetition_penalty": "> 0", "samples": ">= 0"})
        unknown = [s for s in self.sets if s not in CHAT_SETS]
        if unknown or not self.sets:
            raise QazlmError(f"eval --chat: sets = {self.sets}: choose one or more of {', '.join(CHAT_SETS)}")


# ------------------------------------------------------------------------------------------- metrics
def normalize_answer(text: str) -> str:
    """For exact match: NFC, case-folded, spaces collapsed, quotes and end punctuation stripped."""
    text = unicodedata.normalize("NFC", text).casefold()
    return " ".join(text.split()).strip(_EDGE)


def exact_match(reply: str, reference: str) -> bool:
    return normalize_answer(reply) == normalize_answer(reference)


def chrf(replies: list[str], references: list[str]) -> float:
    """Corpus chrF (sacrebleu's defaults: character 6-grams, beta 2), 0-100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(list(replies), [list(references)]).score)


def eot_rate(endings: list[str], fits: list[bool] | None = None) -> dict:
    """Share of replies whose turn ended with `<|im_end|>` ("eot"); the others hit the document end token
    ("eos") or the token limit ("limit"). Only items whose reference answer fits within the token limit are
    judged (`fits`): where even the right answer is longer, a reply that runs into the limit says nothing about
    ending a turn. The others are counted as `long_reference`."""
    fits = [True] * len(endings) if fits is None else fits
    judged = [e for e, f in zip(endings, fits) if f]
    n = len(judged)
    counts = {k: sum(e == k for e in judged) for k in ("eot", "eos", "limit")}
    return {"rate": counts["eot"] / n if n else None, "n": n, **counts, "long_reference": len(endings) - n}


def reference_fits(tokenizer, references: list[str | None], max_new_tokens: int) -> list[bool]:
    """Whether each reference answer and its `<|im_end|>` fit in `max_new_tokens` in this model's tokens."""
    return [ref is None or len(tokenizer.encode(ref, add_special_tokens=False)) < max_new_tokens for ref in references]


@lru_cache(maxsize=8192)
def reply_language(reply: str) -> str | None:
    """kk/ru/en/other, or None when the reply is too short to identify (cached: a report asks twice)."""
    from qazlm.text.langid import detect_language

    if len(_WORD.findall(reply)) < MIN_WORDS:
        return None
    return detect_language(reply)[0]


def fidelity(pairs: list[tuple[str | None, str]]) -> dict:
    """(expected language, reply) pairs -> per expected language and overall: rate over identifiable replies,
    how many were too short (left out), and what the wrong ones were in."""
    def summary(rows):
        found = [reply_language(r) for _, r in rows]
        judged = [(e, f) for (e, _), f in zip(rows, found) if f is not None]
        right = sum(e == f for e, f in judged)
        wrong: dict[str, int] = {}
        for e, f in judged:
            if e != f:
                wrong[f] = wrong.get(f, 0) + 1
        return {"rate": right / len(judged) if judged else None, "n": len(judged), "in_language": right,
                "too_short": len(rows) - len(judged), "wrong_as": wrong}

    rows = [(e, r) for e, r in pairs if e is not None]
    out = {lang: summary([p for p in rows if p[0] == lang]) for lang in LANGS}
    out["all"] = summary(rows)
    out["all"]["not_judged"] = len(pairs) - len(rows)  # items whose language cannot be judged (Latin-script kk)
    return out


def task_scores(items: list[dict], replies: list[str]) -> dict:
    """Per task: exact-match accuracy or corpus chrF, with the item count (and chance for SIB-200)."""
    from qazlm.text.instructions import SIB_LABELS

    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(f"{it['set']}:{it['task']}", []).append(i)
    out = {}
    for key, idx in groups.items():
        metric = items[idx[0]]["metric"]
        if metric == "exact":
            value = sum(exact_match(replies[i], items[i]["reference"]) for i in idx) / len(idx)
        else:
            value = chrf([replies[i] for i in idx], [items[i]["reference"] for i in idx])
        out[key] = {"metric": metric, "value": value, "n": len(idx)}
        if key.startswith("sib200:"):
            refs = [items[i]["reference"] for i in idx]
            out[key]["chance"] = 1 / len(SIB_LABELS)
            out[key]["majority"] = max(refs.count(r) for r in set(refs)) / len(refs)  # one label for every item
    return out


def multiturn_scores(items: list[dict], replies: list[str]) -> dict | None:
    """The second turn of multi-turn dialogues: language fidelity to the newly asked language, and chrF."""
    idx = [i for i, it in enumerate(items) if it["set"] == "multiturn"]
    if not idx:
        return None
    fid = fidelity([(items[i]["expect"], replies[i]) for i in idx])["all"]
    return {"fidelity": fid["rate"], "judged": fid["n"], "too_short": fid["too_short"], "n": len(idx),
            "chrf": chrf([replies[i] for i in idx], [items[i]["reference"] for i in idx])}


def refusals(items: list[dict], replies: list[str]) -> dict:
    """How often the model refuses an ordinary request: every prompt here is benign except the held-out
    `safety_refusal` items, which are left out. By the user's language and by prompt set, with the safety
    evaluation's classifier (`qazlm.eval.safety.is_refusal`). A greedy tiny model falls back on its refusal
    sentence whenever it cannot place a request; this shows where, beside the fidelity misses it causes."""
    from qazlm.eval.safety import is_refusal

    rows = [(it.get("lang"), it["set"], is_refusal(r)) for it, r in zip(items, replies)
            if it["task"] != "safety_refusal"]

    def share(sel):
        return {"rate": sum(sel) / len(sel) if sel else None, "n": len(sel), "refused": sum(sel)}

    return {"by_lang": {lang: share([x for lg, _, x in rows if lg == lang]) for lang in LANGS},
            "by_set": {k: share([x for _, st, x in rows if st == k]) for k in dict.fromkeys(st for _, st, _ in rows)},
            "all": share([x for _, _, x in rows])}


# ------------------------------------------------------------------------------------------- generation
def end_token_id(tokenizer) -> int:
    """`<|im_end|>` when the tokenizer has it (every qazlm tokenizer; Qwen's), else its EOS."""
    from qazlm.infer.engine import IM_END  # eval reaches the special tokens through the engine

    if IM_END in tokenizer.get_vocab():
        return int(tokenizer.convert_tokens_to_ids(IM_END))
    if tokenizer.eos_token_id is None:
        raise QazlmError("eval --chat: the tokenizer has neither <|im_end|> nor an EOS token to end a turn with")
    return int(tokenizer.eos_token_id)


def generate_replies(model, tokenizer, conversations: list[list[dict]], s: ChatEvalSettings, max_len: int,
                     progress: bool = True) -> list[dict]:
    """{"reply", "end" (eot/eos/limit), "tokens"} per conversation, or {"skipped": why} when the prompt leaves no
    room for `max_new_tokens` in the model's context. Prompts are batched by length (less padding)."""
    from tqdm import tqdm

    from qazlm.infer.chat import render_chat
    from qazlm.infer.engine import encode_prompts, generate_ids, pad_id_of
    from qazlm.infer.sampling import SamplingParams

    params = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                            repetition_penalty=s.repetition_penalty, seed=s.seed)
    prompts = encode_prompts(tokenizer, [render_chat(tokenizer, c) for c in conversations], add_bos=False)
    eot, eos = end_token_id(tokenizer), tokenizer.eos_token_id
    pad = pad_id_of(tokenizer)
    results: list[dict] = [{"skipped": f"prompt of {len(p)} tokens + {s.max_new_tokens} new exceeds the "
                            f"model's context ({max_len})"} if len(p) + s.max_new_tokens > max_len else {}
                           for p in prompts]
    order = sorted((i for i, r in enumerate(results) if not r), key=lambda i: len(prompts[i]))
    bar = tqdm(total=len(order), desc="chat replies", unit="reply", disable=not progress, leave=False)
    for start in range(0, len(order), s.batch_size):
        rows = order[start:start + s.batch_size]
        ended_eos: set[int] = set()

        def stop_at_eos(live, tokens):  # the document end also ends a reply, but it is not an end of turn
            hit = [r for r, t in zip(live, tokens) if t == eos and eos != eot]
            ended_eos.update(hit)
            return hit

        out = generate_ids(model, [prompts[i] for i in rows], params, pad_id=pad, stop_token_ids=[eot],
                           device=s.device, on_step=stop_at_eos)
        for r, (i, toks) in enumerate(zip(rows, out)):
            end = "eos" if r in ended_eos else "eot" if len(toks) < s.max_new_tokens else "limit"
            toks = toks[:-1] if end == "eos" else toks
            results[i] = {"reply": tokenizer.decode(toks, skip_special_tokens=True).strip(), "end": end,
                          "tokens": len(toks)}
        bar.update(len(rows))
    bar.close()
    return results


# ------------------------------------------------------------------------------------------- per model
def pick_samples(items: list[dict], results: list[dict], per_lang: int) -> dict[str, list[dict]]:
    """A few dialogues per user language, each from a different task, in item order."""
    out: dict[str, list[dict]] = {}
    for it, res in zip(items, results):
        shown = out.setdefault(it["lang"], [])
        if "reply" in res and len(shown) < per_lang and it["task"] not in {x["task"] for x in shown}:
            shown.append({"task": it["task"], "messages": it["messages"], "reply": res["reply"],
                          "reference": it["reference"], "end": res["end"]})
    return {lang: v for lang, v in out.items() if v}


def score_model(name: str, path: str, kind: str, params: int, items: list[dict], results: list[dict],
                s: ChatEvalSettings, fits: list[bool] | None = None) -> dict:
    """Every figure of one model from its replies (skipped items are counted, not scored); `fits`: per item,
    whether its reference fits the token limit (end-of-turn is judged on those)."""
    done = [i for i, r in enumerate(results) if "reply" in r]
    its, replies = [items[i] for i in done], [results[i]["reply"] for i in done]
    return {"name": name, "path": path, "kind": kind, "params": params,
            "eot": eot_rate([results[i]["end"] for i in done], None if fits is None else [fits[i] for i in done]),
            "fidelity": fidelity([(it["expect"], r) for it, r in zip(its, replies)]),
            "fidelity_by_set": {k: fidelity([(it["expect"], r) for it, r in zip(its, replies) if it["set"] == k])["all"]
                                for k in dict.fromkeys(it["set"] for it in its)},
            "tasks": task_scores(its, replies), "multiturn": multiturn_scores(its, replies),
            "refusals": refusals(its, replies),
            "skipped_items": len(items) - len(done),
            "samples": pick_samples(items, results, s.samples)}


def evaluate_chat_model(path: str | Path, items: list[dict], s: ChatEvalSettings, *, tokenizer=None,
                        fallback_tokenizer=None, label: str | None = None, log=print) -> tuple[dict, list[dict]]:
    """(figures, per-item replies) of one model folder; `fallback_tokenizer` serves a folder without one."""
    from qazlm.infer.loading import load_model

    t0 = time.time()
    if tokenizer is None and fallback_tokenizer and not (Path(path) / "tokenizer.json").exists():
        tokenizer = fallback_tokenizer
    loaded = load_model(path, device=s.device, tokenizer=tokenizer)
    import torch

    torch.manual_seed(s.seed)
    results = generate_replies(loaded.model, loaded.tokenizer, [it["messages"] for it in items], s,
                               max_len=loaded.model.max_len)
    skipped = sum("skipped" in r for r in results)
    if skipped == len(results):
        raise QazlmError(f"eval --chat: {loaded.name}: every prompt + max_new_tokens ({s.max_new_tokens}) exceeds the "
                         f"model's context ({loaded.model.max_len} tokens); lower --max-new-tokens")
    if skipped:
        log(f"  {loaded.name}: {skipped} prompts skipped: with {s.max_new_tokens} new tokens they exceed the "
            f"model's context ({loaded.model.max_len} tokens)")
    n_params = sum(p.numel() for p in loaded.model.module.parameters())
    fits = reference_fits(loaded.tokenizer, [it["reference"] for it in items], s.max_new_tokens)
    figures = score_model(label or loaded.name, str(path), loaded.model.kind, n_params, items, results, s, fits)
    figures["seconds"] = round(time.time() - t0, 1)
    fid, eot = figures["fidelity"]["all"], figures["eot"]
    log(f"  {figures['name']}: language fidelity {_pct(fid['rate'])} ({fid['n']} judged, {fid['too_short']} too "
        f"short), end-of-turn {_pct(eot['rate'])}, {len(items)} prompts in {figures['seconds']}s")
    return figures, results


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def display_names(paths: list[str | Path], labels: list[str | None] | None = None) -> list[str]:
    """Report column names: the given labels, else `qazlm.infer.loading.model_name`, made unique."""
    from qazlm.infer.loading import model_name

    names = [lab or model_name(p) for p, lab in zip(paths, labels or [None] * len(paths))]
    return [n if names.count(n) == 1 else f"{n} [{k + 1}]" for k, n in enumerate(names)]


def evaluate_chat(paths: list[str | Path], s: ChatEvalSettings, *, labels: list[str | None] | None = None,
                  tokenizer=None, fallback_tokenizer=None, log=print) -> dict:
    """Every model on the same chat prompts -> one JSON-able result for `qazlm.eval.chat_report`."""
    from qazlm.eval.chat_items import build_items, read_heldout
    from qazlm.infer.loading import model_kind

    if not paths:
        raise QazlmError("eval --chat: give at least one model folder")
    for p in paths:
        model_kind(p)  # a missing or foreign folder fails before any generation
    needs_heldout = bool({"heldout", "multiturn"} & set(s.sets))
    if needs_heldout and not s.sft_data:
        raise QazlmError("eval --chat: give the instruction data folder with --sft-data DIR (its heldout.jsonl)")
    records, rejected = read_heldout(s.sft_data) if needs_heldout else ([], [])
    items, skipped = build_items(s.sets, records, limit=s.limit, sib_limit=s.sib_limit,
                                 flores_per_direction=s.flores_per_direction, data_dir=s.data_dir)
    if not items:
        raise QazlmError("eval --chat: no prompts to ask (" + "; ".join(f"{k}: {v}" for k, v in skipped.items())
                         + "); check --sft-data and --data-dir")
    by_set = {k: sum(it["set"] == k for it in items) for k in s.sets}
    log(f"chat eval: {len(items)} prompts (" + ", ".join(f"{k} {n}" for k, n in by_set.items()) + ")"
        + (f"; skipped {', '.join(skipped)}" if skipped else ""))
    models, replies = [], []
    for n, (path, name) in enumerate(zip(paths, display_names(paths, labels)), 1):
        log(f"[{n}/{len(paths)}] chat-evaluating {path}")
        figures, results = evaluate_chat_model(path, items, s, tokenizer=tokenizer,
                                                 fallback_tokenizer=fallback_tokenizer, label=name, log=log)
        models.append(figures)
        replies.append(results)
    return {"format": "qazlm-chat-eval-v1", "settings": dict(vars(s)), "min_words": MIN_WORDS,
            "items": {"n": len(items), "by_set": by_set,
                      "skipped_sets": skipped, "heldout_malformed": rejected},
            "models": models, "_replies": replies, "_items": items}
