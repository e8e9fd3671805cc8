"""The datatrove steps of `qazlm data prepare` (one job each, each with counters).

Filters drop with a reason (`dropped_<reason>` counter + a line in rejects/<step>/); formatters edit
text in place; `Tally` records documents/characters per language and source between steps.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from importlib import resources

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.formatters.pii import PIIFormatter, PIIReplacer

from qazlm.data import pii
from qazlm.data.wordtok import RegexWordTokenizer, words


def doc_lang(doc: Document) -> str:
    return doc.metadata.get("lang") or doc.metadata.get("lang_hint") or "?"


class Tally(PipelineStep):
    """Counts documents and characters per language and source at a point of the pipeline."""

    type = "📊 - TALLY"

    name = "tally"

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            key = f"{self.label}|{doc_lang(doc)}|{doc.metadata.get('source', '?')}"
            self.stat_update(f"{key}|docs")
            self.stat_update(f"{key}|chars", value=len(doc.text))
            yield doc


class RejectFilter(BaseFilter):
    """Drops what the reader could not turn into a document (reason set by the reader)."""

    name = "🚫 unreadable records"

    def filter(self, doc: Document):
        reason = doc.metadata.get("reject")
        return (False, reason) if reason else True


class NormalizeStep(BaseFormatter):
    """The shared qazlm normalization (NFC, entities, invisibles, Kazakh homoglyphs)."""

    name = "🔤 normalize"

    def format(self, text: str) -> str:
        from qazlm.text.normalize import normalize_text

        return normalize_text(text)


class LangIdFilter(BaseFilter):
    """Sets metadata lang/lang_score; drops other languages and documents contradicting the source's hint."""

    name = "🌐 language id"

    def __init__(self, langs: list[str], kk_ratio: float = 0.08, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.langs, self.kk_ratio = list(langs), kk_ratio

    def filter(self, doc: Document):
        from qazlm.text.langid import detect_language

        lang, score = detect_language(doc.text, self.kk_ratio)
        doc.metadata["lang_detected"], doc.metadata["lang_score"] = lang, round(score, 4)
        hint = doc.metadata.get("lang_hint")
        if hint:
            if lang != hint:
                from qazlm.text.langid import script_matches, short_text

                # ≤5 words carry too little signal to overrule the source: trust the hint if the script fits
                if not (short_text(doc.text) and script_matches(doc.text, hint) and lang != "kk"):
                    return False, "lang_mismatch"
                lang = hint
                doc.metadata["lang_from_hint"] = True
        elif lang not in self.langs:
            return False, "lang_other"
        doc.metadata["lang"] = lang
        return True


_GUTENBERG_LINE = re.compile(
    r"project gutenberg|gutenberg\.org|gutenberg-tm|^\s*(title|author|release date|language|character set "
    r"encoding|produced by|credits|most recently updated)\s*:|^\*{3}.*\*{3}\s*$|^\[?(e-?book|etext) ?#\d+",
    re.IGNORECASE)
_GUTENBERG_END = re.compile(r"\*{3}\s*end of (the|this) project gutenberg", re.IGNORECASE)


class BoilerplateLines(PipelineStep):
    """Line-level boilerplate: Project Gutenberg header/licence lines and lines repeated across many documents.

    After a file's "*** END OF THE PROJECT GUTENBERG" marker every document is licence text (the reader
    flags those records, since with record striping no single task sees the whole file). A line
    (of a multi-line document) that already appeared in `min_docs` documents of the same source is
    template text (menus, "Read more"); its later occurrences are cut. Documents left empty are dropped.
    """

    type = "✂️ - FORMAT"
    name = "🧹 boilerplate lines"

    def __init__(self, min_docs: int = 5, exclusion_writer=None):
        super().__init__()
        self.min_docs = min_docs
        self.exclusion_writer = exclusion_writer

    def run(self, data, rank: int = 0, world_size: int = 1):
        import contextlib

        seen: Counter = Counter()
        after_end: set[tuple[str, str]] = set()
        with self.exclusion_writer if self.exclusion_writer else contextlib.nullcontext() as writer:
            for doc in data:
                self.stat_update("total")
                key = (doc.metadata.get("source", ""), doc.metadata.get("file", ""))
                with self.track_time():
                    reason = self._clean(doc, key, seen, after_end)
                if reason:
                    self.stat_update("dropped", f"dropped_{reason}")
                    if writer:
                        doc.metadata["filter_reason"] = reason
                        writer.write(doc, rank)
                    continue
                self.stat_update("forwarded")
                yield doc

    def _clean(self, doc: Document, key: tuple[str, str], seen: Counter, after_end: set) -> str | None:
        """Edit doc.text in place; return a drop reason or None."""
        if doc.metadata.pop("gutenberg_licence", False) or key in after_end:
            return "gutenberg_licence"
        if _GUTENBERG_END.search(doc.text) and "\n" in doc.text.strip():
            after_end.add(key)  # END marker inside a multi-line document (e.g. a whole book as one record)
        lines = doc.text.split("\n")
        kept = []
        for line in lines:
            if _GUTENBERG_LINE.search(line):
                self.stat_update("lines_gutenberg")
                continue
            if len(lines) > 1 and line.strip():
                h = hashlib.blake2b(f"{key[0]}\x00{line.strip()}".encode(), digest_size=8).digest()
                seen[h] += 1
                if seen[h] > self.min_docs:
                    self.stat_update("lines_repeated")
                    continue
            kept.append(line)
        text = "\n".join(kept).strip()
        if not text:
            return "boilerplate_only"
        doc.text = text
        return None


def load_stopwords(lang: str) -> frozenset[str]:
    """Bundled stopword list (kk only: the Kazakh list from ../shared/data/lexicon, MIT)."""
    if lang != "kk":
        return frozenset()
    text = resources.files("qazlm.data").joinpath("resources/kk_stopwords.txt").read_text(encoding="utf-8")
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip())


