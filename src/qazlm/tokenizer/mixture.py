"""Language mixture by bytes: parse `kk=0.4,ru=0.3,en=0.3`, assign files to languages, stream a sample.

Budget rule (documented choice): count the normalized UTF-8 bytes per language in one streaming pass.
- `balance="upsample"` (default): no text is thrown away. The language with the most text relative to
  its share is used once; scarcer languages are repeated (line i is emitted floor((i+1)*r) - floor(i*r)
  times, r = budget/available) until they reach their share. BPE only sees pair counts, so repeating a
  language is the same as weighting it, and the abundant languages keep all their rare words.
- `balance="downsample"`: the scarcest language (relative to its share) is used once and abundant
  languages are thinned by the same even stride (r < 1), spread over all their files.
`max_bytes` caps the total. Nothing is held in RAM: the training iterator re-reads the files.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import expand_inputs, iter_lines
from qazlm.paths import LANGS

DEFAULT_MIX = "kk=0.35,ru=0.5,en=0.15"  # the sweep's recommendation (docs/tokenizer_sweep.md)


def parse_mix(spec: str | dict[str, float]) -> dict[str, float]:
    """`kk=0.4,ru=0.3,en=0.3` -> {"kk": 0.4, ...}; shares must be > 0 and sum to 1 (±0.01)."""
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in (p.strip() for p in str(spec).split(",")):
            if not part:
                continue
            if "=" not in part:
                raise QazlmError(f"--mix {spec!r}: expected lang=share pairs like kk=0.4,ru=0.3,en=0.3")
            lang, value = part.split("=", 1)
            items.append((lang.strip(), value.strip()))
    mix: dict[str, float] = {}
    for lang, value in items:
        try:
            share = float(value)
        except ValueError:
            raise QazlmError(f"--mix {spec!r}: share {value!r} of {lang!r} is not a number") from None
        if not lang or lang in mix:
            raise QazlmError(f"--mix {spec!r}: language {lang!r} is empty or repeated")
        if not (0 < share <= 1) or math.isnan(share):
            raise QazlmError(f"--mix {spec!r}: share of {lang!r} must be in (0, 1], got {share}")
        mix[lang] = share
    if not mix:
        raise QazlmError(f"--mix {spec!r}: no languages given; e.g. kk=0.4,ru=0.3,en=0.3")
    total = sum(mix.values())
    if abs(total - 1.0) > 0.01:
        raise QazlmError(f"--mix {spec!r}: shares sum to {total:.3g}, not 1; e.g. kk=0.4,ru=0.3,en=0.3")
    return {k: v / total for k, v in mix.items()}


def format_mix(mix: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in mix.items())


def _lang_of(path: Path) -> str | None:
    """Language from the nearest folder named kk/ru/en, else from a `kk.*` file name."""
    for part in reversed(path.parent.parts):
        if part in LANGS:
            return part
    stem = path.name.split(".")[0]
    return stem if stem in LANGS else None


def files_by_language(inputs: list[str]) -> dict[str, list[Path]]:
    """Inputs (`path` or `lang=path`; files or folders) -> {lang: files}. Unknown language is an error."""
    out: dict[str, list[Path]] = {}
    for item in inputs:
        item = str(item)
        forced = None
        if "=" in item and not Path(item).exists():
            forced, item = item.split("=", 1)
        root = Path(item)
        for f in expand_inputs([root]):
            lang = forced or _lang_of(f)
            if not lang:
                raise QazlmError(f"{f}: cannot tell its language; put it under a kk/ru/en folder or pass "
                                 f"lang=path (e.g. kk={f})")
            out.setdefault(lang, [])
            if f not in out[lang]:
                out[lang].append(f)
    if not out:
        raise QazlmError(f"{inputs}: no input text files")
    return out


def _normalizer():
    from qazlm.text.normalize import normalize_text

    return normalize_text


def iter_normalized(files: list[Path]) -> Iterator[str]:
    normalize = _normalizer()
    for f in files:
        for line in iter_lines(f):
            text = normalize(line)
            if text.strip():
                yield text


def count_bytes(files: list[Path]) -> tuple[int, int]:
    """(normalized UTF-8 bytes, lines) of a language's files: one streaming pass."""
    n_bytes = n_lines = 0
    for text in iter_normalized(files):
        n_bytes += len(text.encode("utf-8"))
        n_lines += 1
    return n_bytes, n_lines


