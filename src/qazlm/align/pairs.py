"""`qazlm pref-data`: preference pairs whose preferred side is right by construction (docs/alignment.md).

Built from a `qazlm sft-data` folder (its held-out conversations give the held-out pairs, so no pair shares a
prompt with training) and from the English harmless dialogues in ../shared (MIT). Each pair is TRL's
conversational preference format — `prompt` (messages), `chosen` and `rejected` (one assistant message each),
`tools` (JSON text or null) — plus `type`, `lang`, `source`. Types and why the chosen side is right:

- language: the answer in the language asked for vs the same content in another language (the text to
  translate echoed, the previous turn's language kept, the topic label in another language), or for tasks
  without a parallel version vs an answer of the same task in another language;
- tool_call: the correct call vs the same call to an unknown function, with arguments that are not valid JSON,
  or with a required argument missing;
- tool_irrelevant: a direct answer when no tool fits vs a call to one of the offered tools;
- computed: the computed count vs the same answer with the number off by 1-3;
- concise: the answer vs the answer followed by its own last sentence three more times;
- refusal: a refusal of a harmful request (sft-data's `safety_refusal`) vs the start of compliance;
- over_refusal: the answer to an ordinary request vs a refusal of it;
- harmless_en: Anthropic HH-RLHF harmless-base, chosen vs rejected as labelled by people;
- on_policy (with `policy`): `samples` replies of the policy model (usually the SFT model) to each prompt,
  the best against the worst as ranked by `reward_model`, or without one by the checkable rule of the
  prompt's task (answer language, the computed number); ties give no pair.

A pair with identical sides or an empty side, a duplicate (HH-RLHF ones also by MinHash), or one that shares a
word 13-gram (or a whole short item) with an evaluation set of `decontaminate` (the corpus pipeline's own index, as
`qazlm sft-data` uses) is set aside with its reason (rejected.jsonl), never trained on.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from qazlm.config import check_fields
from qazlm.errors import QazlmError

STAGE = "pref_data"
TYPES = ("language", "tool_call", "tool_irrelevant", "computed", "concise", "refusal", "over_refusal",
         "harmless_en", "on_policy")
# Types whose chosen side is right by construction: the reward model's target is stated on these (harmless_en is
# people's judgement; on_policy may be ranked by a reward model).
CHECKABLE = frozenset(TYPES) - {"harmless_en", "on_policy"}
LANGUAGE_TASKS = {"continue", "title", "keywords", "fill_gap", "alpaca_ru", "alpaca_en", "topic", "system_short",
                  "identity", "system_persona", "reorder"}
PARALLEL_TASKS = {"translation", "system_language", "multiturn", "topic"}   # the other language's version is known
TOOL_TASKS = {"tool_simple", "tool_multiple", "tool_parallel"}
COUNT_TASKS = {"count_words", "count_sentences"}
HARMLESS = "data/preference/hh_rlhf_harmless_base_test.jsonl.gz"
LICENCES = {"sft-data": "the sft-data folder's own (see its card.md)",
            "hh-rlhf harmless-base": "MIT (Anthropic, https://github.com/anthropics/hh-rlhf)"}


def default_decontam() -> list[str]:
    from qazlm.sft.data import DEFAULT_DECONTAM

    return DEFAULT_DECONTAM


@dataclass
class PrefDataConfig:
    """[pref_data] table / `qazlm pref-data` flags."""
    sft_data: str = ""                     # a `qazlm sft-data` folder (train.jsonl, heldout.jsonl)
    out_dir: str = "runs/pref_data"
    types: list[str] = field(default_factory=lambda: [t for t in TYPES if t != "on_policy"])
    per_type: int = 200                    # at most this many training pairs per type (held-out: a tenth, >= 20)
    harmless_file: str = ""                # "": ../shared/data/preference/hh_rlhf_harmless_base_test.jsonl.gz
    seed: int = 0
    policy: str = ""                       # on_policy: the model whose samples are paired (usually sft/final)
    reward_model: str = ""                 # on_policy: ranks the samples ("" = the checkable rules)
    samples: int = 4                       # on_policy: replies per prompt
    temperature: float = 1.0
    max_new_tokens: int = 48
    decontaminate: list[str] = field(default_factory=lambda: list(default_decontam()))

    def __post_init__(self):
        check_fields(self, "[pref_data] ", {"per_type": ">= 1", "samples": ">= 2", "temperature": "> 0",
                                            "max_new_tokens": ">= 1"})
        if self.policy and "on_policy" not in self.types:
            self.types = [*self.types, "on_policy"]
        if "on_policy" in self.types and not self.policy:
            raise QazlmError("[pref_data] on_policy pairs need the policy model (--policy DIR, e.g. sft/final)")
        if not self.sft_data:
            raise QazlmError("pref-data: give the sft-data folder the pairs are built from (--sft-data DIR)")
        from qazlm.data.decontam import check_known_sets

        check_known_sets(self.decontaminate, "[pref_data]")
        unknown = [t for t in self.types if t not in TYPES]
        if unknown or not self.types:
            raise QazlmError(f"[pref_data] types: {unknown or 'empty'}; choose from {', '.join(TYPES)}")


def assistant_text(message: dict) -> str:
    return (message.get("content") or "").strip()


def split_last(conv: dict) -> tuple[list[dict], dict] | None:
    """(prompt messages, final assistant message) of a conversation without tool turns, else None."""
    msgs = conv["messages"]
    if conv.get("tools") or msgs[-1]["role"] != "assistant" or any(m["role"] == "tool" for m in msgs):
        return None
    return msgs[:-1], msgs[-1]


def pair(prompt, chosen, rejected, kind, conv, tools=None) -> dict:
    return {"prompt": prompt, "chosen": [chosen], "rejected": [rejected],
            "tools": json.dumps(tools, ensure_ascii=False) if tools else None,
            "type": kind, "lang": conv.get("lang", "en"), "source": conv.get("source", "sft-data")}


def language_pairs(convs: list[dict], rng: random.Random) -> list[dict]:
    """The answer in the language asked for vs the same content in another language where the data holds it
    (PARALLEL_TASKS: only the language differs), else vs an answer of the same task in another language."""
    by_task: dict[str, list[dict]] = {}
    out = []
    for c in convs:
        if c.get("task") in PARALLEL_TASKS and split_last(c):
            prompt, good = split_last(c)
            wrong = wrong_language_reply(c["task"], c.get("lang", "en"), prompt, assistant_text(good), rng)
            if wrong:
                out.append(pair(prompt, good, {"role": "assistant", "content": wrong}, "language", c))
        elif c.get("task") in LANGUAGE_TASKS and split_last(c):
            by_task.setdefault(c["task"], []).append(c)
    for group in by_task.values():
        for c in group:
            others = [o for o in group if o.get("lang") != c.get("lang")]
            if others:
                prompt, good = split_last(c)
                out.append(pair(prompt, good, split_last(rng.choice(others))[1], "language", c))
    return out


def wrong_language_reply(task: str, lang: str, prompt: list[dict], answer: str, rng: random.Random) -> str | None:
    """The answer's content in a language the user did not ask for: the text the user gave (translation and
    system_language put it after the instruction's first line), the previous answer again (multiturn's "now into
    X"), or the topic label in another language."""
    from qazlm.sft.prompts import LABELS

    if task in ("translation", "system_language"):
        return prompt[-1]["content"].split("\n", 1)[1] if "\n" in prompt[-1]["content"] else None
    if task == "multiturn":
        return prompt[-2]["content"] if len(prompt) >= 2 and prompt[-2]["role"] == "assistant" else None
    label = next((k for k, v in LABELS.get(lang, {}).items() if v == answer), None)
    others = [LABELS[x][label] for x in LABELS if label and LABELS[x][label] != answer]
    return rng.choice(others) if others else None


