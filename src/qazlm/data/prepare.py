"""`qazlm data prepare`: the datatrove stages (filter -> MinHash -> dedup) then mixing and tokenizing.

Layout of `out_dir`:
  work/filtered/      documents that passed steps 1-6 (jsonl.gz per task)
  work/minhash/       signatures, buckets, ids to remove (datatrove MinHash stages 1-3)
  work/deduped/       documents after MinHash (stage 4)
  rejects/<step>/     every removed document with metadata.filter_reason
  logs/<stage>/       datatrove logs, per-task stats and completion markers (reruns skip done tasks)
  tokens/             training shards (qazlm.data.shards), val/ raw held-out text, report/ summary
  qazlm_requested.json  the settings of the latest run (written first); qazlm_stage.json: the same, written
                      last, once the run completed (qazlm.runs); .qazlm.lock: one run per folder
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from qazlm.data.config import DataConfig
from qazlm.data.shards import is_complete
from qazlm.errors import QazlmError
from qazlm.io import clean_temp, write_json
from qazlm.runs import STAGE_RECORD, config_changes, output_lock, read_record, write_record

DATATROVE_STAGES = ("filter", "minhash_buckets", "minhash_cluster", "dedup")


def _writer(folder: Path, name: str):
    from datatrove.pipeline.writers import JsonlWriter

    return JsonlWriter(str(folder / name), output_filename="${rank}.jsonl.gz")


def _executor(cfg: DataConfig, pipeline: list, name: str, tasks: int, logs: Path, depends=None):
    """One datatrove executor of the configured kind (local / slurm / ray)."""
    ex = cfg.executor
    common = {"pipeline": pipeline, "tasks": tasks, "logging_dir": str(logs / name), "depends": depends}
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(workers=min(ex.workers, tasks), **common)
    if ex.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(job_name=f"qazlm_{name}", partition=ex.partition, time=ex.time,
                                     cpus_per_task=ex.cpus_per_task, mem_per_cpu_gb=ex.mem_per_cpu_gb,
                                     qos=ex.qos, venv_path=ex.venv_path or None,
                                     sbatch_args=dict(ex.sbatch_args) or None, workers=ex.workers, **common)
    from datatrove.executor.ray import RayPipelineExecutor

    return RayPipelineExecutor(workers=ex.workers, cpus_per_task=ex.cpus_per_task,
                               mem_per_cpu_gb=ex.mem_per_cpu_gb, **common)


def build_executors(cfg: DataConfig, out: Path, decontam_index: str | None) -> list:
    """The four datatrove stages, chained with `depends` (so Slurm/Ray schedule them in order)."""
    from datatrove.pipeline.dedup.minhash import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)

    from qazlm.data import steps
    from qazlm.data.report import AFTER_DECONTAM, AFTER_LANGID, AFTER_MINHASH, AFTER_QUALITY, READ
    from qazlm.data.readers import CorpusReader
    from qazlm.data.wordtok import RegexWordTokenizer

    cfg.validate()
    work, rej, logs = out / "work", out / "rejects", out / "logs"
    mh = minhash_config(cfg)
    tasks = max(1, cfg.executor.tasks)
    sources = [dataclasses.asdict(s) for s in cfg.sources]
    quality = {lang: dataclasses.asdict(cfg.quality_for(lang)) for lang in cfg.langs}
    pipeline = [
        CorpusReader(sources, cfg.min_doc_chars, cfg.max_doc_chars),
        steps.Tally(READ),
        steps.RejectFilter(exclusion_writer=_writer(rej, "unreadable")),
        steps.NormalizeStep(),
        steps.LangIdFilter(cfg.langs, cfg.lang_kk_ratio, exclusion_writer=_writer(rej, "langid")),
        steps.Tally(AFTER_LANGID),
        steps.BoilerplateLines(cfg.boilerplate_min_docs, exclusion_writer=_writer(rej, "boilerplate")),
        steps.QualityFilter(quality, exclusion_writer=_writer(rej, "quality")),
        steps.Tally(AFTER_QUALITY),
    ]
    if cfg.pii:
        pipeline.append(steps.PIIScrubber())
    if decontam_index:
        pipeline += [steps.DecontamFilter(decontam_index, exclusion_writer=_writer(rej, "decontam")),
                     steps.Tally(AFTER_DECONTAM)]
    pipeline += [_writer(work, "filtered"),
                 MinhashDedupSignature(str(work / "minhash" / "sigs"), config=mh, language=RegexWordTokenizer())]
    s1 = _executor(cfg, pipeline, "filter", tasks, logs)
    s2 = _executor(cfg, [MinhashDedupBuckets(str(work / "minhash" / "sigs"), str(work / "minhash" / "buckets"),
                                             config=mh)], "minhash_buckets", mh.num_buckets, logs, s1)
    s3 = _executor(cfg, [MinhashDedupCluster(str(work / "minhash" / "buckets"), str(work / "minhash" / "remove"),
                                             config=mh)], "minhash_cluster", 1, logs, s2)
    s4 = _executor(cfg, [RankFileReader(str(work / "filtered")),
                         MinhashDedupFilter(str(work / "minhash" / "remove"), exclusion_writer=_writer(rej, "minhash")),
                         steps.Tally(AFTER_MINHASH), _writer(work, "deduped")], "dedup", tasks, logs, s3)
    return [s1, s2, s3, s4]


def minhash_config(cfg: DataConfig):
    """datatrove's MinHash settings of the corpus pipeline (word n-grams, buckets x hashes, seed)."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    # sha1: the installed xxhash rejects str input in datatrove's shingle hashing
    return MinhashConfig(n_grams=cfg.minhash_ngram, num_buckets=cfg.minhash_buckets,
                         hashes_per_bucket=cfg.minhash_hashes_per_bucket, seed=cfg.seed,
                         hash_config=HashConfig(precision=64, hash_fc="sha1"))


