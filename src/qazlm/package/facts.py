"""Everything the model card states, read from the run's artifacts and never typed by hand.

The model folder's `qazlm_lineage.json` chain (quantize -> sft -> ...) leads to the root model (our pretrained
folder or an imported Hugging Face one); the run folder around it (`<run>/pretrain/final`, or `--run`) holds
the tokenizer, data, pretraining, evaluation and chat-evaluation records. A record that is missing stays
missing: the card then says "not evaluated" / "not recorded" instead of a number.
"""

from __future__ import annotations

import json
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import read_jsonl

LINEAGE = "qazlm_lineage.json"


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def same_folder(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, TypeError):
        return False


def lineage_chain(model: Path) -> tuple[list[dict], Path]:
    """(lineage records newest first, each with its folder's path; the root model folder)."""
    chain, path, seen = [], Path(model), set()
    while (path / LINEAGE).is_file() and path.resolve() not in seen:
        seen.add(path.resolve())
        info = read_json(path / LINEAGE)
        parent = (info or {}).get("parent", {}).get("path")
        if not info or not parent:
            raise QazlmError(f"{path / LINEAGE}: unreadable or without a parent; the folder's lineage is broken")
        chain.append({**info, "folder": str(path)})
        path = Path(parent)
    return chain, path


def find_run(root: Path, given: str) -> Path | None:
    if given:
        run = Path(given)
        if not run.is_dir():
            raise QazlmError(f"--run {given}: no such folder; give the run folder that holds eval/, pretrain/, ...")
        return run
    return root.parent.parent if root.parent.name == "pretrain" else None


def count_params(folder: Path) -> int | None:
    """Parameters stored in a plain safetensors folder (a tied embedding is stored, and counted, once)."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                total += n
    return total


def model_entry(report: dict | None, folder, key: str = "path") -> dict | None:
    """The report's entry for `folder` (reports list every model they scored with its path under `key`)."""
    for m in (report or {}).get("models", []):
        if same_folder(m.get(key), folder):
            return m
    return None


def nearest_entry(report: dict | None, folders: list, key: str = "path") -> dict | None:
    """The entry of the first of `folders` (the model, then its parents) that the report scored: a quantized model
    is not evaluated itself, its parent is; a DPO model's card must not show its SFT parent's figures when the
    report has its own."""
    return next((m for folder in folders if folder and (m := model_entry(report, folder, key))), None)


def root_facts(root: Path) -> dict:
    meta = read_json(root / "qazlm_model.json")
    if meta is not None:
        return {"from_scratch": True, "folder": str(root), "step": meta.get("step"), "tokens": meta.get("tokens"),
                "config": meta.get("config", {}), "params": count_params(root)}
    config = read_json(root / "config.json") or {}
    name = str(config.get("_name_or_path") or "")
    hub_id = name if name.count("/") == 1 and not name.startswith(("/", ".")) else None
    return {"from_scratch": False, "folder": str(root), "hub_id": hub_id, "params": count_params(root),
            "architectures": config.get("architectures", [])}


def data_facts(run: Path | None) -> dict | None:
    from qazlm.paths import SAMPLE_LICENCES

    summary = read_json(run / "data" / "report" / "summary.json") if run else None
    if summary is None:
        return None
    sources = [{"source": m.get("source"), "lang": m.get("lang"), "train_tokens": m.get("train_tokens"),
                "licence": SAMPLE_LICENCES.get(m.get("source"), "see the source's own licence")}
               for m in summary.get("mixture", [])]
    return {"train_tokens": summary.get("train", {}).get("tokens"), "languages": summary.get("languages", {}),
            "sources": sources, "documents_in": summary.get("documents_in"),
            "documents_kept": summary.get("documents_kept")}


def tool_eval_entry(run: Path | None, folders: list) -> dict | None:
    """The function-calling scores of the first of `folders` (the model, then its parents) that the run's
    tool_eval/tools_report.json scored, with its path (None if absent)."""
    report = read_json(run / "tool_eval" / "tools_report.json") if run else None
    m = nearest_entry(report, folders)
    if m is None:
        return None
    return {"path": m.get("path"), "scores": m.get("scores"), "skipped": m.get("skipped"),
            "answer_fidelity": (m.get("answer_fidelity") or {}).get("all")}


def safety_entry(run: Path | None, folders: list) -> dict | None:
    """The safety figures of the first of `folders` (the model, then its parents) that the run's
    safety_eval/safety_report.json scored: a quantized model is not evaluated itself, its parent is."""
    report = read_json(run / "safety_eval" / "safety_report.json") if run else None
    m = nearest_entry(report, folders, key="model")
    if m is None:
        return None
    return {"model": m.get("model"), "safe_rate": m.get("safe_rate"), "over_refusal": m.get("over_refusal"),
            "judge_safe_rate": m.get("judge_safe_rate"), "classifier": (report or {}).get("classifier")}


