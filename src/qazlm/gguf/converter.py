"""Where llama.cpp's converter lives, how it is installed, and how qazlm calls it.

The installed llama-cpp-python wheel holds llama.cpp's library (tokenizer, quantizer, inference) but not its
Python converter; the same release's source archive ships it (`vendor/llama.cpp/convert_hf_to_gguf.py`,
`conversion/`, `gguf-py/`). Set-up (`make venv`, or `python -m qazlm.gguf.converter --install`) downloads
that archive from PyPI once and unpacks those files into the virtualenv, so converter and library are always
the same llama.cpp commit. Nothing is downloaded when qazlm runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from qazlm.errors import QazlmError

MEMBERS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")
ENV = "QAZLM_LLAMA_CPP_CONVERTER"


def llama_cpp_version() -> str:
    try:
        import llama_cpp
    except ImportError:
        raise QazlmError("llama-cpp-python is not installed; run `make venv` (it builds llama.cpp, ~11 min the "
                         "first time) or `pip install llama-cpp-python`") from None
    return llama_cpp.__version__


def converter_dir() -> Path:
    """The folder holding convert_hf_to_gguf.py: $QAZLM_LLAMA_CPP_CONVERTER, else the virtualenv's copy that
    matches the installed llama-cpp-python."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return Path(sys.prefix) / "share" / "qazlm" / f"llama.cpp-{llama_cpp_version()}"


def require_converter() -> Path:
    folder = converter_dir()
    if not (folder / "convert_hf_to_gguf.py").is_file():
        raise QazlmError(f"{folder}: llama.cpp's converter is not installed there; run `make venv` or "
                         f"`python -m qazlm.gguf.converter --install` (or point {ENV} at a llama.cpp checkout)")
    return folder


def install(force: bool = False) -> Path:
    """Unpack the converter of the installed llama-cpp-python release into the virtualenv (atomic)."""
    from qazlm.io import atomic_dir

    target = converter_dir()
    if (target / "convert_hf_to_gguf.py").is_file() and not force:
        return target
    version = llama_cpp_version()
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", scratch], check=True)
        archive = next(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar, atomic_dir(target) as tmp:
            prefix = f"{archive.name[:-len('.tar.gz')]}/vendor/llama.cpp/"
            wanted = [m for m in tar.getmembers() if m.name.startswith(prefix)
                      and m.name[len(prefix):].split("/")[0] in MEMBERS]
            for member in wanted:
                member.name = member.name[len(prefix):]
            tar.extractall(tmp, members=wanted, filter="data")
    return target


def run_converter(hf_dir: Path, outfile: Path, overrides: dict, outtype: str = "f32") -> None:
    """convert_hf_to_gguf.py HF_DIR --outfile OUTFILE --outtype OUTTYPE in a child process (qazlm.gguf.runner);
    a failure is one line: the converter's last error line."""
    cmd = [sys.executable, "-m", "qazlm.gguf.runner", str(require_converter()), json.dumps(overrides), "--",
           str(hf_dir), "--outfile", str(outfile), "--outtype", outtype]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln] or lines or ["no output"]
        if "pre-tokenizer was not recognized" in errors[-1]:
            raise QazlmError(f"{hf_dir}: llama.cpp does not know this tokenizer's pre-tokenizer (neither a "
                             "published one its converter recognises nor one of qazlm's split patterns); "
                             "GGUF token ids would differ, so nothing was written")
        raise QazlmError(f"{hf_dir}: llama.cpp's converter failed: {errors[-1].strip()[:300]}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m qazlm.gguf.converter",
                                description="Install or locate llama.cpp's convert_hf_to_gguf.py.",
                                epilog="example:\n  python -m qazlm.gguf.converter --install")
    p.add_argument("--install", action="store_true", help="download and unpack it when missing")
    p.add_argument("--force", action="store_true", help="with --install: unpack again")
    args = p.parse_args(argv)
    try:
        folder = install(args.force) if args.install else require_converter()
    except QazlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