def near_duplicates(texts: list[str], cfg: DataConfig | None = None) -> set[int]:
    """Indices of the texts that the corpus pipeline's MinHash stages (datatrove, `cfg`'s settings; default
    DataConfig's) remove as near-duplicates of another: of each cluster one text is kept. In process, in a
    temporary folder, datatrove's console log silenced; for other stages' small sets (e.g. SFT conversations)."""
    import tempfile

    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)

    from qazlm.data.wordtok import RegexWordTokenizer

    mh = minhash_config(cfg or DataConfig())
    kept: list[int] = []

    def documents(data=None, rank: int = 0, world_size: int = 1):
        yield from (Document(text=t, id=str(i)) for i, t in enumerate(texts))

    def collect(data, rank: int = 0, world_size: int = 1):
        for doc in data:
            kept.append(int(doc.id))
            yield doc

    with tempfile.TemporaryDirectory() as tmp:
        sigs, buckets, remove = (str(Path(tmp) / name) for name in ("sigs", "buckets", "remove"))
        stages = [([documents, MinhashDedupSignature(sigs, config=mh, language=RegexWordTokenizer())], 1),
                  ([MinhashDedupBuckets(sigs, buckets, config=mh)], mh.num_buckets),
                  ([MinhashDedupCluster(buckets, remove, config=mh)], 1),
                  ([documents, MinhashDedupFilter(remove), collect], 1)]
        with _stderr_to(Path(tmp) / "console.log"):
            for k, (pipeline, tasks) in enumerate(stages):   # a log folder each: datatrove skips completed ranks
                LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=f"{tmp}/logs{k}").run()
    return set(range(len(texts))) - set(kept)


