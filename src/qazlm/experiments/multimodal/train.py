"""Two-stage training of the multimodal model (LLaVA's schedule) on the project's own images and speech.

Stage 1 ("projector") trains the projectors with the language model frozen — and the encoders too when they
start from random weights (a pretrained SigLIP/Whisper folder stays frozen, as in LLaVA). Stage 2 ("full")
also trains the language model (or LoRA adapters on it, merged on save) at a lower learning rate. Images are
drawn afresh for every batch (an endless supply, so nothing is memorised); speech comes from the clips that
`data` synthesized, shifted in time by a random few frames. Batches alternate between the modalities.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from qazlm.config import check_fields
from qazlm.errors import QazlmError
from qazlm.experiments.multimodal.model import AUDIO_TOKEN, IMAGE_TOKEN, EncoderShapes, MultimodalLM

MODALITIES = ("image", "audio")


@dataclasses.dataclass
class MultimodalTrainConfig:
    lm: str = ""                         # our model folder or an HF Qwen3/Llama folder (runs/tiny/sft/final)
    speech_data: str = ""                # folder written by `data` (needed for "audio")
    init: str | None = None              # a multimodal folder to go on training (stage 2 only; `lm` not needed)
    modalities: list[str] = dataclasses.field(default_factory=lambda: ["image", "audio"])
    vision_encoder: str | None = None    # a local SigLIP folder (frozen in stage 1); None: train one from scratch
    audio_encoder: str | None = None     # a local Whisper encoder folder; None: from scratch
    encoder_steps: int = 0               # stage 0 per modality: pretrain an encoder made from scratch (encoders.py)
    encoder_lr: float = 1e-3
    projector_steps: int = 300           # stage 1
    full_steps: int = 900                # stage 2
    batch: int = 32
    lr: float = 1e-3                     # encoders + projectors
    lm_lr: float = 3e-4                  # the language model in stage 2
    full_encoder_lr: float = 0.0         # > 0: the encoders train on in stage 2 at this rate (SmolVLM); 0: frozen
    warmup: int = 30
    lora_rank: int = 0                   # > 0: LoRA on the LM's attention and MLP in stage 2 instead of full
    read_share: float = 0.5              # of image batches: printed words (the rest: shapes)
    threads: int = 0                     # torch threads; 0 = all cores
    device: str = "auto"                 # auto: cuda when there is one (bf16 autocast), else cpu (fp32)
    workers: int = 0                     # processes drawing pictures (a GPU outruns one); 0 = in the loop
    seed: int = 0
    log_every: int = 25
    shapes: EncoderShapes = dataclasses.field(default_factory=EncoderShapes)

    def __post_init__(self):
        check_fields(self, "multimodal train: ", {
            "encoder_steps": ">=0", "encoder_lr": ">0", "projector_steps": ">=0", "full_steps": ">=0", "batch": ">0",
            "lr": ">0", "lm_lr": ">0", "full_encoder_lr": ">=0", "warmup": ">=0", "lora_rank": ">=0",
            "read_share": ">=0, <=1", "threads": ">=0", "workers": ">=0", "log_every": ">0"})
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise QazlmError(f"multimodal train: device={self.device!r}; use auto, cpu or cuda[:N]")
        bad = set(self.modalities) - set(MODALITIES)
        if bad or not self.modalities:
            raise QazlmError(f"multimodal train: modalities {sorted(bad) or '[]'}; use image and/or audio")
        if not self.lm and not self.init:
            raise QazlmError("multimodal train: give --lm FOLDER (the text model) or --set init=FOLDER")
        if self.projector_steps + self.full_steps == 0:
            raise QazlmError("multimodal train: projector_steps + full_steps is 0; train at least one step")


# ------------------------------------------------------------------------------------------ prompts
class Prompts:
    """Token ids of chat prompts and answers. A prompt is rendered by the one chat template (user turn:
    placeholders, newline, question; then the opened assistant turn) once per distinct question."""

    def __init__(self, tokenizer, image_tokens: int, audio_tokens: int):
        self.tokenizer = tokenizer
        self.counts = {"image": image_tokens, "audio": audio_tokens, "none": 0}
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._cache: dict = {}

    def user_text(self, modality: str, question: str) -> str:
        token = {"image": IMAGE_TOKEN, "audio": AUDIO_TOKEN, "none": ""}[modality]
        return (token * self.counts[modality] + "\n" if self.counts[modality] else "") + question

    def prompt(self, modality: str, question: str) -> list[int]:
        key = (modality, question)
        if key not in self._cache:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": self.user_text(modality, question)}],
                tokenize=False, add_generation_prompt=True)
            self._cache[key] = self.tokenizer(text, add_special_tokens=False).input_ids
        return self._cache[key]

    def answer(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids + [self.im_end]


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [B, T] (right-padded) and targets [B, T]: the next token on answer positions, -100 elsewhere."""
    T = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), T), pad_id, dtype=torch.long)
    targets = torch.full((len(pairs), T), -100, dtype=torch.long)
    for row, (p, a) in enumerate(pairs):
        seq = p + a
        ids[row, :len(seq)] = torch.tensor(seq)
        targets[row, len(p) - 1:len(seq) - 1] = torch.tensor(a)
    return ids, targets


