"""Constrained decoding (outlines-core, `qazlm.infer.constrain`): what the grammar costs per generated token.

For each model (our `tiny` chat model and SmolLM2-135M-Instruct when present) greedy decoding at batch 1, the
same prompt and the same number of decoding steps (no stop token), free vs constrained by (a) a JSON Schema
`response_format` and (b) a tool call of three tools: milliseconds per step, the part of it spent in the
grammar (mask + advance, timed inside the loop, the budget check included), and the one-off grammar build (regex
-> token automaton over the vocabulary, vocabulary and shortest-completion distances included; cached per
tokenizer and grammar). Prints a table; the last line is one JSON
object.

    python benchmarks/bench_constrained.py --tiny runs/tiny/sft/final --smollm2-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 60}, "population": {"type": "integer"},
    "districts": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 8}},
    "required": ["city", "population", "districts"]}


def tools():
    from qazlm.sft.toolkit import SEEN

    return [SEEN[n].spec for n in ("convert_currency", "weather", "calculator")]


def decode_ms(model, tok, prompt: list[int], new_tokens: int, constraint=None) -> tuple[float, float]:
    """(ms per step of the whole decode loop, ms per step spent in the grammar) for `new_tokens` steps with no
    stop token (every run does the same number of model steps), best of 3."""
    from qazlm.infer.engine import generate_ids
    from qazlm.infer.sampling import SamplingParams

    best = (float("inf"), 0.0)
    for _ in range(3):
        spent = [0.0]
        if constraint is not None:
            constraint = type(constraint)(*constraint.args)
            for name in ("mask", "advance"):
                inner = getattr(constraint, name)

                def timed(*a, _inner=inner):
                    t = time.perf_counter()
                    out = _inner(*a)
                    spent[0] += time.perf_counter() - t
                    return out
                setattr(constraint, name, timed)
        t0 = time.perf_counter()
        generate_ids(model, [prompt], SamplingParams(max_new_tokens=new_tokens), stop_token_ids=(),
                     constraint=constraint)
        total = time.perf_counter() - t0
        if total < best[0] * new_tokens / 1000:
            best = (1000 * total / new_tokens, 1000 * spent[0] / new_tokens)
    return best


class Rebuildable:
    """A Constraint that can be made afresh for each timed run (the grammar state starts over)."""

    def __init__(self, *args):
        from qazlm.infer.constrain import Constraint

        self.args, self.inner = args, Constraint(*args)

    def mask(self, logits):
        return self.inner.mask(logits)

    def advance(self, rows, tokens):
        return self.inner.advance(rows, tokens)

    def limit_tokens(self, budget):
        return self.inner.limit_tokens(budget)


def bench(name: str, path: Path, args) -> dict:
    from qazlm.infer.chat import render_chat
    from qazlm.infer.constrain import _distances, _index, _vocabulary, schema_regex, tool_call_regex
    from qazlm.infer.engine import encode_prompts, stop_ids_for
    from qazlm.infer.loading import load_model
    from qazlm.infer.sampling import SamplingParams
    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE

    loaded = load_model(path)
    model, tok = loaded.model, loaded.tokenizer
    tok.chat_template = CHAT_TEMPLATE  # SmolLM2's own drops `tools` (refused since 2026-12-05); the prompt is a prefix
    conv = [{"role": "user", "content": "Алматы туралы қысқаша JSON жаз / Describe Almaty as JSON."}]
    prompt = encode_prompts(tok, [render_chat(tok, conv, tools=tools())], add_bos=False)[0]
    stop = stop_ids_for(tok, SamplingParams())[-1]
    grammars = {"schema": schema_regex(SCHEMA), "tools": tool_call_regex(tools(), tokenizer=tok)}
    builds = {}
    for key, regex in grammars.items():
        for cache in (_vocabulary, _index, _distances):
            cache.cache_clear()
        t0 = time.perf_counter()
        _distances(tok, stop, regex)  # the automaton and each state's shortest way to a complete text
        builds[key] = time.perf_counter() - t0
    free, _ = decode_ms(model, tok, prompt, args.tokens)
    out = {"model": name, "vocab": len(tok), "free_ms": free, "build_s": builds}
    for key, regex in grammars.items():
        total, grammar = decode_ms(model, tok, prompt, args.tokens, Rebuildable(tok, regex, stop, 1))
        out[key] = {"ms": total, "grammar_ms": grammar}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", default="runs/tiny/sft/final", help="the tiny chat model (make demo)")
    ap.add_argument("--smollm2-dir", default=None, help="converted SmolLM2 folder (benchmarks/_smollm2.py)")
    ap.add_argument("--tokens", type=int, default=96, help="max new tokens per reply")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    models = {}
    if (Path(args.tiny) / "config.json").is_file() or (Path(args.tiny) / "qazlm_model.json").is_file():
        models["tiny"] = Path(args.tiny)
    if args.smollm2_dir:
        from _smollm2 import ensure_smollm2

        models["smollm2"] = ensure_smollm2(args.smollm2_dir)
    rows = [bench(name, path, args) for name, path in models.items()]
    print("\n| model | vocab | free decoding ms/step | JSON schema: ms/step (grammar) | tool call: ms/step (grammar) "
          "| grammar build: schema / tools |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{r[k]['ms']:.2f} ({r[k]['grammar_ms']:.2f} ms, {100 * r[k]['grammar_ms'] / r['free_ms']:.0f}%)"
                 for k in ("schema", "tools")]
        print(f"| {r['model']} | {r['vocab']:,} | {r['free_ms']:.2f} | {cells[0]} | {cells[1]} | "
              f"{r['build_s']['schema']:.2f} s / {r['build_s']['tools']:.2f} s |")
    print(json.dumps({"bench": "constrained", "models": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