def tool_pairs(convs: list[dict], rng: random.Random) -> list[dict]:
    out = []
    for c in convs:
        if c.get("task") not in TOOL_TASKS:
            continue
        at = next((i for i, m in enumerate(c["messages"]) if m.get("tool_calls")), None)
        if at is None:
            continue
        good = c["messages"][at]
        bad = json.loads(json.dumps(good))
        call = bad["tool_calls"][0]["function"]
        how = rng.choice(("unknown_function", "bad_json", "missing_argument", "wrong_value", "wrong_tool"))
        args = json.loads(call["arguments"]) if isinstance(call["arguments"], str) else dict(call["arguments"])
        numbers = sorted(k for k, v in args.items() if isinstance(v, int | float) and not isinstance(v, bool))
        others = sorted({t["function"]["name"] for t in c.get("tools") or []} - {call["name"]})
        if how == "missing_argument" and args:
            args.pop(sorted(args)[0])
            call["arguments"] = json.dumps(args, ensure_ascii=False)
        elif how == "bad_json":   # broken JSON is text, not a call: the template would refuse it as a call
            call["arguments"] = json.dumps(args, ensure_ascii=False)[:-1]
            bad = {"role": "assistant", "content": broken_calls_text(bad["tool_calls"])}
        elif how == "wrong_value" and numbers:   # a valid call with a number misread: what exact match catches
            key = rng.choice(numbers)
            value = args[key]
            args[key] = off_by(value, rng) if isinstance(value, int) else round(value + rng.choice((-1, 1)) * 0.1, 2)
            call["arguments"] = json.dumps(args, ensure_ascii=False)
        elif how == "wrong_tool" and others:     # another offered tool, with the same arguments
            call["name"] = rng.choice(others)
        else:
            call["name"] = call["name"] + "_v2"
        out.append(pair(c["messages"][:at], good, bad, "tool_call", c, c.get("tools")))
    return out