# ------------------------------------------------------------------------------------------ batches
def image_processor(size: int):
    from transformers.models.siglip import SiglipImageProcessorPil

    return SiglipImageProcessorPil(size={"height": size, "width": size})


class ImageBatches:
    """Freshly drawn pictures with a question each (languages, tasks and held-out rules of `images`)."""

    def __init__(self, prompts: Prompts, size: int, read_share: float, seed: int):
        self.prompts, self.size, self.read_share, self.seed = prompts, size, read_share, seed
        self.rng = random.Random(f"image-batches:{seed}")
        self.processor = image_processor(size)

    def reseed(self, worker: int) -> None:
        self.rng = random.Random(f"image-batches:{self.seed}:worker{worker}")

    def items(self, n: int):
        from qazlm.experiments.multimodal.images import LANGS, shape_item, text_item

        make = [text_item if self.rng.random() < self.read_share else shape_item for _ in range(n)]
        return [f(self.rng, False, self.rng.choice(LANGS), self.size) for f in make]

    def __call__(self, n: int, pad_id: int) -> dict:
        items = self.items(n)
        ids, targets = collate([(self.prompts.prompt("image", it.question), self.prompts.answer(it.answer))
                                for it in items], pad_id)
        pixels = self.processor([it.image for it in items], return_tensors="pt")["pixel_values"]
        return {"ids": ids, "targets": targets, "pixel_values": pixels}


class AudioBatches:
    """Clips from a speech data folder, each shifted right by 0-20 frames of silence."""

    def __init__(self, prompts: Prompts, folder: str | Path, split: str, seed: int):
        self.prompts = prompts
        self.rows, self.mel = read_speech(folder, split)
        self.rng = np.random.default_rng(seed)

    def __call__(self, n: int, pad_id: int) -> dict:
        picks = self.rng.integers(0, len(self.rows), n)
        mel = torch.from_numpy(self.mel[picks].astype(np.float32))
        for row, shift in enumerate(self.rng.integers(0, 21, n)):
            if shift:
                mel[row] = torch.cat([mel[row, :, -shift:].fill_(float(mel[row].min())), mel[row, :, :-shift]], 1)
        rows = [self.rows[k] for k in picks]
        ids, targets = collate([(self.prompts.prompt("audio", r["question"]), self.prompts.answer(r["answer"]))
                                for r in rows], pad_id)
        return {"ids": ids, "targets": targets, "mel": mel}


class Stream(torch.utils.data.IterableDataset):
    """Endless `source(n, pad)` batches; in a DataLoader worker the source is first reseeded by the worker's
    number, so workers draw different pictures (and a run with a given worker count is repeatable)."""

    def __init__(self, source, n: int, pad: int):
        super().__init__()
        self.source, self.n, self.pad = source, n, pad

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:
            self.source.reseed(info.id)
        while True:
            yield self.source(self.n, self.pad)


