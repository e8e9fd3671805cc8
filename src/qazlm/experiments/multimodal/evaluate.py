"""Held-out evaluation of a multimodal model, beside chance and the text-only model, per language.

Images: exact match on colour / shape / count / side, chrF of captions, character error rate (CER) of reading
printed words never seen in training. Speech: spoken-command accuracy in voices never heard, CER of
transcribing words never heard, exact numbers. Baselines on the same questions: chance (1/8 colours, 1/5
shapes, 1/4 counts, 1/2 sides, 1/10 commands, 1/100 numbers), the text-only parent model answering the
question alone, and the trained model given a blank picture or silence ("blind": what the question alone
lets it guess). Report: report.json, report.md, scores.png, examples.png.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qazlm.eval.chat import chrf, exact_match
from qazlm.experiments.multimodal.images import LANGS, unspell
from qazlm.experiments.multimodal.model import last_hidden
from qazlm.experiments.multimodal.train import Prompts, image_processor, read_speech

CHANCE = {"colour": 1 / 8, "shape": 1 / 5, "count": 1 / 4, "side": 1 / 2, "command": 1 / 10, "number": 1 / 100,
          "caption": 0.0, "read": 0.0, "word": 0.0}
TARGETS = {"image shapes (colour/shape/count) exact": (">=", 0.90), "reading CER": ("<=", 0.10),
           "spoken command accuracy (each language)": (">=", 0.90)}


@torch.no_grad()
def greedy(model, prompts: list[list[int]], pixel_values=None, mel=None, max_new_tokens: int = 24) -> list[str]:
    """Greedy replies to prompts of equal length (one batch), stopping at <|im_end|> / <|endoftext|>.
    Short answers: each step runs the whole sequence again (no KV cache; the core decoder takes token ids)."""
    tok = model.tokenizer
    stops = {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id}
    ids = torch.tensor(prompts)
    x = model.embed(ids, pixel_values, mel)
    out = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(max_new_tokens):
        h = last_hidden(model.lm, x)[:, -1]
        nxt = F.linear(h, model.lm.output_weight()).argmax(-1)
        for row, t in enumerate(nxt.tolist()):
            if not done[row]:
                if t in stops:
                    done[row] = True
                else:
                    out[row].append(t)
        if bool(done.all()):
            break
        x = torch.cat([x, model.lm.embed_tokens(nxt).unsqueeze(1)], dim=1)
    return [tok.decode(o, skip_special_tokens=True).strip() for o in out]


def cer(hypothesis: str, reference: str) -> float:
    import jiwer

    return float(jiwer.cer(reference, hypothesis)) if reference else float(bool(hypothesis))


# ------------------------------------------------------------------------------------------ items
def image_items(n: int, seed: int, size: int, split: str = "heldout") -> list[dict]:
    from qazlm.experiments.multimodal.images import make_items

    return [{"modality": "image", "lang": it.lang, "task": it.task, "question": it.question, "answer": it.answer,
             "image": it.image} for it in make_items(n, split, seed=seed + 1000, size=size)]


def speech_items(folder: str | Path, limit: int) -> list[dict]:
    rows, mel = read_speech(folder, "heldout")
    return [{"modality": "audio", **r, "mel": mel[k]} for k, r in enumerate(rows[:limit])]


def answer_items(model, items: list[dict], mode: str, batch: int = 48, max_new_tokens: int = 24) -> list[str]:
    """Replies to every item; mode "model" (with its input), "blind" (blank picture / silence) or "text"
    (no placeholders at all: what a text-only model sees)."""
    prompts = Prompts(model.tokenizer, model.image_tokens, model.audio_tokens)
    groups = defaultdict(list)
    for k, it in enumerate(items):
        groups[(it["modality"], it["question"])].append(k)
    replies = [""] * len(items)
    processor = image_processor(model.vision.config.image_size) if model.vision is not None else None
    for (modality, question), ks in groups.items():
        shown = "none" if mode == "text" else modality
        for i in range(0, len(ks), batch):
            part = ks[i:i + batch]
            kw = {}
            if shown == "image":
                imgs = [items[k]["image"] for k in part]
                if mode == "blind":
                    imgs = [im.point(lambda _: 255) for im in imgs]
                kw["pixel_values"] = processor(imgs, return_tensors="pt")["pixel_values"]
            elif shown == "audio":
                mel = np.stack([items[k]["mel"] for k in part]).astype(np.float32)
                if mode == "blind":
                    mel = np.full_like(mel, mel.min())
                kw["mel"] = torch.from_numpy(mel)
            outs = greedy(model, [prompts.prompt(shown, question)] * len(part), max_new_tokens=max_new_tokens, **kw)
            for k, o in zip(part, outs):
                replies[k] = o
    return replies


# ------------------------------------------------------------------------------------------ scoring
def score(items: list[dict], replies: list[str]) -> dict:
    """{task: {lang: {"n", "exact", ("cer" | "chrf")}}}."""
    by = defaultdict(lambda: defaultdict(list))
    for it, r in zip(items, replies):
        by[it["task"]][it["lang"]].append((r, it["answer"]))
    out = {}
    for task, langs in by.items():
        out[task] = {}
        for lang, pairs in langs.items():
            row = {"n": len(pairs), "exact": sum(exact_match(r, a) for r, a in pairs) / len(pairs)}
            if task in ("read", "word"):   # a reading answer spells the word: its letters are compared
                norm = unspell if task == "read" else str
                row["cer"] = sum(cer(norm(r.casefold()), norm(a.casefold())) for r, a in pairs) / len(pairs)
            if task == "caption":
                row["chrf"] = chrf([r for r, _ in pairs], [a for _, a in pairs])
            out[task][lang] = row
    return out


def overall(scores: dict, tasks, key: str = "exact") -> float | None:
    vals = [(row[key], row["n"]) for t in tasks for row in scores.get(t, {}).values() if key in row]
    n = sum(w for _, w in vals)
    return sum(v * w for v, w in vals) / n if n else None


def targets(scores: dict) -> dict:
    shapes = overall(scores, ("colour", "shape", "count"))
    reading = overall(scores, ("read",), "cer")
    commands = [row["exact"] for row in scores.get("command", {}).values()]
    got = {"image shapes (colour/shape/count) exact": shapes, "reading CER": reading,
           "spoken command accuracy (each language)": min(commands) if commands else None}
    return {name: {"value": v, "target": TARGETS[name][1], "met": None if v is None else
                   (v >= TARGETS[name][1] if TARGETS[name][0] == ">=" else v <= TARGETS[name][1])}
            for name, v in got.items()}


def evaluate(model_dir: str | Path, out_dir: str | Path, speech_data: str | None = None, n_images: int = 540,
             n_speech: int = 450, seed: int = 0, log=print) -> dict:
    """Score the model, the blind model and the text-only parent on the held-out sets; write the report."""
    from qazlm.experiments.multimodal.model import MultimodalLM, load, load_lm
    from qazlm.io import write_json

    model = load(model_dir)
    meta = json.loads((Path(model_dir) / "multimodal.json").read_text(encoding="utf-8"))
    items = image_items(n_images, seed, model.vision.config.image_size) if model.vision is not None else []
    if model.audio is not None:
        if not speech_data:
            from qazlm.errors import QazlmError

            raise QazlmError("multimodal eval: the model hears audio; pass --speech-data DIR (written by `data`)")
        items += speech_items(speech_data, n_speech)
    parent = MultimodalLM(*load_lm(meta["lineage"]["parent"]))
    runs = {}
    for name, who, mode in (("model", model, "model"), ("blind", model, "blind"), ("text-only", parent, "text")):
        log(f"multimodal eval: {name} on {len(items)} held-out questions")
        replies = answer_items(who, items, mode)
        runs[name] = {"scores": score(items, replies), "replies": replies}
    if model.vision is not None:   # fresh drawings of the training split: seen combinations and words
        seen = image_items(n_images // 2, seed + 1, model.vision.config.image_size, "train")
        runs["model, training distribution"] = {"scores": score(seen, answer_items(model, seen, "model"))}
    report = {"model_dir": str(model_dir), "parent": meta["lineage"]["parent"], "n": len(items),
              "chance": CHANCE, "targets": targets(runs["model"]["scores"]),
              **{name: r["scores"] for name, r in runs.items()},
              "in_distribution": runs.get("model, training distribution", {}).get("scores", {}),
              "encoder_probes": {r["stage"].removeprefix("encoder_"): r["heldout_accuracy"]
                                 for r in meta["lineage"]["metrics"] if "heldout_accuracy" in r},
              "examples": [{k: v for k, v in it.items() if k not in ("image", "mel")} | {"reply": r}
                           for it, r in list(zip(items, runs["model"]["replies"]))[::max(1, len(items) // 24)]]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    plot_scores(report, out / "scores.png")
    for it, reply in zip(items, runs["model"]["replies"]):
        it["reply"] = reply
    plot_examples([it for it in items if it["modality"] == "image"], out / "examples.png")
    return report


# ------------------------------------------------------------------------------------------ report
def _cell(row: dict | None, key: str) -> str:
    if not row or key not in row:
        return "—"
    return f"{row[key]:.1f}" if key == "chrf" else f"{100 * row[key]:.1f}%"


def markdown(report: dict) -> str:
    lines = ["# Multimodal experiment: held-out results", "",
             f"Model `{report['model_dir']}` (text-only parent `{report['parent']}`), "
             f"{report['n']} held-out questions.",
             "", "| target | value | goal | met |", "|---|---|---|---|"]
    for name, t in report["targets"].items():
        v = "—" if t["value"] is None else f"{100 * t['value']:.1f}%"
        lines.append(f"| {name} | {v} | {100 * t['target']:.0f}% | {t['met']} |")
    lines += ["", "| task | metric | lang | n | model | blind | text-only | chance |", "|---" * 8 + "|"]
    for task, langs in report["model"].items():
        for key in ("exact", "cer", "chrf"):
            for lang in LANGS:
                row = langs.get(lang)
                if not row or key not in row:
                    continue
                chance = f"{100 * CHANCE[task]:.0f}%" if key == "exact" else "—"
                lines.append(f"| {task} | {key} | {lang} | {row['n']} | {_cell(row, key)} | "
                             f"{_cell(report['blind'].get(task, {}).get(lang), key)} | "
                             f"{_cell(report['text-only'].get(task, {}).get(lang), key)} | {chance} |")
    if report.get("in_distribution"):
        seen = report["in_distribution"]
        lines += ["", "The same model on fresh drawings of the training split (seen colour x shape combinations, "
                  "seen words), all languages:", "", "| task | exact | CER |", "|---|---|---|"]
        for task in seen:
            c = overall(seen, (task,), "cer")
            cer_cell = "—" if c is None else f"{100 * c:.1f}%"
            lines.append(f"| {task} | {100 * overall(seen, (task,)):.1f}% | {cer_cell} |")
    if report.get("encoder_probes"):
        lines += ["", "Stage 0: the encoders' own label heads on held-out pictures and clips (what the encoder "
                  "can tell the language model; character slots counted one by one):", "",
                  "| encoder | label | accuracy |", "|---|---|---|"]
        for encoder, accs in report["encoder_probes"].items():
            lines += [f"| {encoder} | {label} | {100 * acc:.1f}% |" for label, acc in accs.items()]
    lines += ["", "Examples (model replies):", "", "| modality | lang | task | question | answer | reply |",
              "|---|---|---|---|---|---|"]
    for ex in report["examples"]:
        lines.append(f"| {ex['modality']} | {ex['lang']} | {ex['task']} | {ex['question']} | {ex['answer']} | "
                     f"{ex['reply'] or '(empty)'} |")
    return "\n".join(lines) + "\n"


def plot_scores(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qazlm.io import save_png

    tasks = [t for t in ("colour", "shape", "count", "side", "read", "command", "number", "word")
             if t in report["model"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks)), 3.6))
    width = 0.2
    for k, name in enumerate(("model", "blind", "text-only")):
        vals = [overall(report[name], (t,)) or 0 for t in tasks]
        ax.bar(np.arange(len(tasks)) + (k - 1.5) * width, vals, width, label=name)
    ax.bar(np.arange(len(tasks)) + 1.5 * width, [CHANCE[t] for t in tasks], width, label="chance", color="grey")
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set(ylabel="held-out exact match", ylim=(0, 1), title="multimodal experiment (all languages)")
    ax.legend(fontsize=8, ncol=4, loc="upper right")
    save_png(fig, path)


def example_picks(items: list[dict], n: int) -> list[dict]:
    """`n` items, every task in turn and the languages rotating (a stride through the held-out list, which
    cycles task and language in step, showed one task in one language)."""
    tasks = [t for t in ("read", "colour", "shape", "count", "side", "caption") if any(it["task"] == t for it in items)]
    pools = defaultdict(list)
    for it in items:
        pools[(it["task"], it["lang"])].append(it)
    picks = []
    for k in range(len(items)):
        pool = pools[(tasks[k % len(tasks)], LANGS[(k + k // len(tasks)) % 3])]
        if pool:
            picks.append(pool.pop(0))
        if len(picks) == n:
            break
    return picks


def plot_examples(items: list[dict], path: Path, n: int = 12) -> None:
    """A grid of held-out pictures with question, expected answer (✓) and the model's reply (→)."""
    if not items:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qazlm.io import save_png

    picks = example_picks(items, n)
    fig, axes = plt.subplots(2, (len(picks) + 1) // 2, figsize=(2.1 * ((len(picks) + 1) // 2), 5.2))
    for ax in axes.flat:
        ax.axis("off")
    for ax, it in zip(axes.flat, picks):
        reply = it.get("reply", "")
        ax.imshow(it["image"])
        ax.set_title(f"{it['question'][:28]}\n✓ {it['answer'][:22]}\n→ {reply[:22]}", fontsize=6.5)
    save_png(fig, path)
