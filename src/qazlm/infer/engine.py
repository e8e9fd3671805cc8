"""Text generation with a KV cache for our Transformer and for Hugging Face causal LMs.

Why our own loop instead of `transformers.generate`: it works on our checkpoints directly (no export),
through `qazlm.model.decode.Decoder` (fused weights, preallocated KV cache, ~30 kernels per layer instead
of ~48), and its per-token Python overhead is small (one decoder call, a few tensor ops, no per-step
re-tokenization). For greedy decoding it returns what `transformers.generate` returns on the exported
model (tested).

Batches of prompts are left-padded; the attention mask marks the padding so each row sees only its own
tokens, and positions are counted from each row's first real token, so a batch equals one-by-one decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qazlm.errors import QazlmError
from qazlm.infer.chat import format_chat
from qazlm.infer.sampling import SamplingParams, pick_next
from qazlm.infer.tools import decode_for_tools
from qazlm.tokenizer.special_tokens import IM_END, token_id

# What training samples and the eval report show a model (one prompt list per language; training uses the first).
SAMPLE_PROMPTS = {
    "kk": ["Қазақстан Республикасы", "Ертеде бір бай болыпты."],
    "ru": ["Россия является", "Однажды утром я"],
    "en": ["The capital of Kazakhstan is", "Once upon a time"],
}


def unwrap(model):
    """The torch module behind a `qazlm.infer.loading.LoadedLM` or the model itself."""
    return getattr(model, "module", model)


def is_hf_model(model) -> bool:
    return hasattr(model, "config") and hasattr(model, "generation_config")


class _OurStepper:
    """Incremental decoding for qazlm's Transformer through `qazlm.model.decode.Decoder` (fused weights,
    preallocated KV cache); the attention mask is used only when the batch has left padding."""

    def __init__(self, model, batch: int, max_len: int, device, compile: bool = False):
        import torch

        from qazlm.model.decode import Decoder

        self.decoder = Decoder.for_model(model)
        if compile:
            self.decoder.compile()
        self.cache = self.decoder.new_cache(batch, max_len)
        self.mask = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.length = 0
        self.padded = None  # no left padding in the batch: skip the mask entirely (cheaper attention)

    def __call__(self, ids, mask_new):
        t = ids.shape[1]
        if self.padded is None:
            self.padded = not bool(mask_new.all())
        if self.padded:
            self.mask[:, self.length:self.length + t] = mask_new
        self.length += t
        return self.decoder(ids, self.cache, self.mask[:, :self.length] if self.padded else None)


class _HFStepper:
    """Incremental decoding for an HF causal LM with `past_key_values`; position ids follow the mask."""

    def __init__(self, model, batch: int, max_len: int, device):
        import torch

        import inspect

        self.model = model
        self.past = None
        # transformers 5 renamed `past_key_values` to `cache`; support both.
        self.cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.mask = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        self.length = 0

    def __call__(self, ids, mask_new):
        t = ids.shape[1]
        self.mask[:, self.length:self.length + t] = mask_new
        self.length += t
        mask = self.mask[:, :self.length]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -t:]
        kwargs = {self.cache_kw: self.past, "use_cache": True}
        if self.keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **kwargs)
        self.past = out.cache if self.cache_kw == "cache" else out.past_key_values
        return out.logits[:, -1, :]


def make_stepper(model, batch: int, max_len: int, device, compile: bool = False):
    model = unwrap(model)
    if is_hf_model(model):  # a Qwen3/Llama folder (our SFT output, SmolLM2) decodes as our Transformer
        from qazlm.model.hf import ours_for

        ours = ours_for(model)
        # another architecture, quantized weights, or rows past the RoPE table (which transformers extends):
        # transformers' own forward
        if ours is None or max_len > ours.cfg.max_seq_len:
            return _HFStepper(model, batch, max_len, device)
        model = ours
    if hasattr(model, "cfg"):
        return _OurStepper(model, batch, max_len, device, compile)
    raise QazlmError(f"generate: unsupported model type {type(model).__name__}; "
                     "pass a qazlm Transformer or a transformers causal LM")


def encode_prompts(tokenizer, prompts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
    """Token ids per prompt; a document-boundary token first, as every document was seen in pretraining."""
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if add_bos and bos is not None:
        ids = [[bos] + list(x) if not x or x[0] != bos else list(x) for x in ids]
    if any(len(x) == 0 for x in ids):
        raise QazlmError("generate: an empty prompt with no BOS/EOS token to start from; give some text")
    return ids


def pad_id_of(tokenizer) -> int:
    """The id that fills batch rows (never attended to): the pad token, else EOS, else 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def stop_ids_for(tokenizer, params: SamplingParams) -> list[int]:
    ids = set(params.stop_token_ids)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    end_of_turn = token_id(tokenizer, IM_END)
    if end_of_turn is not None:
        ids.add(end_of_turn)
    return sorted(ids)


