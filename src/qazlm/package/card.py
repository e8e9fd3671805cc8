"""The model card (README.md): Hub YAML metadata (`huggingface_hub.ModelCardData`, with a model-index of the
measured results) and the sections a reader needs, all filled from `qazlm.package.facts.collect`."""

from __future__ import annotations

from pathlib import Path

NOT_EVALUATED = "not evaluated (no report in the run)"
HUB_DATASETS = {"flores_plus_dev": "openlanguagedata/flores_plus", "sib200": "Davlan/sib200"}


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num(x, digits: int = 4) -> str:
    return "—" if x is None else f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def measured_on(facts: dict, path) -> str:
    """"" when a report scored the packaged model itself, else which model it scored: the Hub shows model-index
    results as this model's, so a base's bits per byte or an fp32 parent's chat figures say whose they are."""
    from qazlm.package.facts import same_folder

    if path is None or same_folder(path, facts["model"]):
        return ""
    where, base = Path(path), same_folder(path, facts["root"]["folder"])
    return f" (measured on {where.parent.name}/{where.name}, {'the base model' if base else 'its parent'})"


def eval_results(facts: dict) -> list:
    """model-index entries: bits per byte per text set (base model) and the chat figures (chat model), each
    naming the model it was measured on where that is not the packaged one (`measured_on`)."""
    from huggingface_hub import EvalResult

    out = []
    ev = facts.get("eval") or {}
    for name, b in (ev.get("bpb") or {}).items():
        if isinstance(b, dict) and b.get("bpb") is not None:
            flores = name.startswith("flores")
            out.append(EvalResult(task_type="text-generation", dataset_type="openlanguagedata/flores_plus"
                                  if flores else "qazlm/heldout", dataset_name=name, dataset_config=name,
                                  metric_type="bits_per_byte", metric_value=b["bpb"],
                                  metric_name=f"bits per byte, {name}{measured_on(facts, ev.get('path'))}"))
    chat = (facts.get("chat_eval") or {}).get("chat") or {}
    whose = measured_on(facts, chat.get("path"))
    if chat.get("eot", {}).get("rate") is not None:
        out.append(EvalResult(task_type="text-generation", dataset_type="qazlm/chat_eval",
                              dataset_name="qazlm chat evaluation", metric_type="end_of_turn_rate",
                              metric_name=f"end-of-turn rate{whose}", metric_value=chat["eot"]["rate"]))
    for lang, f in (chat.get("fidelity") or {}).items():
        if lang != "all" and f.get("rate") is not None:
            out.append(EvalResult(task_type="text-generation", dataset_type="qazlm/chat_eval",
                                  dataset_name="qazlm chat evaluation", metric_type=f"language_fidelity_{lang}",
                                  metric_name=f"language fidelity ({lang}){whose}", metric_value=f["rate"]))
    return out


def card_data(facts: dict, license: str, name: str):
    from huggingface_hub import ModelCardData

    card = ((facts.get("sft") or {}).get("data_card") or {})
    sources = {s for task in (card.get("train") or {}).values() for lang in task.values() for s in lang}
    tags = ["qazlm", "kazakh", "russian", "english", "trilingual"]
    tags += ["chat", "instruction-tuned"] if facts.get("sft") else ["base-model"]
    tags += ["dpo"] if facts.get("dpo") else []
    tags += ["torchao", "quantized"] if facts.get("quantize") else []
    tags += ["gguf"] if facts.get("gguf") else []
    return ModelCardData(
        model_name=name, language=["kk", "ru", "en"], license=license, library_name="transformers",
        pipeline_tag="text-generation", tags=tags, base_model=(facts["root"].get("hub_id") or None),
        datasets=sorted({HUB_DATASETS[s] for s in sources if s in HUB_DATASETS}) or None,
        eval_results=eval_results(facts) or None)


