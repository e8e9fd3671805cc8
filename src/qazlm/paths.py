"""Where bundled and shared data live, resolved from the repository root."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
BUNDLED_EVAL_DIR = REPO_ROOT / "data" / "eval"
LANGS = ("kk", "ru", "en")
FLORES_CODES = {"kk": "kaz_Cyrl", "ru": "rus_Cyrl", "en": "eng_Latn"}
# the evaluation sets training text is decontaminated against (qazlm.data.decontam); here, where a CLI can name
# them in --help without importing the index's word tokenizer
EVAL_SETS = ("flores", "sib200", "kkcopa", "kazqad", "safety", "kkwikispell", "nis_math", "wic")
SAMPLE_LICENCES = {  # the bundled corpus data/sample/<lang>/<source>.txt.gz, as in data/LICENSES.md
    "kaznerd_news_sentences": "CC BY 4.0", "apertium_wiki_texts": "CC BY-SA 4.0", "ud_kazakh_ktb": "CC BY-SA 4.0",
    "firefox_ui_strings": "MPL-2.0", "dostoevsky_idiot": "public domain", "ud_russian_gsd": "CC BY-SA 4.0",
    "ud_russian_taiga": "CC BY-SA 4.0", "tinyshakespeare": "public domain", "robinson_crusoe": "public domain",
    "ud_english_ewt": "CC BY-SA 4.0", "python_docs": "PSF-2.0", "wordnet_glosses": "WordNet 3.0 licence",
}


def shared_dir() -> Path:
    """`../shared` beside the checkout (override with QAZLM_SHARED)."""
    return Path(os.environ.get("QAZLM_SHARED", REPO_ROOT.parent / "shared"))


def flores_path(split: str, lang: str) -> Path:
    """FLORES+ file for `split` (dev/devtest) and `lang` (kk/ru/en): bundled copy first, then ../shared."""
    name = f"{split}.{FLORES_CODES.get(lang, lang)}.gz"
    for base in (BUNDLED_EVAL_DIR / "flores_plus", shared_dir() / "data" / "eval" / "flores_plus"):
        if (base / name).exists():
            return base / name
    return BUNDLED_EVAL_DIR / "flores_plus" / name