def stream(source, n: int, pad: int, workers: int):
    """An iterator of batches: drawn in this process, or by `workers` processes when the source can be
    reseeded (pictures: PIL drawing on one core feeds a GPU a few steps a second; clips are only indexed)."""
    if not workers or not hasattr(source, "reseed"):
        return iter(Stream(source, n, pad))
    return iter(torch.utils.data.DataLoader(Stream(source, n, pad), batch_size=None, num_workers=workers,
                                            prefetch_factor=4))


def autocast(device: torch.device):
    """bf16 autocast on CUDA (as pretraining does); fp32 on CPU, where bf16 is far slower."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def read_speech(folder: str | Path, split: str) -> tuple[list[dict], np.ndarray]:
    folder = Path(folder)
    rows_path, mel_path = folder / f"{split}.jsonl", folder / f"{split}.mel.npy"
    if not rows_path.is_file() or not mel_path.is_file():
        raise QazlmError(f"{folder}: no {split}.jsonl/.mel.npy; write it with "
                         f"`python -m qazlm.experiments.multimodal data -o {folder}`")
    rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines() if line]
    mel = np.load(mel_path, allow_pickle=False)
    if not rows:
        raise QazlmError(f"{folder}: no {split} clips; write it again with `data --train N --heldout N` (N > 0)")
    if len(rows) != len(mel):
        raise QazlmError(f"{folder}: {len(rows)} {split} rows but {len(mel)} spectrograms; write the folder again")
    return rows, mel


# ------------------------------------------------------------------------------------------ training
def build(cfg: MultimodalTrainConfig) -> MultimodalLM:
    from qazlm.experiments.multimodal.model import build_audio, build_vision, load_lm

    lm, tokenizer = load_lm(cfg.lm)
    torch.manual_seed(cfg.seed)
    vision = build_vision(cfg.shapes, cfg.vision_encoder) if "image" in cfg.modalities else None
    audio = build_audio(cfg.shapes, cfg.audio_encoder) if "audio" in cfg.modalities else None
    return MultimodalLM(lm, tokenizer, vision, audio, cfg.shapes)


def stage_params(model: MultimodalLM, cfg: MultimodalTrainConfig, stage: str) -> list[dict]:
    """Parameter groups of a stage; everything else is frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    new = [m for m in (model.vision_proj, model.audio_proj) if m is not None]
    # encoders made at random in this run learn with the projectors; pretrained ones (a folder, stage 0, or
    # the `init` model's) stay frozen as in LLaVA, unless full_encoder_lr trains them on in stage 2
    fresh = [enc for enc, given in ((model.vision, cfg.vision_encoder), (model.audio, cfg.audio_encoder))
             if enc is not None and not given and not cfg.encoder_steps and not cfg.init]
    groups = [{"params": [p for m in new + fresh for p in m.parameters()], "lr": cfg.lr}]
    if stage == "full":
        lm_params = [p for n, p in model.lm.named_parameters() if "lora_" in n] if cfg.lora_rank else \
            list(model.lm.parameters())
        groups.append({"params": lm_params, "lr": cfg.lm_lr})
        pretrained = [enc for enc in (model.vision, model.audio) if enc is not None and enc not in fresh]
        if cfg.full_encoder_lr and pretrained:
            groups.append({"params": [p for enc in pretrained for p in enc.parameters()], "lr": cfg.full_encoder_lr})
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups


def add_lora(model: MultimodalLM, rank: int) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model.lm = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets), model.lm)


def merge_lora(model: MultimodalLM) -> None:
    """Fold every LoRA adapter into its base Linear and put the plain Linear back (our folder format)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.lm.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = model.lm.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], module.get_base_layer())


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Pretraining's schedule: linear warmup, cosine down to a tenth."""
    from qazlm.train.schedule import lr_at

    return lr_at(step, lr=1.0, min_lr=0.1, warmup=warmup, total=total)