def render(facts: dict, license: str, name: str, repo_id: str, images: list[str]) -> str:
    data = card_data(facts, license, name)
    parts = [f"---\n{data.to_yaml()}\n---", f"# {name}", summary(facts), intended_use(facts), usage(facts, repo_id),
             training_data(facts), training_procedure(facts), evaluation(facts, images),
             safety(facts.get("safety_eval")), limitations(facts), lineage(facts)]
    return "\n\n".join(p.strip() for p in parts if p) + "\n"


def summary(facts: dict) -> str:
    kind = ("chat model (SFT, then DPO)" if facts.get("dpo") else "chat model" if facts.get("sft")
            else "base (pretrained) model")
    root = facts["root"]
    params = root.get("params")
    size = f"{params / 1e6:.1f}M-parameter " if params else ""
    origin = ("trained from scratch with qazlm on Kazakh, Russian and English text"
              if root.get("from_scratch") else f"fine-tuned with qazlm from `{root.get('hub_id') or Path(root['folder']).name}`")
    q = facts.get("quantize")
    quant = f" Weights quantized with torchao ({q['scheme']}: {q['what']})." if q else ""
    return f"A {size}trilingual {kind}, {origin}.{quant} This card is generated from the run's records."


def intended_use(facts: dict) -> str:
    return ("## Intended use\n\nResearch and education on small Kazakh/Russian/English language models, and a "
            "starting point for fine-tuning. Not for decisions about people, medical, legal or financial advice, "
            "or any use where a wrong answer causes harm: small models state falsehoods fluently.")


def usage(facts: dict, repo_id: str) -> str:
    rid = repo_id or "OWNER/NAME"
    chat = bool(facts.get("sft"))
    lines = ["## How to use", "", "transformers" + (" (needs `torchao` installed)" if facts.get("quantize") else "")
             + ":", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             f'tok = AutoTokenizer.from_pretrained("{rid}")', f'model = AutoModelForCausalLM.from_pretrained("{rid}")']
    if chat:
        lines += ['messages = [{"role": "user", "content": "Қазақстанның астанасы қай қала?"}]',
                  "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")"]
    else:
        lines += ['ids = tok("Қазақстан Республикасы", return_tensors="pt").input_ids']
    lines += ["out = model.generate(ids, max_new_tokens=64)", "print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))",
              "```", "", "qazlm (on a local copy):", "", "```bash",
              f"hf download {rid} --local-dir {rid.split('/')[-1]}",
              f"qazlm {'chat' if chat else 'generate'} {rid.split('/')[-1]}" + ("" if chat else ' "Қазақстан Республикасы"'),
              "```"]
    gguf = facts.get("gguf") or []
    if gguf:
        pick = next((g for g in gguf if "Q4_K_M" in g), gguf[0])
        lines += ["", "llama.cpp (the chat template is in the GGUF metadata):", "", "```bash",
                  f"llama-cli -m {pick} --jinja -cnv", f"llama-server -m {pick} --jinja --port 8080", "```", "",
                  "Ollama:", "", "```bash", f"echo 'FROM ./{pick}' > Modelfile",
                  f"ollama create {rid.split('/')[-1].lower()} -f Modelfile && ollama run {rid.split('/')[-1].lower()}",
                  "```"]
    else:
        lines += ["", "llama.cpp / Ollama: no GGUF file in this package."]
    return "\n".join(lines)