def generate_ids(model, prompt_ids: list[list[int]], params: SamplingParams, *, pad_id: int = 0,
                 stop_token_ids: Sequence[int] = (), device: str = "cpu",
                 on_step: Callable[[list[int], list[int]], bool] | None = None,
                 compile: bool = False, constraint=None) -> list[list[int]]:
    """Core loop: new token ids per prompt (stop token excluded). `on_step(rows, tokens)` may return True
    to finish a row early (used for stop strings and streaming). `compile`: see `Decoder.compile` (our
    models only; worth it for long generations or many calls in one process). `constraint`: a
    `qazlm.infer.constrain.Constraint` that masks what each row may emit next."""
    import torch

    batch, longest = len(prompt_ids), max(len(p) for p in prompt_ids)
    max_len = longest + params.max_new_tokens
    limit = getattr(getattr(unwrap(model), "cfg", None), "max_seq_len", None)
    if limit is not None and max_len > limit:
        raise QazlmError(f"generate: prompt ({longest} tokens) + max_new_tokens ({params.max_new_tokens}) "
                         f"exceeds the model's max_seq_len {limit}; shorten the prompt or lower --max-new-tokens")
    ids = torch.full((batch, longest), pad_id, dtype=torch.long)
    mask = torch.zeros(batch, longest, dtype=torch.long)
    for row, p in enumerate(prompt_ids):
        ids[row, longest - len(p):] = torch.tensor(p)
        mask[row, longest - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    if constraint is not None:
        constraint.limit_tokens(params.max_new_tokens)  # a grammar-bound reply is finished within its budget
    generator = torch.Generator(device=device).manual_seed(params.seed)
    out = torch.full((batch, params.max_new_tokens), pad_id, dtype=torch.long, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    stops = torch.tensor(sorted(set(stop_token_ids)) or [-1], device=device)
    seen = ids[:, :0] if params.repetition_penalty != 1.0 else None   # the reply so far (pick_next)
    ones = torch.ones(batch, 1, dtype=torch.long, device=device)
    module = unwrap(model)
    step = make_stepper(module, batch, max_len, device, compile)
    was_training = getattr(module, "training", False)
    module.eval()
    try:
        with torch.inference_mode():
            logits = step(ids, mask)
            for t in range(params.max_new_tokens):
                if constraint is not None:
                    logits = constraint.mask(logits.float())
                nxt = pick_next(logits, seen, params, generator)
                is_stop = torch.isin(nxt, stops)
                live = ~done & ~is_stop
                if constraint is not None:
                    constraint.advance(live.nonzero().flatten().tolist(), nxt[live].tolist())
                out[:, t] = nxt
                lengths += live.long()
                done |= is_stop
                if seen is not None:
                    seen = torch.cat([seen, nxt[:, None]], dim=1)
                if on_step is not None:
                    rows = live.nonzero().flatten().tolist()
                    if rows:
                        finished = on_step(rows, nxt[rows].tolist())
                        for r in finished or ():
                            done[r] = True
                if bool(done.all()) or t == params.max_new_tokens - 1:
                    break
                logits = step(nxt[:, None], ones)
    finally:
        if was_training:
            module.train()
    out, lengths = out.tolist(), lengths.tolist()
    return [row[:n] for row, n in zip(out, lengths)]


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 128, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, *, repetition_penalty: float = 1.0,
             stop: Sequence[str] = (), stop_token_ids: Sequence[int] = (), seed: int = 0, chat: bool = False,
             system: str | None = None, add_bos: bool = True, device: str = "cpu",
             max_prompt_tokens: int | None = None, stream: Callable[[int, str], None] | None = None,
             compile: bool = False, json_schema: dict | None = None, tools: list[dict] | None = None,
             force_tool_calls: bool = True, parallel_tool_calls: bool = True) -> list[str]:
    """Generate a continuation for each prompt (the prompt itself is not repeated).

    Stops at EOS (and `<|im_end|>`), any `stop_token_ids`, any `stop` string (cut off before it), or after
    `max_new_tokens`. `stream(row, text_delta)` receives text as it is produced. `max_prompt_tokens` keeps
    only the last tokens of longer prompts. `json_schema`: the reply must be JSON valid for it; `tools`: the
    reply must be one `<tool_call>` block calling one of them, or several with `parallel_tool_calls`
    (constrained decoding; the text keeps its `<tool_call>` markers, for `qazlm.infer.tools.parse_tool_calls`);
    with `force_tool_calls=False` the tools are only offered and the model decodes freely (OpenAI's "auto").
    """
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            repetition_penalty=repetition_penalty, stop=list(stop),
                            stop_token_ids=list(stop_token_ids), seed=seed)
    if not prompts:
        return []
    texts = [format_chat(tokenizer, p, system, tools) for p in prompts] if chat else list(prompts)
    prompt_ids = encode_prompts(tokenizer, texts, add_bos=add_bos and not chat)
    if max_prompt_tokens:  # keep the end of an over-long prompt: it is what the continuation depends on
        prompt_ids = [p[-max_prompt_tokens:] for p in prompt_ids]
    pad = pad_id_of(tokenizer)
    tokens: dict[int, list[int]] = {r: [] for r in range(len(prompts))}
    shown: dict[int, int] = {r: 0 for r in range(len(prompts))}
    tail_len = max((len(s) for s in params.stop), default=0) + 8

    def on_step(rows, new):
        finished = []
        for r, tok in zip(rows, new):
            tokens[r].append(tok)
            if params.stop:
                tail = tokenizer.decode(tokens[r][-tail_len:], skip_special_tokens=False)
                if any(s in tail for s in params.stop):
                    finished.append(r)
                    continue
            if stream is not None:
                text = tokenizer.decode(tokens[r], skip_special_tokens=True)
                hold = max((len(s) for s in params.stop), default=0)  # a stop string may be starting
                upto = len(text) - hold if not text.endswith("\ufffd") else len(text.rstrip("\ufffd")) - hold
                if upto > shown[r]:
                    stream(r, text[shown[r]:upto])
                    shown[r] = upto
        return finished

    need_hook = bool(params.stop) or stream is not None
    stop_ids = stop_ids_for(tokenizer, params)
    constraint = make_constraint(tokenizer, json_schema, tools if force_tool_calls else None, stop_ids, chat,
                                 len(prompt_ids), parallel_tool_calls)
    ids = generate_ids(model, prompt_ids, params, pad_id=pad, stop_token_ids=stop_ids,
                       device=device, on_step=on_step if need_hook else None, compile=compile, constraint=constraint)
    results = []
    for r, row in enumerate(ids):
        text = decode_for_tools(tokenizer, row) if tools else tokenizer.decode(row, skip_special_tokens=True)
        cut = [text.find(s) for s in params.stop if s in text]
        if cut:
            text = text[:min(cut)]
        if stream is not None and len(text) > shown[r]:
            stream(r, text[shown[r]:])
        results.append(text)
    return results