def broken_calls_text(calls: list[dict]) -> str:
    """The calls as the template writes them, arguments as given (one of them broken JSON), joined as it joins them."""
    from qazlm.infer.tools import call_block_text, function_of

    texts = []
    for call in calls:
        fn = function_of(call)
        args = fn["arguments"] if isinstance(fn["arguments"], str) else json.dumps(fn["arguments"], ensure_ascii=False)
        texts.append(call_block_text(fn["name"], args))
    return "\n".join(texts)


def irrelevant_pairs(convs: list[dict], rng: random.Random) -> list[dict]:
    out = []
    for c in convs:
        if c.get("task") != "tool_irrelevant" or not c.get("tools") or c["messages"][-1]["role"] != "assistant":
            continue
        name = rng.choice(c["tools"])["function"]["name"]
        call = {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": name, "arguments": "{}"}}]}
        out.append(pair(c["messages"][:-1], c["messages"][-1], call, "tool_irrelevant", c, c["tools"]))
    return out


def off_by(n: int, rng: random.Random) -> int:
    """A wrong count 1-3 away, below as often as above (one always above teaches "pick the smaller number");
    never below 1."""
    d = rng.randint(1, 3)
    return n - d if rng.random() < 0.5 and n - d >= 1 else n + d


def computed_pairs(convs: list[dict], rng: random.Random) -> list[dict]:
    out = []
    for c in convs:
        last = split_last(c) if c.get("task") in COUNT_TASKS else None
        if last and re.search(r"\d+", assistant_text(last[1])):
            text = assistant_text(last[1])
            wrong = re.sub(r"\d+", lambda m: str(off_by(int(m.group()), rng)), text, count=1)
            out.append(pair(last[0], last[1], {"role": "assistant", "content": wrong}, "computed", c))
    return out


def concise_pairs(convs: list[dict], rng: random.Random) -> list[dict]:
    out = []
    for c in convs:
        last = split_last(c) if c.get("task") in LANGUAGE_TASKS else None
        if last and assistant_text(last[1]):
            text = assistant_text(last[1])
            tail = re.split(r"(?<=[.!?])\s+", text)[-1]
            out.append(pair(last[0], last[1], {"role": "assistant", "content": " ".join([text] + [tail] * 3)},
                            "concise", c))
    return out


def refusal_pairs(convs: list[dict], rng: random.Random) -> list[dict]:
    from qazlm.sft.safety import compliance

    out = []
    for c in convs:
        last = split_last(c) if c.get("task") == "safety_refusal" else None
        if last:
            out.append(pair(last[0], last[1], {"role": "assistant", "content": compliance(c["lang"])}, "refusal", c))
    return out


def over_refusal_pairs(convs: list[dict], rng: random.Random) -> list[dict]:
    from qazlm.sft.safety import HARMS, refusal

    out = []
    for c in convs:
        last = split_last(c) if c.get("task") in LANGUAGE_TASKS and c.get("lang") in ("kk", "ru", "en") else None
        if last:
            no = {"role": "assistant", "content": refusal(rng.choice(sorted(HARMS)), c["lang"])}
            out.append(pair(last[0], last[1], no, "over_refusal", c))
    return out


def hh_dialogue(text: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' -> messages."""
    turns = re.split(r"\n\n(Human|Assistant): ", "\n\n" + text.strip())[1:]
    return [{"role": "user" if who == "Human" else "assistant", "content": said.strip()}
            for who, said in zip(turns[::2], turns[1::2])]


def harmless_pairs(path: Path) -> list[dict]:
    if not path.is_file():
        raise QazlmError(f"pref-data: {path} not found; set harmless_file, or drop harmless_en from types")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            good, bad = hh_dialogue(row["chosen"]), hh_dialogue(row["rejected"])
            if len(good) < 2 or good[-1]["role"] != "assistant" or bad[-1]["role"] != "assistant" \
                    or good[:-1] != bad[:-1]:
                continue
            conv = {"lang": "en", "source": "hh-rlhf harmless-base"}
            out.append(pair(good[:-1], good[-1], bad[-1], "harmless_en", conv))
    return out


def on_policy_pairs(convs: list[dict], rng: random.Random, cfg: PrefDataConfig, limit: int) -> list[dict]:
    """Best vs worst of the policy's samples per prompt (single-turn prompts of tasks with a checkable rule)."""
    from qazlm.align.dpo import rule_score
    from qazlm.infer.engine import generate_chat
    from qazlm.infer.loading import load_model
    from qazlm.infer.sampling import SamplingParams

    kinds = {**{t: "language" for t in LANGUAGE_TASKS}, **{t: "computed" for t in COUNT_TASKS}}
    pool = [c for c in convs if c.get("task") in kinds and split_last(c)]
    rng.shuffle(pool)
    pool = pool[:limit]
    loaded = load_model(cfg.policy)
    samples: list[list[str]] = [[] for _ in pool]
    for k in range(cfg.samples):   # one batch per round, each with its own seed
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed + k)
        for i in range(0, len(pool), 16):
            got = generate_chat(loaded.model, loaded.tokenizer, [split_last(c)[0] for c in pool[i:i + 16]], params)
            for j, text in enumerate(got):
                samples[i + j].append(text)
    if cfg.reward_model:
        from qazlm.align.common import render
        from qazlm.align.reward import load_reward_model, rewards

        rm, tok = load_reward_model(cfg.reward_model)
        texts = [render(tok, split_last(c)[0], [{"role": "assistant", "content": r}], None)
                 for c, rs in zip(pool, samples) for r in rs]
        flat = rewards(rm, tok, texts)
        scores = [flat[i * cfg.samples:(i + 1) * cfg.samples] for i in range(len(pool))]
    else:
        scores = [[rule_score({"type": kinds[c["task"]], "lang": c.get("lang"), "chosen": [split_last(c)[1]]}, r)
                   for r in rs] for c, rs in zip(pool, samples)]
    out = []
    for c, rs, sc in zip(pool, samples, scores):
        best, worst = max(range(len(rs)), key=sc.__getitem__), min(range(len(rs)), key=sc.__getitem__)
        if sc[best] > sc[worst]:
            p = pair(split_last(c)[0], {"role": "assistant", "content": rs[best]},
                     {"role": "assistant", "content": rs[worst]}, "on_policy", c)
            p["judge"] = "reward_model" if cfg.reward_model else f"rule:{kinds[c['task']]}"
            p["scores"] = [float(sc[best]), float(sc[worst])]
            out.append(p)
    return out


BUILDERS = {"language": language_pairs, "tool_call": tool_pairs, "tool_irrelevant": irrelevant_pairs,
            "computed": computed_pairs, "concise": concise_pairs, "refusal": refusal_pairs,
            "over_refusal": over_refusal_pairs}


def why_not(p: dict) -> str | None:
    """The reason a pair cannot teach a preference, or None."""
    good, bad = p["chosen"][0], p["rejected"][0]
    if not (assistant_text(good) or good.get("tool_calls")) or not (assistant_text(bad) or bad.get("tool_calls")):
        return "empty response"
    if json.dumps(good, sort_keys=True) == json.dumps(bad, sort_keys=True):
        return "identical chosen and rejected"
    if not p["prompt"]:
        return "no prompt"
    return None


def contamination(p: dict, index) -> str | None:
    """'contaminated: SET' when a message of the pair shares an n-gram with an evaluation set."""
    if index is None:
        return None
    texts = [m.get("content") or "" for m in p["prompt"] + p["chosen"] + p["rejected"]]
    hit = next((h for t in texts if isinstance(t, str) and (h := index.match(t))), None)
    return f"contaminated: {hit}" if hit else None


def read_convs(folder: Path, name: str) -> list[dict]:
    path = folder / f"{name}.jsonl"
    if not path.is_file():
        raise QazlmError(f"pref-data: {path} not found; build the folder with `qazlm sft-data -o {folder}`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build(cfg: PrefDataConfig) -> dict:
    """{"train": [...], "heldout": [...], "rejected": [...]}: per type at most per_type training pairs and a
    tenth as many held-out ones (at least 20, so held-out scores mean something), deduplicated, in a seeded
    order."""
    from qazlm.paths import shared_dir
    from qazlm.sft.clean import eval_index

    index = eval_index(cfg.decontaminate)[0] if cfg.decontaminate else None
    rng = random.Random(cfg.seed)
    folder = Path(cfg.sft_data)
    sides = {"train": read_convs(folder, "train"), "heldout": read_convs(folder, "heldout")}
    result: dict[str, list] = {"train": [], "heldout": [], "rejected": []}
    seen: set[str] = set()
    for kind in cfg.types:
        if kind == "harmless_en":
            pool, near = near_dedup(harmless_pairs(Path(cfg.harmless_file) if cfg.harmless_file
                                                   else shared_dir() / HARMLESS))
            result["rejected"] += near
            rng.shuffle(pool)
            cut = max(1, len(pool) // 10)
            made = {"heldout": pool[:cut], "train": pool[cut:]}
        elif kind == "on_policy":
            made = {side: on_policy_pairs(convs, rng, cfg, cfg.per_type if side == "train" else
                                          max(20, cfg.per_type // 10)) for side, convs in sides.items()}
        else:
            made = {side: BUILDERS[kind](convs, rng) for side, convs in sides.items()}
        for side, limit in (("train", cfg.per_type), ("heldout", max(20, cfg.per_type // 10))):
            rng.shuffle(made[side])
            kept = 0
            for p in made[side]:
                key = hashlib.sha1(pair_text(p).encode()).hexdigest()
                reason = why_not(p) or ("duplicate" if key in seen else None) or contamination(p, index)
                if reason:
                    result["rejected"].append({**p, "reason": reason})
                    continue
                seen.add(key)
                if kept < limit:
                    result[side].append(p)
                    kept += 1
    for side in ("train", "heldout"):
        rng.shuffle(result[side])
    return result


def pair_text(p: dict) -> str:
    return json.dumps([p["prompt"], p["chosen"], p["rejected"]], sort_keys=True, ensure_ascii=False)


def near_dedup(pairs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(kept, set aside) of pairs from outside (HH-RLHF): the corpus pipeline's MinHash over the whole pair, one of
    each cluster kept, before the held-out split, so that no held-out pair has a near-copy in training
    (docs/alignment.md)."""
    from qazlm.data.prepare import near_duplicates

    drop = near_duplicates([pair_text(p) for p in pairs])
    return ([p for i, p in enumerate(pairs) if i not in drop],
            [{**p, "reason": "near-duplicate (MinHash)"} for i, p in enumerate(pairs) if i in drop])


def counts(rows: list[dict]) -> dict:
    table: dict[str, dict[str, int]] = {}
    for r in rows:
        table.setdefault(r["type"], {}).setdefault(r["lang"], 0)
        table[r["type"]][r["lang"]] += 1
    return table


def write_card(out: Path, cfg: PrefDataConfig, result: dict) -> dict:
    from qazlm.io import write_json, write_text

    card = {"format": "qazlm-pref-data-v1", "pairs": {k: len(v) for k, v in result.items()},
            "train": counts(result["train"]), "heldout": counts(result["heldout"]),
            "sources": sorted({r["source"] for r in result["train"] + result["heldout"]}),
            "licences": LICENCES, "config": dataclasses.asdict(cfg)}
    lines = ["# Preference pairs", "", f"Built from `{cfg.sft_data}` by `qazlm pref-data`; the chosen side of every "
             "pair is right by construction (docs/alignment.md).", "",
             "| type | language | train | held-out |", "|---|---|---:|---:|"]
    for kind in sorted(card["train"]):
        for lang in sorted(card["train"][kind]):
            lines.append(f"| {kind} | {lang} | {card['train'][kind][lang]} | "
                         f"{card['heldout'].get(kind, {}).get(lang, 0)} |")
    lines += ["", f"Set aside: {len(result['rejected'])} (rejected.jsonl, each with its reason: identical or empty "
              "sides, duplicates, pairs sharing text with the evaluation sets "
              f"{', '.join(cfg.decontaminate) or '(none: decontaminate = [])'}).", "",
              "## Sources and licences", ""] + [f"- {k}: {v}" for k, v in LICENCES.items()]
    write_text(out / "card.md", "\n".join(lines) + "\n")
    write_json(out / "card.json", card)
    return card


def run(cfg: PrefDataConfig, force: bool = False, log=print) -> dict:
    """Build the folder under its run lock; skip when its record equals this config (unless `force`)."""
    from qazlm.io import clean_temp
    from qazlm.runs import config_changes, output_lock, read_record, write_record
    from qazlm.sft.train import write_jsonl

    out = Path(cfg.out_dir)
    wanted = json.loads(json.dumps(dataclasses.asdict(cfg)))
    with output_lock(out, STAGE):
        clean_temp(out)
        old = read_record(out)
        if old is not None and not force and not config_changes(old, wanted):
            log(f"pref-data: {out} is up to date (same config); --force to rebuild")
            return json.loads((out / "card.json").read_text(encoding="utf-8"))
        result = build(cfg)
        if not result["train"]:
            raise QazlmError(f"pref-data: no pair could be built from {cfg.sft_data} with types {cfg.types}")
        for name, rows in result.items():
            write_jsonl(out / f"{name}.jsonl", rows)
        card = write_card(out, cfg, result)
        write_record(out, STAGE, wanted)
    log(f"pref-data: {len(result['train']):,} train, {len(result['heldout']):,} held-out pairs, "
        f"{len(result['rejected']):,} set aside -> {out} (card: {out}/card.md)")
    return card