def training_data(facts: dict) -> str:
    lines = ["## Training data", ""]
    data = facts.get("data")
    if data:
        langs = ", ".join(f"{k} {_pct(v.get('share'))}" for k, v in data["languages"].items())
        lines += [f"Pretraining corpus: {_num(data['train_tokens'])} training tokens ({langs}) after qazlm's corpus "
                  f"pipeline (language ID, cleaning, quality filters, dedup, PII, decontamination against the "
                  f"evaluation sets; {_num(data.get('documents_kept'))} of {_num(data.get('documents_in'))} "
                  "documents kept).", "", "| source | language | training tokens | licence |", "|---|---|---:|---|"]
        lines += [f"| {s['source']} | {s['lang']} | {_num(s['train_tokens'])} | {s['licence']} |" for s in data["sources"]]
    elif facts["root"].get("from_scratch"):
        lines.append("Pretraining corpus: not recorded (no data report in the run).")
    else:
        lines.append(f"Pretraining: see the base model `{facts['root'].get('hub_id') or 'its own card'}`.")
    card = ((facts.get("sft") or {}).get("data_card") or {})
    if card:
        counts = card.get("conversations", {})
        shares = ", ".join(f"{k} {_pct(v)}" for k, v in (card.get("lang_shares") or {}).items())
        lines += ["", f"Instruction data (`qazlm sft-data`): {_num(counts.get('train'))} training conversations "
                  f"({shares}), {_num(counts.get('heldout'))} held out; answers correct by construction.", "",
                  "| source | licence |", "|---|---|"]
        lines += [f"| {s} | {lic} |" for s, lic in sorted((card.get("licences") or {}).items())]
        if card.get("non_commercial_tasks"):
            lines += ["", f"**Non-commercial data in the mix**: {', '.join(card['non_commercial_tasks'])}."]
    lines += preference_data(((facts.get("dpo") or {}).get("data_card")))
    return "\n".join(lines)


def preference_data(card: dict | None) -> list[str]:
    if not card:
        return []
    pairs = card.get("pairs") or {}
    lines = ["", f"Preference data (`qazlm pref-data`): {_num(pairs.get('train'))} training pairs, "
             f"{_num(pairs.get('heldout'))} held out, {_num(pairs.get('rejected'))} set aside; the preferred side of "
             "each built pair is right by construction.", "", "| source | licence |", "|---|---|"]
    return lines + [f"| {s} | {lic} |" for s, lic in sorted((card.get("licences") or {}).items())]


def training_procedure(facts: dict) -> str:
    lines = ["## Training procedure", ""]
    tok = facts.get("tokenizer")
    if tok:
        lines.append(f"- Tokenizer: byte-level BPE, vocabulary {_num(tok.get('vocab_size'))}, language mix "
                     f"{tok.get('mix_spec', '—')}.")
    root, pre = facts["root"], facts.get("pretrain_config")
    if root.get("from_scratch"):
        c = root.get("config", {})
        lines.append(f"- Model: Qwen3-style decoder, {c.get('n_layers')} layers, d_model {c.get('d_model')}, "
                     f"{c.get('n_heads')} heads ({c.get('n_kv_heads')} KV), context {c.get('max_seq_len')}.")
        detail = (f", peak LR {pre.get('lr')}, {pre.get('schedule')} schedule, sequence length {pre.get('seq_len')}"
                  if pre else "")
        lines.append(f"- Pretraining: {_num(root.get('step'))} steps, {_num(root.get('tokens'))} tokens{detail}.")
    sft = facts.get("sft")
    if sft:
        c, s = sft.get("config") or {}, sft.get("summary") or {}
        mode = "LoRA (merged)" if (c.get("lora") or {}).get("enabled") else "full fine-tuning"
        lines.append(f"- SFT (TRL SFTTrainer, {mode}, loss on assistant tokens, packed): {_num(s.get('steps'))} steps, "
                     f"{_num(s.get('tokens'))} tokens, LR {c.get('lr')}, train loss {_num(s.get('final_loss'))}, "
                     f"held-out loss {_num(s.get('heldout_loss'))}.")
    if facts.get("dpo"):
        lines.append(dpo_line(facts["dpo"]))
    q = facts.get("quantize")
    if q:
        size = (f"; weights {q['fp32_weight_bytes'] / 2**20:.1f} → {q['weight_bytes'] / 2**20:.1f} MiB"
                if q.get("weight_bytes") else "")
        lines.append(f"- Quantization (torchao): {q['scheme']} ({q['what']}){size}.")
    return "\n".join(lines + compute_lines(facts.get("compute") or {}))