class RankFileReader:
    """Task r reads exactly `<folder>/<r:05d>.jsonl.gz` (the file task r of the previous stage wrote).

    MinHash's removal list is indexed by document position within a task, so stage 4 must see the same
    documents in the same order as stage 1 did; an absent file (a task that kept nothing) is empty.
    """

    def __new__(cls, folder: str):
        from datatrove.pipeline.readers import JsonlReader

        class _Reader(JsonlReader):
            name = "📖 rank file reader"

            def run(self, data=None, rank: int = 0, world_size: int = 1):
                path = f"{rank:05d}.jsonl.gz"
                if self.data_folder.exists(path):
                    for doc in self.read_file(path):
                        self.update_doc_stats(doc)
                        yield doc

        return _Reader(folder, compression="gzip")


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Send file descriptor 2 (datatrove's per-task console logging, in worker processes too) to `path`.

    datatrove also writes full per-task logs and stats under logs/<stage>/; the console keeps one line per stage.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model")
REQUESTED = "qazlm_requested.json"  # the settings of the run in progress (the stage record marks completion)


def tokenizer_fingerprint(folder: str | Path) -> str:
    """sha256 over the files an HF tokenizer is loaded from: a tokenizer retrained in place (same path,
    other tokens) must not be answered with the old shards."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(folder) / name
        if path.is_file():
            h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_record(cfg: DataConfig) -> dict:
    """The settings that decide a run's outputs, as recorded in its folder: the whole config except where it
    runs (out_dir; executor settings other than `tasks`, which partitions the datatrove work), plus the
    tokenizer's fingerprint."""
    record = dataclasses.asdict(cfg)
    del record["out_dir"]
    record["sources"] = {s["name"]: s for s in record["sources"]}  # so a change is listed as sources.<name>.<key>
    record["executor"] = {"tasks": cfg.executor.tasks}
    record["tokenizer_sha256"] = tokenizer_fingerprint(cfg.tokenizer)
    if cfg.decontaminate:  # an evaluation file that changed means another index: redo the run
        from qazlm.data.decontam import index_fingerprint

        record["decontam_sha256"] = index_fingerprint(cfg.decontaminate, cfg.decontam_ngram)
    return record


def previous_settings(out: Path) -> dict | None:
    """The settings of the run that last wrote `out`: the completed run's record, else those of a run that
    was killed or submitted (its datatrove completion markers would be reused by a rerun); None if new."""
    record = read_record(out)
    if record is None:
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((out / REQUESTED).read_text(encoding="utf-8"))
    return record if isinstance(record, dict) else None


def refuse_other_settings(out: Path, record: dict) -> None:
    """One line listing what changed, instead of silently mixing old outputs with new settings."""
    old = previous_settings(out)
    changes = config_changes(old, record) if old is not None else []
    if changes:
        shown = "; ".join(changes[:4]) + ("; ..." if len(changes) > 4 else "")
        raise QazlmError(f"{out}: holds a data run made with other settings ({shown}); rerun with --force to "
                         "redo it with the new ones, or choose another out_dir")


def completed_summary(out: Path, record: dict) -> dict | None:
    """The summary of a run that completed in `out` with exactly `record`'s settings (nothing to do), else None."""
    summary = out / "report" / "summary.json"
    if read_record(out) != json.loads(json.dumps(record)) or not is_complete(out / "tokens") or not summary.exists():
        return None
    print(f"data: {out} is complete with these settings; skipping (use --force to redo)")
    return json.loads(summary.read_text(encoding="utf-8"))


def prepare(cfg: DataConfig, *, force: bool = False) -> dict:
    """Run every stage (skipping completed work unless `force`) and return the summary dict.

    Holds the output folder's run lock throughout (one run per folder; an unwritable folder fails here, before
    any work). A folder made with other settings is refused unless `force`; the stage record is written last."""
    cfg.validate()
    out = Path(cfg.out_dir)
    if not cfg.tokenizer or not Path(cfg.tokenizer).is_dir():
        raise QazlmError(f"{cfg.tokenizer or '(empty)'}: tokenizer folder not found; set `tokenizer` to an HF "
                         "tokenizer folder (e.g. runs/tiny/tokenizer from `qazlm tokenizer train`)")
    record = run_record(cfg)
    with output_lock(out, "data"):
        if not force:
            refuse_other_settings(out, record)
            if (done := completed_summary(out, record)) is not None:
                return done
        (out / STAGE_RECORD).unlink(missing_ok=True)  # the outputs are about to change
        clean_temp(out)
        write_json(out / REQUESTED, record)
        summary = run_stages(cfg, out, force)
        if summary.get("status") != "submitted":
            write_record(out, "data", record)
    return summary


def run_stages(cfg: DataConfig, out: Path, force: bool) -> dict:
    """The datatrove stages under the configured executor, then finalize (mix, tokenize, report)."""
    from qazlm.data.finalize import finalize

    if force:
        for sub in ("work", "rejects", "logs", "tokens", "val", "report", "decontam"):
            p = out / sub
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    index = None
    if cfg.decontaminate:  # <out>/decontam/index.npz, rebuilt when the sets, n or eval files change
        from qazlm.data.decontam import prepare_index

        index = prepare_index(out, cfg.decontaminate, cfg.decontam_ngram)
    executors = build_executors(cfg, out, str(index) if index else None)
    if cfg.executor.kind == "local":
        console_log = out / "logs" / "console.log"
        for i, (name, ex) in enumerate(zip(DATATROVE_STAGES, executors), 1):
            t0 = time.time()
            print(f"data: [{i}/{len(executors)}] {name} ({ex.world_size} tasks, log: {console_log}) ...",
                  end="", flush=True)
            with _stderr_to(console_log):
                ex.run()
            print(f" {time.time() - t0:.0f}s", flush=True)
    else:  # Slurm/Ray: the last stage launches its dependencies
        if cfg.executor.kind == "ray" and cfg.executor.ray_address:
            import ray

            ray.init(address=cfg.executor.ray_address, ignore_reinit_error=True)
        executors[-1].run()
        if executors[-1].get_incomplete_ranks(skip_completed=True):
            print(f"qazlm: datatrove jobs submitted ({cfg.executor.kind}); rerun the same command when they "
                  "finish to mix and tokenize")
            return {"status": "submitted"}
    return finalize(cfg, out)
