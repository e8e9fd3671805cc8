"""`qazlm package MODEL -o DIR`: a folder ready for the Hugging Face Hub — the weights (safetensors, plus any
GGUF files), config, tokenizer with its chat template, generation config, lineage, the run's plots and a
model card generated from the run's records (`qazlm.package.facts`, `qazlm.package.card`).

Each file is copied under a temporary name and renamed into place; `qazlm_package.json` (the manifest: every
file with its size and sha256, and the facts behind the card) is written last, so `qazlm push` only uploads a
complete package, and files of an earlier package that the new one lacks are removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.package.config import PackageConfig

STAGE = "package"
MANIFEST = "qazlm_package.json"
MANIFEST_FORMAT = "qazlm-package-v1"
MARKER = ".qazlm-package"          # written first: the folder is a (maybe unfinished) package, safe to rebuild
NOT_PUBLISHED = (".qazlm.lock", "qazlm_stage.json", MANIFEST, MARKER)   # bookkeeping, never uploaded


def check_gguf(paths: list[str]) -> None:
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise QazlmError(f"--gguf {p}: file not found")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise QazlmError(f"--gguf {p}: not a GGUF file (no GGUF magic); give a file `qazlm export gguf` wrote")


def check_out(out: Path, model: Path) -> None:
    from qazlm.package.facts import same_folder

    if same_folder(out, model) or model.resolve() in out.resolve().parents:
        raise QazlmError(f"-o {out}: is the model folder or inside it; choose a separate package folder")
    if out.exists() and not out.is_dir():
        raise QazlmError(f"{out}: exists and is not a folder; choose another -o")
    leftovers = [p for p in out.iterdir() if p.name not in NOT_PUBLISHED] if out.is_dir() else []
    if leftovers and not ((out / MANIFEST).is_file() or (out / MARKER).is_file()):
        raise QazlmError(f"{out}: folder holds other files ({leftovers[0].name}, ...) and is not a qazlm package; "
                         "choose a new or empty -o folder")


def place(src: Path, out: Path, name: str) -> None:
    """Copy `src` to `out/name` through a temp file and a rename (a kill never leaves half a file there)."""
    from qazlm.io import current_umask

    dest = out / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".qazlm-tmp-", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_files(model: Path, kind: str, scratch: Path) -> dict[str, Path]:
    """name -> file of the transformers folder to ship (our folders are exported first)."""
    from qazlm.model.hf import export_hf

    src = model if kind == "hf" else export_hf(model, scratch / "hf")
    files = {p.name: p for p in sorted(src.iterdir()) if p.is_file() and not p.name.startswith(".")}
    if not any(n.endswith(".safetensors") for n in files):
        raise QazlmError(f"{model}: no .safetensors weights; package ships safetensors only (re-save the model)")
    return files


def run_package(cfg: PackageConfig, force: bool = False, log=print) -> dict:
    from qazlm.infer.loading import load_tokenizer, model_kind
    from qazlm.io import clean_temp
    from qazlm.package.facts import collect, read_json
    from qazlm.runs import output_lock, read_record, write_record

    model, out = Path(cfg.model), Path(cfg.out_dir)
    kind = model_kind(model)
    load_tokenizer(model)  # a package without a usable tokenizer is useless: say so now
    check_gguf(cfg.gguf)
    check_out(out, model)
    with output_lock(out, STAGE):  # creates OUT, or says in one line why it cannot
        clean_temp(out, recursive=True)
        facts = collect(model, cfg.run)
        facts["gguf"] = [Path(g).name for g in cfg.gguf]
        facts["gguf_report"] = read_json(Path(cfg.gguf[0]).parent / "gguf_report.json") if cfg.gguf else None
        wanted = {**json.loads(json.dumps(dataclasses.asdict(cfg))), "facts_sha256": hashlib.sha256(
            json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()}
        if read_record(out) == wanted and (out / MANIFEST).is_file() and not force:
            log(f"package: {out} is up to date (same model, records and settings); skipping (--force to redo)")
            return json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        (out / "qazlm_stage.json").unlink(missing_ok=True)
        (out / MARKER).touch()
        manifest = build(cfg, model, kind, out, facts)
        write_record(out, STAGE, wanted)
    size = sum(manifest["files"][n]["bytes"] for n in manifest["files"])
    log(f"package: {len(manifest['files'])} files, {size / 2**20:.1f} MiB -> {out} (card: {out / 'README.md'}; "
        f"{'evaluated' if facts.get('eval') or (facts.get('chat_eval') or {}).get('chat') else 'NOT evaluated'})")
    return manifest


def build(cfg: PackageConfig, model: Path, kind: str, out: Path, facts: dict) -> dict:
    from qazlm.io import atomic_write, write_json
    from qazlm.model.io import sha256_file
    from qazlm.package.card import render

    run = facts.get("run")
    name = cfg.repo_id.split("/")[-1] if cfg.repo_id else f"qazlm-{Path(run).name}" if run else out.resolve().name
    old = json.loads((out / MANIFEST).read_text(encoding="utf-8")) if (out / MANIFEST).is_file() else {}
    (out / MANIFEST).unlink(missing_ok=True)  # from here until the new one, the folder is not a package
    with tempfile.TemporaryDirectory(dir=out, prefix=".qazlm-tmp-") as scratch:
        files = model_files(model, kind, Path(scratch))
        files.update({Path(g).name: Path(g) for g in cfg.gguf})
        images = {f"images/{name}": Path(p) for name, p in facts["plots"].items()}
        files.update(images)
        files.pop("README.md", None)
        for rel, src in files.items():
            place(src, out, rel)
    with atomic_write(out / "README.md") as f:
        f.write(render(facts, cfg.license, name, cfg.repo_id, list(images)))
    shipped = [*files, "README.md"]
    manifest = {"format": MANIFEST_FORMAT, "files": {rel: {"bytes": (out / rel).stat().st_size,
                                                           "sha256": sha256_file(out / rel)} for rel in shipped},
                "config": dataclasses.asdict(cfg), "facts": facts}
    write_json(out / MANIFEST, manifest)
    for rel in set(old.get("files", {})) - set(shipped):  # files of the earlier package this one does not ship
        (out / rel).unlink(missing_ok=True)
    return manifest