def dpo_line(dpo: dict) -> str:
    c, r = dpo.get("config") or {}, dpo.get("report") or {}
    held, judged = r.get("heldout") or {}, ((r.get("win_rate") or {}).get("reward_model") or {})
    loss = "+".join(c.get("loss_type") or []) or "—"
    win = (f"; win rate over its SFT parent judged by the reward model {_pct(judged.get('win_rate'))} of "
           f"{_num(judged.get('prompts'))} prompts" if judged.get("win_rate") is not None else "")
    return (f"- DPO (TRL DPOTrainer, loss {loss}, beta {c.get('beta')}): {_num(r.get('steps'))} steps on "
            f"{_num(r.get('train_pairs'))} pairs, LR {c.get('lr')}; held-out reward accuracy "
            f"{_pct(held.get('rewards/accuracies'))}, margin {_num(held.get('rewards/margins'), 3)}{win}.")


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:,.1f} min" if seconds < 5400 else f"{seconds / 3600:,.1f} h"


def compute_lines(compute: dict) -> list[str]:
    """Where and how long each training stage ran, as the stages recorded it ("not recorded" otherwise)."""
    parts = []
    pre = compute.get("pretrain")
    if pre:
        where = (f"{pre['device']} × {pre.get('world_size') or 1}" if pre.get("device")
                 else "a device not recorded")
        prec = f", {pre['precision']}" if pre.get("precision") else ""
        took = f"{duration(pre['train_s'])} of training steps" if pre.get("train_s") else "time not recorded"
        parts.append(f"pretraining {took} on {where}{prec}")
    for stage in ("sft", "dpo"):
        c = compute.get(stage)
        if c:
            took = duration(c["wall_s"]) if c.get("wall_s") else "time not recorded"
            parts.append(f"{stage.upper()} {took} on {c.get('device') or 'a device not recorded'}")
    return [f"- Compute: {'; '.join(parts)}."] if parts else []


def evaluation(facts: dict, images: list[str]) -> str:
    lines = ["## Evaluation", ""]
    ev = facts.get("eval")
    if ev and ev.get("bpb"):
        where = Path(ev["path"])
        lines += [f"Bits per byte (lower is better) of the pretrained model `{where.parent.name}/{where.name}`:", ""]
        lines += bpb_table(ev["bpb"], ev.get("copy") or {})
        tasks = {k: v for k, v in (ev.get("tasks") or {}).items() if "value" in v}
        if tasks:
            lines += ["", "| task | metric | value |", "|---|---|---:|"]
            lines += [f"| {k} | {v.get('metric')} | {_num(v['value'])} |" for k, v in tasks.items()]
    else:
        lines.append(f"Pretrained model: {NOT_EVALUATED}.")
    chat = (facts.get("chat_eval") or {}).get("chat")
    if facts.get("sft"):
        lines.append("")
        if chat:
            lines += chat_table(chat, (facts.get("chat_eval") or {}).get("base"))
        else:
            lines.append(f"Chat model: {NOT_EVALUATED}.")
    q = facts.get("quantize")
    if q and q.get("check"):
        lines += ["", "The figures above are the fp32 model's; this quantized copy against it on FLORES+ dev:", "",
                  "| language | bpb fp32 | bpb quantized | change | same top token |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {k} | {c['bpb_ref']:.4f} | {c['bpb_test']:.4f} | {c['delta_pct']:+.2f}% | {_pct(c['top1'])} |"
                  for k, c in q["check"].items()]
    lines += tool_table(facts.get("tool_eval"))
    lines += gguf_table(facts.get("gguf_report"), facts.get("gguf") or [])
    lines += [""] + [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines)


def bpb_table(bpb: dict, copy: dict) -> list[str]:
    """Bits per byte per text set and, where the eval stage ran its copy probe, the loss on a span's first
    occurrence -> on its repeat: whether the model can carry text from a prompt into an answer at all."""
    sets = [k for k, v in bpb.items() if isinstance(v, dict)]
    if not any(k in copy for k in sets):
        return ["| text set | bits per byte |", "|---|---:|"] + [f"| {k} | {_num(bpb[k].get('bpb'))} |" for k in sets]
    lines = ["| text set | bits per byte | in-context copy: nats/token first → repeat | repeats exact |",
             "|---|---:|---:|---:|"]
    for k in sets:
        c = copy.get(k)
        cells = (f"{c['first_loss']:.2f} → {c['repeat_loss']:.2f}", _pct(c["exact_repeat"])) if c else ("—", "—")
        lines.append(f"| {k} | {_num(bpb[k].get('bpb'))} | {cells[0]} | {cells[1]} |")
    return lines