def pretrain_compute(run: Path | None) -> dict | None:
    """Device, processes and training time of pretraining, from its metrics.jsonl: the time is the sum over the
    logged windows of tokens / tokens per second (training steps only; evaluation pauses are not in it)."""
    rows = read_jsonl(run / "pretrain" / "metrics.jsonl") if run else []
    head = next((r for r in rows if "world_size" in r), None)
    if head is None:
        return None
    seconds, tokens = 0.0, 0
    for r in rows:
        if r.get("tokens_per_s") and isinstance(r.get("tokens"), int | float):
            seconds += max(r["tokens"] - tokens, 0) / r["tokens_per_s"]
            tokens = r["tokens"]
    return {"device": head.get("device"), "precision": head.get("precision"), "world_size": head.get("world_size"),
            "train_s": seconds or None}


def stage_compute(stage: dict | None, report_name: str) -> dict | None:
    """Device and wall time of a post-training stage, from its metrics.jsonl header and its summary or report."""
    if not stage:
        return None
    folder = Path(stage["folder"]).parent
    head = next(iter(read_jsonl(folder / "metrics.jsonl")), {})
    report = read_json(folder / report_name) or {}
    return {"device": head.get("device"), "wall_s": (stage.get("summary") or {}).get("wall_s") or report.get("wall_s")}


def dpo_facts(dpo: dict | None) -> dict | None:
    """What the card says of a DPO stage: its config, report (held-out reward figures, win rates) and the
    preference data's card (pairs, sources, licences)."""
    if not dpo:
        return None
    report = read_json(Path(dpo["folder"]).parent / "dpo_report.json") or dpo.get("report") or {}
    data = dpo.get("data") if isinstance(dpo.get("data"), str) else None
    return {"config": dpo.get("config") or {}, "report": report,
            "data_card": read_json(Path(data) / "card.json") if data else None}


def collect(model: Path, run_arg: str = "") -> dict:
    """The facts of `model` and its run, as plain JSON (written to qazlm_package.json beside the card)."""
    from qazlm.infer.loading import model_kind

    kind = model_kind(model)
    chain, root = lineage_chain(model)
    run, root_info = find_run(root, run_arg), root_facts(root)
    stages = {c.get("stage"): c for c in chain}
    sft, dpo, quant = stages.get("sft"), stages.get("dpo"), stages.get("quantize")
    chat_report = read_json(run / "chat_eval" / "chat_report.json") if run else None
    lineage = [model] + [c["parent"].get("path") for c in chain]
    eval_report = read_json(run / "eval" / "report.json") if run else None
    card = read_json(Path(sft["data"]["path"]) / "card.json") if sft and sft.get("data", {}).get("path") else None
    return {
        "model": str(model), "kind": kind, "run": str(run) if run else None, "root": root_info,
        "chain": [{"stage": c.get("stage"), "folder": c["folder"], "parent": c["parent"].get("path"),
                   "parent_fingerprint": c["parent"].get("fingerprint"),
                   "merged_with": c.get("models", [])[1:]} for c in chain],   # qazlm merge: the other inputs
        "tokenizer": read_json(run / "tokenizer" / "training_info.json") if run else None,
        "data": data_facts(run),
        "pretrain_config": (read_json(run / "pretrain" / "qazlm_stage.json") or {}).get("config") if run else None,
        "sft": {"config": sft.get("config"), "summary": sft.get("summary"), "data_card": card} if sft else None,
        "dpo": dpo_facts(dpo),
        "compute": {"pretrain": pretrain_compute(run) if root_info.get("from_scratch") else None,
                    "sft": stage_compute(sft, "summary.json"), "dpo": stage_compute(dpo, "dpo_report.json")},
        "quantize": (read_json(Path(quant["folder"]).parent / "quantize_report.json") or quant.get("report"))
        if quant else None,
        "eval": model_entry(eval_report, root),
        "tool_eval": tool_eval_entry(run, lineage),
        "safety_eval": safety_entry(run, lineage),
        "chat_eval": {"chat": nearest_entry(chat_report, lineage),
                      "base": model_entry(chat_report, root) if chat_report else None,
                      "settings": (chat_report or {}).get("settings")},
        "plots": plots(run),
    }


def plots(run: Path | None) -> dict[str, str]:
    """PNG figures of the run worth showing on the card: {name in the package's images/: path}."""
    if run is None:
        return {}
    wanted = {"pretrain_loss.png": run / "pretrain" / "plots" / "loss.png",
              "pretrain_val_bpb.png": run / "pretrain" / "plots" / "val_bpb.png",
              "eval_bpb.png": run / "eval" / "bpb.png", "eval_tasks.png": run / "eval" / "tasks.png",
              "chat_eval.png": run / "chat_eval" / "chat_eval.png"}
    return {name: str(p) for name, p in wanted.items() if p.is_file()}