def train_stage(model: MultimodalLM, cfg: MultimodalTrainConfig, stage: str, steps: int, sources: dict,
                log) -> list[dict]:
    """`steps` AdamW steps of one stage, modalities in turn; the metrics rows it logged."""
    from tqdm import tqdm

    if stage == "full" and cfg.lora_rank:
        add_lora(model, cfg.lora_rank)
    device = next(model.parameters()).device
    groups = stage_params(model, cfg, stage)
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    base = [g["lr"] for g in opt.param_groups]
    pad = model.tokenizer.pad_token_id or 0
    streams = {m: stream(src, cfg.batch, pad, cfg.workers) for m, src in sources.items()}
    model.train()
    rows, window = [], {m: [] for m in sources}
    t0 = time.time()
    for step in tqdm(range(steps), desc=f"multimodal {stage}", unit="step", disable=steps < 2):
        modality = cfg.modalities[step % len(cfg.modalities)]
        batch = to_device(next(streams[modality]), device)
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * lr_factor(step, steps, cfg.warmup)
        with autocast(device):
            loss = model(batch["ids"], batch["targets"], batch.get("pixel_values"), batch.get("mel"))
        if not torch.isfinite(loss):
            raise QazlmError(f"multimodal {stage}: loss is {loss.item()} at step {step}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        window[modality].append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            row = {"stage": stage, "step": step + 1, "seconds": round(time.time() - t0, 1),
                   **{f"loss_{m}": round(sum(v) / len(v), 4) for m, v in window.items() if v}}
            rows.append(row)
            log(row)
            window = {m: [] for m in sources}
    if stage == "full" and cfg.lora_rank:
        merge_lora(model)
    model.eval()
    return rows


def train(cfg: MultimodalTrainConfig, out_dir: str | Path, log=print) -> Path:
    """Both stages -> <out>/final (a multimodal model folder) + metrics.jsonl + loss.png; <out>/stage1 is kept,
    so a rerun after a kill starts at stage 2. One run per folder (the run lock)."""
    from qazlm.io import write_text
    from qazlm.runs import output_lock, resolve_device

    out = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with output_lock(out, "multimodal-train"):
        stage1 = out / "stage1"
        resume = stage1 if (stage1 / "multimodal.json").is_file() else Path(cfg.init) if cfg.init else None
        device = torch.device(resolve_device(cfg.device, "multimodal train:"))
        if resume is None:
            model, parent, metrics = build(cfg).to(device), str(Path(cfg.lm).resolve()), []
            sources = sources_for(model, cfg)
            metrics += pretrain_encoders(model, cfg, sources, log)
            metrics += train_stage(model, cfg, "projector", cfg.projector_steps, sources, log)
            save(model, stage1, lineage(cfg, parent, "projector", metrics))
        else:
            from qazlm.experiments.multimodal.model import load

            log(f"multimodal: starting stage 2 from {resume}" + (" (stage 1 done)" if resume == stage1 else ""))
            model = load(resume).to(device)
            previous = json.loads((resume / "multimodal.json").read_text(encoding="utf-8"))["lineage"]
            parent, metrics = previous["parent"], previous["metrics"]
        sources = sources_for(model, cfg)   # each stage draws its data from the seed again
        metrics += train_stage(model, cfg, "full", cfg.full_steps, sources, log)
        write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in metrics))
        plot_losses(metrics, out / "loss.png")
        save(model, out / "final", lineage(cfg, parent, "full", metrics))
    return out / "final"


def save(model: MultimodalLM, folder: Path, lineage: dict) -> None:
    """The model folder, written from CPU tensors (then the model goes back to where it trains)."""
    from qazlm.io import atomic_dir

    device = next(model.parameters()).device
    model.to("cpu")
    with atomic_dir(folder) as tmp:
        model.save(tmp, lineage)
    model.to(device)