class QualityFilter(BaseFilter):
    """Gopher quality + repetition and FineWeb line filters (datatrove), with thresholds per language.

    The datatrove filters run with our offline RegexWordTokenizer; the stopword rule is ours because
    datatrove's takes a count, and a ratio scales with document length.
    """

    name = "🥇 quality (gopher/fineweb/stopwords)"

    def __init__(self, quality: dict[str, dict], exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.quality = quality
        self._filters: dict[str, tuple] = {}

    def _for(self, lang: str):
        if lang not in self._filters:
            from datatrove.pipeline.filters import (FineWebQualityFilter, GopherQualityFilter,
                                                    GopherRepetitionFilter)

            q = self.quality.get(lang) or self.quality.get("*")
            tok = RegexWordTokenizer(lang)
            def gopher(short: bool):
                # ratios over lines/symbols are noise for one- or two-line documents (a single Russian
                # dialogue line starts with a dash, a single sentence may end in "...")
                return GopherQualityFilter(
                    min_doc_words=q["min_doc_words"], max_doc_words=q["max_doc_words"],
                    min_avg_word_length=q["min_avg_word_length"], max_avg_word_length=q["max_avg_word_length"],
                    max_symbol_word_ratio=None if short else q["max_symbol_word_ratio"],
                    max_non_alpha_words_ratio=q["max_non_alpha_words_ratio"], min_stop_words=None,
                    max_bullet_lines_ratio=None if short else q["max_bullet_lines_ratio"],
                    max_ellipsis_lines_ratio=None if short else 0.3, language=tok)

            gq = (gopher(False), gopher(True))
            gr = GopherRepetitionFilter(dup_line_frac=q["dup_line_frac"], dup_para_frac=q["dup_line_frac"],
                                        dup_line_char_frac=q["dup_line_char_frac"],
                                        dup_para_char_frac=q["dup_line_char_frac"],
                                        top_n_grams=((2, q["top_2gram_frac"]), (3, 0.18), (4, 0.16)),
                                        language=tok)
            fw = FineWebQualityFilter(short_line_thr=q["max_short_line_ratio"],
                                      char_duplicates_ratio=q["max_char_dup_ratio"], line_punct_thr=0.0,
                                      language=tok)
            self._filters[lang] = (gq, gr, fw, q, load_stopwords(lang))
        return self._filters[lang]

    def filter(self, doc: Document):
        gq, gr, fw, q, stop = self._for(doc_lang(doc))
        ws = words(doc.text)
        checks = [(gq[doc.text.count("\n") < 2], "")] + ([(gr, "gopher_rep_")] if len(ws) >= q["min_words_repetition"] else [])
        for f, prefix in checks:
            ok, reason = _result(f.filter(doc))
            if not ok:
                return False, prefix + (reason or "failed")
        if doc.text.count("\n") >= 2:  # FineWeb's line rules mean nothing for one-line documents
            ok, reason = _result(fw.filter(doc))
            if not ok:
                return False, "fineweb_" + (reason or "failed")
        if stop and q["min_stopword_ratio"] > 0:
            ws = [w.lower() for w in ws]
            if len(ws) >= q["min_stopword_words"]:
                ratio = sum(w in stop for w in ws) / len(ws)
                if ratio < q["min_stopword_ratio"]:
                    return False, "stopword_ratio"
        return True


def _result(res):
    return (res, None) if isinstance(res, bool) else res


def _phone_ok(match: str) -> bool:
    return 10 <= len(re.sub(r"\D", "", match)) <= 13


class PIIScrubber(PIIFormatter):
    """datatrove's e-mail/IP scrubber plus phone numbers, Luhn-valid cards and checksum-valid KZ IIN/BIN."""

    name = "🕵️ PII"

    def __init__(self):
        super().__init__(remove_emails=True, remove_ips=True)
        self.extra = [
            ("iin", PIIReplacer(pii.IIN_RE, "<IIN>", validator=pii.is_valid_iin_bin)),
            ("card", PIIReplacer(pii.CARD_RE, "<CARD>", validator=pii.luhn_valid)),
            ("phone", PIIReplacer(pii.PHONE_RE, "<PHONE>", validator=_phone_ok)),
        ]

    def format(self, text: str) -> str:
        before = text
        text = super().format(text)
        if text != before:
            self.stat_update("docs_email_or_ip")
        for label, rep in self.extra:
            new = rep.replace(text)
            if new != text:
                self.stat_update(f"docs_{label}")
            text = new
        return text


class DecontamFilter(BaseFilter):
    """Drops documents sharing a long word n-gram with an evaluation set (see qazlm.data.decontam).

    Takes the index by path (`<out>/decontam/index.npz`, plain arrays, never unpickled), so that each
    datatrove worker process loads it once, on its first document."""

    name = "🧪 decontamination"

    def __init__(self, index_path: str, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.index_path = index_path
        self._index = None

    def filter(self, doc: Document):
        from qazlm.data.decontam import NgramIndex

        if self._index is None:
            self._index = NgramIndex.load(self.index_path)
        hit = self._index.match(doc.text)
        if hit:
            doc.metadata["contaminated_by"] = hit
            return False, "contaminated"
        return True