@dataclass
class MixturePlan:
    """Which bytes of which language go into training."""

    mix: dict[str, float]
    files: dict[str, list[Path]]
    available: dict[str, int]            # normalized bytes per language
    budget: dict[str, int]               # bytes to use per language
    ratio: dict[str, float] = field(default_factory=dict)  # copies per line (<1: thinned, >1: repeated)
    lines: dict[str, int] = field(default_factory=dict)    # non-empty lines per language (when counted)

    def expected_lines(self) -> int | None:
        """Lines the training iterator will yield (for a progress bar with ETA), if known."""
        if set(self.lines) != set(self.mix):
            return None
        return int(sum(self.lines[k] * self.ratio[k] for k in self.mix))

    def as_json(self) -> dict:
        return {"mix": self.mix, "available_bytes": self.available, "budget_bytes": self.budget,
                "keep_ratio": self.ratio, "files": {k: [str(p) for p in v] for k, v in self.files.items()}}


def plan_mixture(inputs: list[str], mix: dict[str, float], max_bytes: int | None = None,
                 counts: dict[str, int] | None = None, balance: str = "upsample") -> MixturePlan:
    files = files_by_language(inputs)
    missing = [lang for lang in mix if lang not in files]
    if missing:
        raise QazlmError(f"{inputs}: no text for language(s) {missing} named in the mix "
                         f"(found {sorted(files)}); add a {missing[0]}/ folder or drop it from --mix")
    files = {lang: files[lang] for lang in mix}
    lines: dict[str, int] = {}
    if counts:
        available = dict(counts)
    else:
        available = {}
        for lang, fs in files.items():
            available[lang], lines[lang] = count_bytes(fs)
    for lang in mix:
        if available.get(lang, 0) == 0:
            raise QazlmError(f"{files[lang][0]}: no text for {lang!r} (empty input); add text or drop it from --mix")
    if balance not in ("upsample", "downsample"):
        raise QazlmError(f"balance {balance!r}: choose upsample or downsample")
    pick = max if balance == "upsample" else min
    total = pick(available[lang] / share for lang, share in mix.items())
    if max_bytes:
        total = min(total, max_bytes)
    budget = {lang: int(share * total) for lang, share in mix.items()}
    ratio = {lang: budget[lang] / available[lang] for lang in mix}
    return MixturePlan(mix=mix, files=files, available=available, budget=budget, ratio=ratio, lines=lines)


def iter_mixture(plan: MixturePlan, transform=None, used: dict[str, int] | None = None) -> Iterator[str]:
    """Stream the planned sample: per language, each normalized line 0, 1 or more times (even stride).

    `transform(lang, text)` may rewrite a line (MorphBPE boundary markers); `used` collects bytes per language.
    """
    for lang, files in plan.files.items():
        r = plan.ratio[lang]
        budget = plan.budget[lang]
        n = 0
        for i, text in enumerate(iter_normalized(files)):
            copies = math.floor((i + 1) * r) - math.floor(i * r)
            if not copies:
                continue
            if n >= budget:
                break
            n += copies * len(text.encode("utf-8"))
            if transform:
                text = transform(lang, text)
            for _ in range(copies):
                yield text
        if used is not None:
            used[lang] = n


def inputs_fingerprint(files: dict[str, list[Path]]) -> str:
    """Hash of (language, path, size, mtime) of all inputs: a cache key that changes when a file does."""
    h = hashlib.sha256()
    for lang in sorted(files):
        for f in files[lang]:
            st = f.stat()
            h.update(f"{lang}|{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