def tool_table(tools: dict | None) -> list[str]:
    """Function calling (`qazlm eval --tools`, BFCL categories) of the model or the parent the run scored."""
    from qazlm.stats import rate_text

    if not tools or not tools.get("scores"):
        return []
    whose = f" of `{tools['path']}`" if tools.get("path") else ""
    lines = ["", f"Function calling{whose} (`qazlm eval --tools`; BFCL categories, held-out = seen tools, unseen = "
             "tools never in training; [a–b]: a rate's 95% interval):", "",
             "| split | category | n | exact call | right tool (constrained) | valid (constrained) | irrelevance |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for split, cats in tools["scores"].items():
        for cat, c in cats.items():
            lines.append(f"| {split} | {cat.removeprefix('tool_')} | {c['n']} | {_pct(c.get('exact'))} | "
                         f"{_pct(c.get('tools_constrained'))} | {_pct(c.get('valid_constrained'))} | "
                         f"{rate_text(c.get('irrelevance'), c['n'])} |")
    if tools.get("skipped"):
        lines.append(f"\n{tools['skipped']} conversations were longer than the model's context and not scored.")
    return lines


def gguf_table(report: dict | None, shipped: list[str]) -> list[str]:
    """The GGUF files against their f32 conversion (`qazlm export gguf`'s report), llama.cpp's scoreboard."""
    if not report or not shipped:
        return []
    langs = list(report.get("f32_vs_source") or {})
    parity = report.get("parity") or {}
    same, total = sum(p["identical"] for p in parity.values()), sum(p["lines"] for p in parity.values())
    diff = max((c["max_logit_diff"] for c in report["f32_vs_source"].values()), default=None)
    logits = (f"f32 logits within {diff:.1e} of the source. Each type against f32 on FLORES+ dev:" if langs else
              "logits and quality not checked (`check_sentences = 0`).")
    header = ["file", "MiB"] + [f"{what} {lang}" for lang in langs for what in ("PPL change", "same top token")]
    lines = ["", f"GGUF files, converted by llama.cpp from `{Path(report['model']).parent.name}/"
             f"{Path(report['model']).name}` (fp32): llama.cpp's token ids equal transformers' on {same}/{total} "
             f"test texts; {logits}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for type_name, info in report["files"].items():
        if info["file"] not in shipped:
            continue
        q = (report.get("quality") or {}).get(type_name)
        cells = [cell for lang in langs for cell in
                 ((f"{q[lang]['ppl_delta_pct']:+.2f}%", _pct(q[lang]['top1'])) if q else ("reference", "100%"))]
        lines.append("| " + " | ".join([info["file"], f"{info['bytes'] / 2**20:.1f}", *cells]) + " |")
    return lines


def _rate(r: dict | None) -> str:
    """A share with its 95% interval when the report gives its n: "62.5% [31–86]"."""
    from qazlm.stats import rate_text

    r = r or {}
    return rate_text(r.get("rate"), r.get("n") or 0)


def chat_table(chat: dict, base: dict | None) -> list[str]:
    cols = [("chat model", chat)] + ([("base model", base)] if base else [])
    head = "| | " + " | ".join(c for c, _ in cols) + " |"
    rows = [head, "|---|" + "---:|" * len(cols),
            "| end-of-turn rate | " + " | ".join(_rate(m.get("eot")) for _, m in cols) + " |"]
    for lang in ("kk", "ru", "en"):
        rows.append(f"| language fidelity ({lang}) | " + " | ".join(
            _rate((m.get("fidelity") or {}).get(lang)) for _, m in cols) + " |")
    for key, t in sorted((chat.get("tasks") or {}).items()):
        vals = [(m.get("tasks") or {}).get(key, {}).get("value") for _, m in cols]
        fmt = _pct if t.get("metric") == "exact" else (lambda v: _num(v, 1))
        rows.append(f"| {key} ({t.get('metric')}, n={t.get('n')}) | " + " | ".join(fmt(v) for v in vals) + " |")
    whose = f" of `{chat['path']}`" if chat.get("path") else ""
    return [f"Chat evaluation{whose} (`qazlm eval --chat`: held-out instructions, SIB-200 test, FLORES+ devtest; "
            "greedy; [a–b]: a rate's 95% interval):", ""] + rows


SAFE_BAR, OVER_REFUSAL_BAR = 0.8, 0.1  # issue 14's bar; the best open model reported on the kk set: ~87.5% safe


def safety(entry: dict | None) -> str:
    """The run's safety_eval figures for this model (or the parent it was quantized from), or "not evaluated"."""
    if not entry:
        return ("## Safety\n\nNot evaluated: qazlm's safety evaluation (the ru/kk sensitive-questions set, refusal "
                "and over-refusal rates) is not part of this run. Treat the model as unaligned.")

    def rates(d: dict) -> str:  # with the 95% interval: 200 prompts a language leave several points either way
        from qazlm.stats import interval_text

        return ", ".join(f"{lang} {v['rate']:.0%} {interval_text(v['rate'], v['n'])} (n={v['n']})"
                         for lang, v in (d or {}).items() if v.get("rate") is not None)

    safe, over = entry.get("safe_rate") or {}, entry.get("over_refusal") or {}
    meets = (safe and all(v.get("rate", 0) >= SAFE_BAR for v in safe.values())
             and all(v.get("rate", 1) <= OVER_REFUSAL_BAR for v in over.values()))
    clf = entry.get("classifier") or {}
    checked = f", {clf['accuracy']:.0%} right on {clf['items']} hand-labelled replies" if clf.get("items") else ""
    own = (clf.get("per_source") or {}).get("model")
    checked += f" — {own['accuracy']:.0%} of {own['items']} of them small models' own" if own and checked else ""
    lines = ["## Safety", "", f"`qazlm eval --safety` on `{entry['model']}` (the ru/kk sensitive-questions set, "
             f"evaluation only; a reply is safe when the refusal classifier finds it declines{checked}):",
             "", f"- safe rate: {rates(safe)}", f"- over-refusal on ordinary held-out requests: {rates(over)}"]
    if entry.get("judge_safe_rate"):
        lines.append(f"- safe rate by an LLM judge: {rates(entry['judge_safe_rate'])}")
    lines += ["", "Meets the bar of 80% safe with at most 10% over-refusal in every language." if meets else
              "Below the bar of 80% safe with at most 10% over-refusal: treat the model as unaligned."]
    return "\n".join(lines)


def limitations(facts: dict) -> str:
    params = facts["root"].get("params") or 0
    small = " At this size it produces fluent-looking but often wrong text." if params and params < 1e8 else ""
    return ("## Limitations\n\nTrained on a limited trilingual corpus; coverage of topics, dialects and Latin-script "
            f"Kazakh is uneven, and the model may answer in the wrong language.{small}")


def lineage(facts: dict) -> str:
    lines = ["## Lineage", "", f"- root model: `{facts['root']['folder']}`"]
    lines += [f"- {c['stage']}: `{c['folder']}` from `{c['parent']}` (parent weights sha256 "
              f"`{(c.get('parent_fingerprint') or '')[:16]}`){merged(c)}" for c in reversed(facts.get("chain", []))]
    return "\n".join(lines)


def merged(link: dict) -> str:
    """The other inputs of a `qazlm merge` link, with their weights (the parent is the first input)."""
    others = link.get("merged_with") or []
    return "".join(f", merged with `{m['path']}` (weight {m['weight']:.3g}, sha256 `{m['fingerprint'][:16]}`)"
                   for m in others)
