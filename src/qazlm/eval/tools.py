"""Function-calling evaluation in BFCL's categories: simple (one tool offered), multiple (pick the right
tool), parallel (two calls in one turn) and irrelevance (no tool fits: must not call), on the held-out
tool conversations of a `qazlm sft-data` folder (tools seen in training) and on its `tools_unseen.jsonl`
(tools no training item offers).

Per model and category: **exact match** of the calls (name and arguments, order-free for parallel calls; as
BFCL's AST check, numbers compare by value), **valid-call rate** (every emitted block parses, names an offered
tool and has schema-valid arguments), the same two with constrained decoding (the grammar forces a valid call;
not for irrelevance, where calling is the error), **right tools** under constrained decoding (the called
functions are the reference's, arguments aside: tool selection apart from argument filling), **irrelevance
detection** (no call when none fits), and the **language fidelity** of the final answer (the model answers the
conversation after the tool results, in the user's language).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from qazlm.config import check_fields
from qazlm.errors import QazlmError
from qazlm.stats import rate_text

CATEGORIES = ("tool_simple", "tool_multiple", "tool_parallel", "tool_irrelevant")
UNSEEN = "tools_unseen.jsonl"


@dataclass
class ToolEvalSettings:
    sft_data: str = ""
    limit: int | None = 20          # conversations per category and split (None: all)
    max_new_tokens: int = 96
    device: str = "auto"            # auto: cuda when there is one, else cpu

    def __post_init__(self):
        from qazlm.runs import resolve_device

        check_fields(self, "eval --tools: ", {"limit": ">= 1", "max_new_tokens": ">= 8"})
        self.device = resolve_device(self.device, "eval --tools:")


def read_items(sft_data: str | Path, limit: int | None) -> list[dict]:
    """Tool conversations: held-out (seen tools) and unseen-tool ones, `limit` per category and split."""
    folder = Path(sft_data)
    files = {"seen": folder / "heldout.jsonl", "unseen": folder / UNSEEN}
    if not files["seen"].is_file():
        raise QazlmError(f"--sft-data {folder}: no heldout.jsonl; give a `qazlm sft-data` folder")
    items, taken, broken = [], {}, 0
    for split, path in files.items():
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line) if line.strip() else {}
                key = (split, rec.get("task"))
                if rec.get("task") in CATEGORIES and rec.get("tools") and taken.get(key, 0) != limit:
                    items.append(item(rec, split))
                    taken[key] = taken.get(key, 0) + 1
            except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
                broken += 1  # a hand-edited or cut line: counted, the rest is scored
    if broken:
        print(f"eval --tools: {broken} malformed lines in {folder} skipped")
    if not items:
        raise QazlmError(f"--sft-data {folder}: no tool-use conversations; build the data with the tool tasks "
                         f"({', '.join(CATEGORIES)})")
    return items


def item(rec: dict, split: str) -> dict:
    msgs = rec["messages"]
    first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    calls = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
             for c in msgs[first].get("tool_calls") or []]
    return {"split": split, "category": rec["task"], "lang": rec["lang"], "tools": rec["tools"],
            "prompt": msgs[:first], "expected": calls,
            "answer_context": msgs[:-1] if calls else None, "answer": msgs[-1]["content"]}


def same_value(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def calls_match(expected: list[dict], got: list[dict]) -> bool:
    """The same calls, in any order (each expected call matched once)."""
    left = list(got)
    for want in expected:
        hit = next((g for g in left if g["name"] == want["name"] and same_value(g["arguments"], want["arguments"])),
                   None)
        if hit is None:
            return False
        left.remove(hit)
    return not left


def same_tools(expected: list[dict], got: list[dict]) -> bool:
    """The right functions, whatever their arguments: the same names as a multiset (tool selection, the part
    of exact match a model gets first)."""
    return sorted(g["name"] for g in got) == sorted(w["name"] for w in expected)


def judge(it: dict, text: str) -> dict:
    from qazlm.infer.tools import parse_tool_calls

    reply = parse_tool_calls(text, it["tools"])
    got = [{"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
           for c in reply.tool_calls]
    called = bool(got or reply.errors)
    return {"text": text, "valid": called and not reply.errors, "called": called,
            "cut": any("cut off" in e for e in reply.errors),
            "exact": calls_match(it["expected"], got) and not reply.errors if it["expected"] else not called,
            "tools": same_tools(it["expected"], got) and not reply.errors if it["expected"] else None}


def run_model(path: str | Path, items: list[dict], s: ToolEvalSettings, log=print) -> dict:
    """Every figure of one model folder, plus its replies."""
    from qazlm.eval.chat import fidelity
    from qazlm.infer.loading import load_model

    t0 = time.time()
    loaded = load_model(path, device=s.device)
    fitting = [it for it in items if fits(loaded, it, s.max_new_tokens)]
    if not fitting:
        raise QazlmError(f"eval --tools: {loaded.name}: every conversation + max_new_tokens ({s.max_new_tokens}) "
                         f"exceeds the model's context ({loaded.model.max_len} tokens); lower --max-new-tokens")
    rows = [{"split": it["split"], "category": it["category"], "lang": it["lang"], "free": judge(it, free),
             "constrained": judge(it, forced) if it["expected"] else None, "answer": answer,
             "reference": it["answer"]}
            for it, (free, forced, answer) in zip(fitting, replies(loaded, fitting, s))]
    figures = {"name": loaded.name, "path": str(path), "scores": scores(rows), "skipped": len(items) - len(fitting),
               "answer_fidelity": fidelity([(r["lang"], r["answer"]) for r in rows if r["answer"] is not None]),
               "seconds": round(time.time() - t0, 1)}
    log(summary_line(figures))
    return {"figures": figures, "rows": rows}


def replies(loaded, items: list[dict], s: ToolEvalSettings) -> list[list[str | None]]:
    """[free reply, grammar-forced reply, final answer after the tool results] per conversation (None where
    the conversation has no call), all decoded together by the server's continuous batcher: each request has
    its own tools and grammar, and a greedy request gets the tokens it would get alone."""
    from tqdm import tqdm

    from qazlm.infer.batcher import ContinuousBatcher
    from qazlm.infer.chat import render_chat
    from qazlm.infer.engine import encode_prompts, make_constraint, stop_ids_for
    from qazlm.infer.sampling import SamplingParams
    from qazlm.infer.tools import decode_for_tools

    tok = loaded.tokenizer
    params = SamplingParams(max_new_tokens=s.max_new_tokens)
    stop_ids = stop_ids_for(tok, params)
    jobs = []   # (conversation, which reply, prompt ids, grammar)
    for n, it in enumerate(items):
        convs = [it["prompt"]] + ([it["answer_context"]] if it["answer_context"] else [])
        ids = encode_prompts(tok, [render_chat(tok, c, tools=it["tools"]) for c in convs], add_bos=False)
        jobs.append((n, 0, ids[0], None))
        if it["expected"]:
            jobs.append((n, 1, ids[0], make_constraint(tok, None, it["tools"], stop_ids, True, 1)))
        if it["answer_context"]:
            jobs.append((n, 2, ids[1], None))
    longest = max(len(prompt) for _, _, prompt, _ in jobs)
    batcher = ContinuousBatcher(loaded.model, slots=16, max_len=longest + s.max_new_tokens, prefill_chunk=longest,
                                max_queue=len(jobs))
    requests = [batcher.submit(prompt, params, stop_ids, constraint=grammar) for _, _, prompt, grammar in jobs]
    with tqdm(total=len(requests), desc=f"tool calls ({loaded.name})", unit="reply", leave=False) as bar:
        while batcher.step():
            bar.update(sum(r.finish is not None for r in requests) - bar.n)
    out: list[list[str | None]] = [[None, None, None] for _ in items]
    for (n, which, _, _), req in zip(jobs, requests):
        out[n][which] = decode_for_tools(tok, req.tokens).strip()
    return out


def fits(loaded, it: dict, new_tokens: int) -> bool:
    """Whether the longest prompt of the item (the answer context) leaves room for `new_tokens`."""
    from qazlm.infer.chat import render_chat

    longest = it["answer_context"] or it["prompt"]
    ids = loaded.tokenizer(render_chat(loaded.tokenizer, longest, tools=it["tools"]), add_special_tokens=False)
    return len(ids["input_ids"]) + new_tokens <= loaded.model.max_len


def rate(rows: list[dict], key) -> float | None:
    values = [key(r) for r in rows]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def scores(rows: list[dict]) -> dict:
    """split -> category -> {n, exact, valid, exact_constrained, tools_constrained, valid_constrained,
    cut_constrained, irrelevance}."""
    out: dict = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        for cat in CATEGORIES:
            sel = [r for r in rows if r["split"] == split and r["category"] == cat]
            if not sel:
                continue
            calls = cat != "tool_irrelevant"
            out.setdefault(split, {})[cat] = {
                "n": len(sel), "exact": rate(sel, lambda r: r["free"]["exact"]),
                "valid": rate(sel, lambda r: r["free"]["valid"] if r["free"]["called"] else False) if calls else None,
                "exact_constrained": rate(sel, lambda r: r["constrained"]["exact"]) if calls else None,
                "tools_constrained": rate(sel, lambda r: r["constrained"]["tools"]) if calls else None,
                "valid_constrained": rate(sel, lambda r: r["constrained"]["valid"]) if calls else None,
                "cut_constrained": rate(sel, lambda r: r["constrained"]["cut"]) if calls else None,
                "irrelevance": rate(sel, lambda r: not r["free"]["called"]) if not calls else None}
    return out


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def summary_line(f: dict) -> str:
    parts = []
    for split, cats in f["scores"].items():
        calls = [c for k, c in cats.items() if k != "tool_irrelevant"]
        exact = sum(c["exact"] * c["n"] for c in calls) / max(sum(c["n"] for c in calls), 1)
        irr = cats.get("tool_irrelevant", {})
        irr_text = rate_text(irr.get("irrelevance"), irr.get("n", 0))
        parts.append(f"{split}: exact {_pct(exact)}, irrelevance {irr_text}")
    return f"  {f['name']}: tool calls — " + "; ".join(parts) + f" ({f['seconds']}s)"


def markdown(results: list[dict]) -> str:
    lines = ["# Function calling (BFCL categories)", "",
             "exact = the calls equal the reference (name and arguments, any order); valid = every call parses, "
             "names an offered tool and fits its schema; constrained = the same with grammar-forced decoding; "
             "right tools = the called functions are the reference's, whatever the arguments; "
             "irrelevance = no call when no tool fits. Under the grammar a reply is always a valid call unless even "
             "the shortest valid call does not fit in max_new_tokens (the grammar closes values as the budget runs "
             "out); such cut replies are counted in their own column. Brackets: the 95% Wilson interval of a share "
             "of n items (`qazlm.stats`).", ""]
    for res in results:
        f = res["figures"]
        lines += [f"## {f['name']}", "", "| split | category | n | exact | valid | exact (constrained) | "
                  "right tools (constrained) | valid (constrained) | cut by max tokens (constrained) | irrelevance |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for split, cats in f["scores"].items():
            for cat, c in cats.items():
                lines.append(f"| {split} | {cat.removeprefix('tool_')} | {c['n']} | {_pct(c['exact'])} | "
                             f"{_pct(c['valid'])} | {_pct(c['exact_constrained'])} | "
                             f"{_pct(c['tools_constrained'])} | {_pct(c['valid_constrained'])} | "
                             f"{_pct(c['cut_constrained'])} | {rate_text(c['irrelevance'], c['n'])} |")
        fid = f["answer_fidelity"]["all"]
        lines += ["", f"Final answers in the user's language: {rate_text(fid['rate'], fid['n'])} of {fid['n']} "
                      f"identifiable ({fid['too_short']} too short to tell)."]
        if f["skipped"]:
            lines.append(f"{f['skipped']} conversations skipped: longer than the model's context.")
        lines.append("")
    return "\n".join(lines)


def evaluate_tools(paths: list[str | Path], s: ToolEvalSettings, out_dir: str | Path, log=print) -> list[dict]:
    """Score each model folder; write tools_report.md / tools_report.json / tools_replies.jsonl to `out_dir`."""
    from qazlm.io import atomic_write, write_json, write_text

    items = read_items(s.sft_data, s.limit)
    log(f"eval --tools: {len(items)} conversations ({', '.join(sorted({i['split'] for i in items}))} tools)")
    results = [run_model(p, items, s, log) for p in paths]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "tools_report.json", {"settings": vars(s), "models": [r["figures"] for r in results]})
    write_text(out / "tools_report.md", markdown(results))
    with atomic_write(out / "tools_replies.jsonl") as f:
        for r in results:
            for row in r["rows"]:
                f.write(json.dumps({"model": r["figures"]["name"], **row}, ensure_ascii=False) + "\n")
    return results
