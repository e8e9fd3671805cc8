"""Downstream tasks through lm-eval-harness, for our checkpoints and HF models alike.

`QazlmLM` is an `lm_eval.api.model.TemplateLM`: lm-eval itself splits context/continuation (a trailing
space of the context moves to the continuation) and handles empty contexts; we only score token ids.
Token scoring uses the same rule as `bpb.py`: the first continuation token is predicted from the last
context token, and every context starts with the document-boundary token (BOS, else EOS), as in pretraining.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.infer.scoring import prefix_token_id, rolling_windows, score_windows
from qazlm.eval.tasks import TASK_DIR, TASKS, expand_tasks, missing_data

log = logging.getLogger(__name__)


def _template_lm():
    from lm_eval.api.model import TemplateLM

    return TemplateLM


def make_lm(model, tokenizer, *, batch_size: int = 8, max_len: int | None = None, device: str = "cpu"):
    """An lm-eval LM over `model(input_ids) -> logits` and an HF tokenizer (class built lazily: lm-eval is slow
    to import)."""

    class QazlmLM(_template_lm()):
        def __init__(self):
            super().__init__()
            self.model, self.tokenizer = model, tokenizer
            self._max_len = int(max_len or getattr(model, "max_len", 2048))
            self._batch_size, self._device = batch_size, device

        @property
        def eot_token_id(self) -> int:
            return int(self.tokenizer.eos_token_id)

        @property
        def prefix_token_id(self) -> int:
            return prefix_token_id(self.tokenizer)

        @property
        def max_length(self) -> int:
            return self._max_len

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            ids = self.tokenizer(string, add_special_tokens=False)["input_ids"]
            if add_special_tokens is False:
                return list(ids)
            return [self.prefix_token_id] + list(ids)  # documents start after a boundary token

        def tok_decode(self, ids) -> str:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            windows = []
            for _, ctx, cont in requests:
                if not cont:
                    raise QazlmError("lm-eval task: an empty continuation; check the task's doc_to_choice")
                whole = (ctx + cont)[-(self._max_len + 1):]
                windows.append((whole[:-1], cont[-(len(whole) - 1):]))  # over-long: score what fits
            out = score_windows(self.model, windows, batch_size=self._batch_size, device=self._device, greedy=True)
            for (key, _, _), res in zip(requests, out):
                self.cache_hook.add_partial("loglikelihood", key, res)
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            windows, owner = [], []
            for n, req in enumerate(requests):
                (text,) = req.args
                ids = self.tok_encode(text, add_special_tokens=False)
                for w in rolling_windows(ids, self.prefix_token_id, self._max_len):
                    windows.append(w)
                    owner.append(n)
            scores = score_windows(self.model, windows, batch_size=self._batch_size, device=self._device)
            totals = [0.0] * len(requests)
            for n, (logprob, _) in zip(owner, scores):
                totals[n] += logprob
            return totals

        def generate_until(self, requests, disable_tqdm: bool = False):
            from qazlm.infer.engine import generate

            groups: dict[str, list[int]] = {}
            for n, req in enumerate(requests):
                groups.setdefault(repr(sorted(req.args[1].items())), []).append(n)
            results: list[str] = [""] * len(requests)
            for members in groups.values():
                gen_kwargs = requests[members[0]].args[1]
                until = gen_kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(gen_kwargs.get("max_gen_toks", 128))
                temperature = float(gen_kwargs.get("temperature", 0.0)) if gen_kwargs.get("do_sample") else 0.0
                for start in range(0, len(members), self._batch_size):
                    rows = members[start:start + self._batch_size]
                    contexts = [requests[n].args[0] for n in rows]
                    texts = generate(self.model, self.tokenizer, contexts, max_new_tokens=max_new,
                                     temperature=temperature, stop=until, device=self._device,
                                     max_prompt_tokens=self._max_len - max_new)
                    for n, context, text in zip(rows, contexts, texts):
                        self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                        results[n] = text
            return results

    return QazlmLM()


def default_data_dir() -> Path:
    from qazlm.eval.tasks.utils import data_root

    return data_root(None)


def run_tasks(model, tokenizer, tasks: list[str], *, data_dir: str | Path | None = None, num_fewshot: int = 0,
              limit: int | None = None, batch_size: int = 8, device: str = "cpu", max_len: int | None = None,
              seed: int = 1234, log=print) -> dict:
    """Run qazlm's lm-eval tasks on a loaded model (see `run_lm_tasks`)."""
    lm = make_lm(model, tokenizer, batch_size=batch_size, max_len=max_len, device=device)
    return run_lm_tasks(lm, tasks, data_dir=data_dir, num_fewshot=num_fewshot, limit=limit, seed=seed, log=log)


