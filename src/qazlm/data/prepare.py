"""`qazlm data prepare`: the datatrove stages (filter -> MinHash -> dedup) then mixing and tokenizing.

Layout of `out_dir`:
  work/filtered/      documents that passed steps 1-6 (jsonl.gz per task)
  work/minhash/       signatures, buckets, ids to remove (datatrove MinHash stages 1-3)
  work/deduped/       documents after MinHash (stage 4)
  rejects/<step>/     every removed document with metadata.filter_reason
  logs/<stage>/       datatrove logs, per-task stats and completion markers (reruns skip done tasks)
  tokens/             training shards (qazlm.data.shards), val/ raw held-out text, report/ summary
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

from qazlm.data.config import DataConfig
from qazlm.errors import QazlmError

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
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.utils.hashing import HashConfig

    from qazlm.data import steps
    from qazlm.data.readers import CorpusReader
    from qazlm.data.wordtok import RegexWordTokenizer

    cfg.validate()
    work, rej, logs = out / "work", out / "rejects", out / "logs"
    # sha1: the installed xxhash rejects str input in datatrove's shingle hashing
    mh = MinhashConfig(n_grams=cfg.minhash_ngram, num_buckets=cfg.minhash_buckets,
                       hashes_per_bucket=cfg.minhash_hashes_per_bucket, seed=cfg.seed,
                       hash_config=HashConfig(precision=64, hash_fc="sha1"))
    tasks = max(1, cfg.executor.tasks)
    sources = [dataclasses.asdict(s) for s in cfg.sources]
    quality = {lang: dataclasses.asdict(cfg.quality_for(lang)) for lang in cfg.langs}
    pipeline = [
        CorpusReader(sources, cfg.min_doc_chars, cfg.max_doc_chars),
        steps.Tally("0_read"),
        steps.RejectFilter(exclusion_writer=_writer(rej, "unreadable")),
        steps.NormalizeStep(),
        steps.LangIdFilter(cfg.langs, cfg.lang_kk_ratio, exclusion_writer=_writer(rej, "langid")),
        steps.Tally("1_langid"),
        steps.BoilerplateLines(cfg.boilerplate_min_docs, exclusion_writer=_writer(rej, "boilerplate")),
        steps.QualityFilter(quality, exclusion_writer=_writer(rej, "quality")),
        steps.Tally("2_quality"),
    ]
    if cfg.pii:
        pipeline.append(steps.PIIScrubber())
    if decontam_index:
        pipeline += [steps.DecontamFilter(decontam_index, exclusion_writer=_writer(rej, "decontam")),
                     steps.Tally("3_decontam")]
    pipeline += [_writer(work, "filtered"),
                 MinhashDedupSignature(str(work / "minhash" / "sigs"), config=mh, language=RegexWordTokenizer())]
    s1 = _executor(cfg, pipeline, "filter", tasks, logs)
    s2 = _executor(cfg, [MinhashDedupBuckets(str(work / "minhash" / "sigs"), str(work / "minhash" / "buckets"),
                                             config=mh)], "minhash_buckets", mh.num_buckets, logs, s1)
    s3 = _executor(cfg, [MinhashDedupCluster(str(work / "minhash" / "buckets"), str(work / "minhash" / "remove"),
                                             config=mh)], "minhash_cluster", 1, logs, s2)
    s4 = _executor(cfg, [RankFileReader(str(work / "filtered")),
                         MinhashDedupFilter(str(work / "minhash" / "remove"), exclusion_writer=_writer(rej, "minhash")),
                         steps.Tally("4_minhash"), _writer(work, "deduped")], "dedup", tasks, logs, s3)
    return [s1, s2, s3, s4]


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


def prepare(cfg: DataConfig, *, force: bool = False) -> dict:
    """Run every stage (skipping completed work unless `force`) and return the summary dict."""
    from qazlm.data.finalize import finalize

    cfg.validate()
    out = Path(cfg.out_dir)
    if not cfg.tokenizer or not Path(cfg.tokenizer).is_dir():
        raise QazlmError(f"{cfg.tokenizer or '(empty)'}: tokenizer folder not found; set `tokenizer` to an HF "
                         "tokenizer folder (e.g. runs/tiny/tokenizer from `qazlm tokenizer train`)")
    if force:
        for sub in ("work", "rejects", "logs", "tokens", "val", "report", "decontam.pkl"):
            p = out / sub
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    index = None
    if cfg.decontaminate:
        from qazlm.data.decontam import build_index

        index = out / "decontam.pkl"
        if not index.exists():
            build_index(cfg.decontaminate, cfg.decontam_ngram).save(index)
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
