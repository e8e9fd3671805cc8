"""`qazlm push DIR --repo OWNER/NAME`: upload a `qazlm package` folder to the Hugging Face Hub with
`huggingface_hub` (repo creation, private flag, branch, commit message); `--dry-run` lists what would go."""

from __future__ import annotations

import json
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.package.package import MANIFEST, MANIFEST_FORMAT


def read_manifest(folder: Path) -> dict:
    from qazlm.runs import is_locked

    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise QazlmError(f"{folder}: no {MANIFEST}; not a finished `qazlm package` folder (run qazlm package first)")
    if is_locked(folder):
        raise QazlmError(f"{folder}: `qazlm package` is still writing it; push when it has finished")
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if data.get("format") != MANIFEST_FORMAT:
        raise QazlmError(f"{manifest}: format {data.get('format')!r} is not {MANIFEST_FORMAT!r}; rebuild with qazlm package")
    for rel, info in data["files"].items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != info["bytes"]:
            raise QazlmError(f"{path}: missing or changed since `qazlm package` wrote it; rebuild the package")
    return data


def push(folder: str | Path, repo: str, *, private: bool = False, revision: str | None = None,
         message: str | None = None, dry_run: bool = False, log=print) -> list[str]:
    """Upload the manifest's files (never the lock or records) and return their names."""
    folder = Path(folder)
    files = sorted(read_manifest(folder)["files"])
    total = sum((folder / f).stat().st_size for f in files)
    if dry_run:
        for f in files:
            log(f"  {f}  ({(folder / f).stat().st_size / 2**20:.2f} MiB)")
        log(f"push --dry-run: would upload {len(files)} files, {total / 2**20:.1f} MiB to {repo}"
            f"{'@' + revision if revision else ''} ({'private' if private else 'public'}); nothing sent")
        return files
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo, branch=revision, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, revision=revision, allow_patterns=files,
                          commit_message=message or f"qazlm package: {len(files)} files")
    except Exception as e:  # network, auth, offline mode: one line, never a traceback
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise QazlmError(f"push {repo}: the Hub refused or could not be reached ({type(e).__name__}: {first}); "
                         "check the network, HF_HUB_OFFLINE, and your token (`hf auth login` or HF_TOKEN)") from None
    log(f"push: {len(files)} files, {total / 2**20:.1f} MiB -> https://huggingface.co/{repo}"
        f"{'/tree/' + revision if revision else ''}")
    return files