def is_served(path) -> bool:
    return str(path).startswith(("http://", "https://"))


def served_lm(url: str, *, batch_size: int = 8, max_len: int | None = None):
    """lm-eval's own `local-completions` client for a served model (`qazlm serve`, vLLM, ...) at `url`
    (`http://host:port/v1`): the tokenizer is the server's (vLLM's /tokenize routes, `tokenizer_backend=remote`)
    and every score comes from /v1/completions with echo + logprobs. The API key, if any, is $OPENAI_API_KEY.
    Returns (lm, model id, the server's context length)."""
    import requests
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    url, key = url.rstrip("/"), os.environ.get("OPENAI_API_KEY", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        model_id = requests.get(f"{url}/models", headers=headers, timeout=30).json()["data"][0]["id"]
        info = requests.get(f"{url.removesuffix('/v1')}/tokenizer_info", headers=headers, timeout=30).json()
        context = int(info["model_max_length"])
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as e:
        raise QazlmError(f"eval: {url} does not answer as an OpenAI-compatible server with vLLM's /tokenizer_info "
                         f"({type(e).__name__}); start one with `qazlm serve MODEL` and give its .../v1 URL") from None
    lm = LocalCompletionsAPI(base_url=f"{url}/completions", model=model_id, tokenizer_backend="remote",
                             auth_token=key or None, header=headers or None, batch_size=batch_size,
                             max_length=min(max_len or context, context), num_concurrent=1, max_retries=1)
    return lm, model_id, min(max_len or context, context)


def run_lm_tasks(lm, tasks: list[str], *, data_dir: str | Path | None = None, num_fewshot: int = 0,
                 limit: int | None = None, seed: int = 1234, log=print) -> dict:
    """Run qazlm's lm-eval tasks with an lm-eval LM (ours, or a served model's client); returns
    {task: {"metric", "value", "stderr", "chance", "n"} or {"skipped"}}.

    A task whose local data files are missing is skipped with a one-line reason; the rest still runs.
    """
    names = expand_tasks(tasks)
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    out: dict[str, dict] = {}
    runnable = []
    for name in names:
        reason = missing_data(name, data_dir)
        if reason:
            out[name] = {"skipped": reason}
            log(f"skip {name}: {reason}")
        else:
            runnable.append(name)
    if not runnable:
        return out
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # per-task notices drown the report otherwise
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False,
                          metadata={"data_dir": str(data_dir)})
    res = lm_eval.simple_evaluate(model=lm, tasks=runnable, task_manager=manager, num_fewshot=num_fewshot,
                                  limit=limit, bootstrap_iters=0, log_samples=False, random_seed=seed,
                                  numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    for name in runnable:
        info, got = TASKS[name], res["results"].get(name, {})
        key = next((k for k in got if k.split(",")[0] == info.metric), None)
        if key is None:
            out[name] = {"skipped": f"lm-eval returned no {info.metric!r} (got {sorted(got)})"}
            continue
        stderr = got.get(key.replace(info.metric, f"{info.metric}_stderr", 1))
        out[name] = {"metric": info.metric, "value": float(got[key]),
                     "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                     "chance": info.chance, "n": int(res.get("n-samples", {}).get(name, {}).get("effective", 0)),
                     "num_fewshot": num_fewshot, "lang": info.lang}
    return out