def make_constraint(tokenizer, json_schema, tools, stop_ids: list[int], chat: bool, rows: int, parallel: bool = True):
    """The grammar a reply must follow (None: free text); it ends with `<|im_end|>` in a chat, else EOS."""
    if json_schema is None and not tools:
        return None
    if json_schema is not None and tools:
        raise QazlmError("generate: give a JSON schema or tools to call, not both")
    from qazlm.infer.constrain import Constraint, schema_regex, tool_call_regex

    end = token_id(tokenizer, IM_END) if chat else None
    stop = end if end is not None else (tokenizer.eos_token_id if tokenizer.eos_token_id is not None else stop_ids[0])
    regex = tool_call_regex(tools, parallel, tokenizer) if tools else schema_regex(json_schema)
    return Constraint(tokenizer, regex, int(stop), rows)


def generate_chat(model, tokenizer, conversations: list[list[dict]], params: SamplingParams, *,
                  tools: list[dict] | None = None, force_tool_calls: bool = False, parallel_tool_calls: bool = True,
                  json_schema: dict | None = None, device: str = "cpu") -> list[str]:
    """The next assistant turn of each conversation, rendered with the chat template (and `tools` in its
    system turn). The text keeps `<tool_call>` markers when tools are offered (for `parse_tool_calls`).
    `force_tool_calls` / `json_schema`: constrained decoding (one batch follows one grammar)."""
    from qazlm.infer.chat import render_chat

    texts = [render_chat(tokenizer, c, tools=tools) for c in conversations]
    prompt_ids = encode_prompts(tokenizer, texts, add_bos=False)
    stop_ids = stop_ids_for(tokenizer, params)
    constraint = make_constraint(tokenizer, json_schema, tools if force_tool_calls else None, stop_ids, True,
                                 len(prompt_ids), parallel_tool_calls)
    pad = pad_id_of(tokenizer)
    rows = generate_ids(model, prompt_ids, params, pad_id=pad, stop_token_ids=stop_ids, device=device,
                        constraint=constraint)
    return [decode_for_tools(tokenizer, r).strip() if tools else tokenizer.decode(r, skip_special_tokens=True)
            for r in rows]