def pretrain_encoders(model: MultimodalLM, cfg: MultimodalTrainConfig, sources: dict, log) -> list[dict]:
    """Stage 0 for each encoder built from scratch (none when `encoder_steps` is 0 or a folder was given);
    speech comes from the clips the audio batches already hold."""
    from qazlm.experiments.multimodal.encoders import pretrain

    rows = []
    if cfg.encoder_steps and model.vision is not None and not cfg.vision_encoder:
        rows += pretrain(model, "image", cfg.encoder_steps, cfg.batch, cfg.encoder_lr, cfg.seed, log,
                         workers=cfg.workers)
    if cfg.encoder_steps and model.audio is not None and not cfg.audio_encoder:
        heldout = read_speech(cfg.speech_data, "heldout") if (Path(cfg.speech_data) / "heldout.jsonl").is_file() \
            else None
        rows += pretrain(model, "audio", cfg.encoder_steps, cfg.batch, cfg.encoder_lr, cfg.seed, log,
                         speech=(sources["audio"].rows, sources["audio"].mel), heldout_speech=heldout)
    return rows


def sources_for(model: MultimodalLM, cfg: MultimodalTrainConfig) -> dict:
    """The batch makers of each trained modality."""
    prompts = Prompts(model.tokenizer, model.image_tokens, model.audio_tokens)
    sources = {}
    if "image" in cfg.modalities:
        sources["image"] = ImageBatches(prompts, model.vision.config.image_size, cfg.read_share, cfg.seed)
    if "audio" in cfg.modalities:
        if not cfg.speech_data:
            raise QazlmError("multimodal train: modality audio needs --speech-data DIR (written by `data`)")
        sources["audio"] = AudioBatches(prompts, cfg.speech_data, "train", cfg.seed)
    return sources


def lineage(cfg: MultimodalTrainConfig, parent: str, stage: str, metrics: list[dict]) -> dict:
    """The text model it grew from (the eval's text-only baseline), the settings and every logged loss."""
    return {"parent": parent, "stage": stage, "config": dataclasses.asdict(cfg), "metrics": metrics}


def plot_losses(metrics: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qazlm.io import save_png

    lm_rows = [r for r in metrics if r["stage"] in ("projector", "full")]
    enc_rows = [r for r in metrics if r["stage"].startswith("encoder_")]
    fig, axes = plt.subplots(1, 2 if enc_rows else 1, figsize=(11 if enc_rows else 7, 3.5), squeeze=False,
                             layout="constrained")
    if enc_rows:
        for m in MODALITIES:
            pts = [(r["step"], r[f"loss_{m}"]) for r in enc_rows if f"loss_{m}" in r]
            if pts:
                axes[0, 0].plot(*zip(*pts), label=m)
        axes[0, 0].set(xlabel="step", ylabel="label loss (sum of heads)", yscale="log",
                       title="stage 0: encoders on known labels")
        axes[0, 0].legend()
    ax = axes[0, -1]
    for k, (offset, rows) in enumerate(loss_segments(lm_rows)):
        for m, colour in zip(MODALITIES, ("C0", "C1")):
            pts = [(offset + r["step"], r[f"loss_{m}"]) for r in rows if f"loss_{m}" in r]
            if pts:
                ax.plot(*zip(*pts), color=colour, label=None if k else m)
        if k:
            ax.axvline(offset, color="grey", ls="--", lw=1)
    ax.set(xlabel="step (dashed: stage 2 starts, or a run goes on from the last)", ylabel="answer-token loss",
           yscale="log", title="stages 1-2: through the language model")
    ax.legend()
    save_png(fig, path)


def loss_segments(rows: list[dict]) -> list[tuple[int, list[dict]]]:
    """Stage 1-2 rows cut where a stage starts or a run went on from an earlier one (`init`: its steps count
    from 1 again), each with the steps before it, so the segments follow one another on one axis."""
    segments: list[tuple[int, list[dict]]] = []
    for r in rows:
        last = segments[-1][1][-1] if segments else None
        if last is None or last["stage"] != r["stage"] or r["step"] <= last["step"]:
            segments.append((segments[-1][0] + last["step"] if segments else 0, []))
        segments[-1][1].append(r)
    return segments
