"""Stage 0: pretraining the encoders from scratch on what the data knows by construction.

LLaVA connects encoders that arrive pretrained (SigLIP, Whisper) and keeps them frozen; with no pretrained
weights offline, this stage makes them: supervised, as the original ViT was pretrained on labelled images.
Linear heads read the encoder's tokens in the layout the projector will see (pixel-shuffled patches, stacked
frames), flattened so that where things are stays visible:
- pictures: colour (8; none for shapes drawn in a colour without a name), shape (5), count (4), side (left /
  right / not asked) of drawn shapes, and the characters of printed words and numbers, one class per slot
  (6 slots, an end mark after the last);
- sounds: which command (10 per language), which number (0-99), and the characters of spoken words.
Trained only through a small language model, the encoders learn colour long before shape, count or side
(docs/multimodal.md has the figures); with this stage they arrive knowing them. The heads are thrown away.
"""

from __future__ import annotations

import random
import time
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qazlm.experiments.multimodal.images import COLOURS, LANGS, SHAPES, SIDES, shape_item, text_item, words
from qazlm.experiments.multimodal.speech import COMMANDS

SLOTS = 6


@lru_cache(maxsize=1)
def alphabet() -> str:
    return "".join(sorted(set("".join(w for ws in words().values() for w in ws)) | set("0123456789")))


def char_targets(text: str) -> list[int]:
    """SLOTS class ids: each character's index in the alphabet, then the end mark, then -100 (ignored)."""
    ab = alphabet()
    ids = [ab.index(c) if c in ab else -100 for c in text[:SLOTS]]
    if len(ids) < SLOTS:
        ids.append(len(ab))
    return ids + [-100] * (SLOTS - len(ids))


class Heads(nn.Module):
    """One linear classifier per label over the flattened encoder tokens (character slots: one per slot)."""

    def __init__(self, tokens: int, width: int, sizes: dict[str, int]):
        super().__init__()
        self.sizes = sizes
        self.heads = nn.ModuleDict({k: nn.Linear(tokens * width, n * (SLOTS if k == "chars" else 1))
                                    for k, n in sizes.items()})

    def logits(self, feats: torch.Tensor, labels: dict[str, torch.Tensor]):
        """(name, logits [N, classes], targets [N]) per label; character slots are rows of their own."""
        flat = feats.flatten(1)
        for name, target in labels.items():
            logits = self.heads[name](flat)
            if name == "chars":
                logits, target = logits.view(len(flat) * SLOTS, -1), target.flatten()
            yield name, logits, target

    def loss(self, feats: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        total = feats.new_zeros(())
        for _, logits, target in self.logits(feats, labels):
            if (target != -100).any():
                total = total + F.cross_entropy(logits, target, ignore_index=-100)
        return total

    @torch.no_grad()
    def accuracy(self, feats: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
        out = {}
        for name, logits, target in self.logits(feats, labels):
            keep = target != -100
            if keep.any():
                out[name] = round(float((logits.argmax(-1)[keep] == target[keep]).float().mean()), 4)
        return out


def image_batch(rng: random.Random, n: int, size: int, processor, heldout: bool = False):
    """Pixels [n, 3, size, size] and their labels: half shapes, half printed text, of one split."""
    items = [(shape_item if k % 2 else text_item)(rng, heldout, rng.choice(LANGS), size) for k in range(n)]
    ignore = [-100] * n
    labels = {"colour": list(ignore), "shape": list(ignore), "count": list(ignore), "side": list(ignore),
              "chars": [[-100] * SLOTS for _ in range(n)]}
    for k, it in enumerate(items):
        m = it.meta
        if it.task == "read":
            labels["chars"][k] = char_targets(m["text"])
        else:
            labels["colour"][k] = list(COLOURS).index(m["colour"]) if m["named"] else -100
            labels["shape"][k] = list(SHAPES).index(m["shape"])
            labels["count"][k] = m["count"] - 1
            labels["side"][k] = list(SIDES).index(m["side"]) if m["side"] else len(SIDES)
    pixels = processor([it.image for it in items], return_tensors="pt")["pixel_values"]
    return pixels, {k: torch.tensor(v) for k, v in labels.items()}


def audio_labels(rows: list[dict]) -> dict[str, torch.Tensor]:
    n = len(rows)
    labels = {"command": [-100] * n, "number": [-100] * n, "chars": [[-100] * SLOTS for _ in range(n)]}
    for k, r in enumerate(rows):
        if r["task"] == "command":
            labels["command"][k] = LANGS.index(r["lang"]) * 10 + COMMANDS[r["lang"]].index(r["answer"])
        elif r["task"] == "number":
            labels["number"][k] = int(r["answer"])
        else:
            labels["chars"][k] = char_targets(r["answer"])
    return {k: torch.tensor(v) for k, v in labels.items()}


class EncoderImages:
    """Labelled picture batches of stage 0; reseedable, so DataLoader workers can draw them."""

    def __init__(self, size: int, seed: int):
        from qazlm.experiments.multimodal.train import image_processor

        self.size, self.seed, self.processor = size, seed, image_processor(size)
        self.rng = random.Random(f"encoder:{seed}")

    def reseed(self, worker: int) -> None:
        self.rng = random.Random(f"encoder:{self.seed}:worker{worker}")

    def __call__(self, n: int, pad=None, heldout: bool = False):
        return image_batch(self.rng, n, self.size, self.processor, heldout)


class EncoderClips:
    """Labelled spectrogram batches of stage 0, drawn from the training clips."""

    def __init__(self, rows: list[dict], mel: np.ndarray, seed: int):
        self.rows, self.mel, self.rng = rows, mel, np.random.default_rng(seed)

    def __call__(self, n: int, pad=None):
        picks = self.rng.integers(0, len(self.rows), n)
        return torch.from_numpy(self.mel[picks].astype(np.float32)), audio_labels([self.rows[k] for k in picks])


def pretrain(model, modality: str, steps: int, batch: int, lr: float, seed: int, log, speech=None,
             heldout_speech=None, workers: int = 0) -> list[dict]:
    """`steps` AdamW steps of the `modality` encoder with its heads; the rows it logged, the last one the
    heads' accuracy on held-out pictures (unseen combinations and words) or clips (unseen voices and words):
    what the encoder can tell the language model about data it never saw."""
    from tqdm import tqdm

    from qazlm.experiments.multimodal.train import autocast, lr_factor, stream, to_device

    torch.manual_seed(seed)
    device = next(model.parameters()).device
    if modality == "image":
        encoder, width = model.vision, model.vision.config.hidden_size * model.shapes.pixel_shuffle ** 2
        sizes = {"colour": len(COLOURS), "shape": len(SHAPES), "count": 4, "side": len(SIDES) + 1,
                 "chars": len(alphabet()) + 1}
        source = EncoderImages(model.vision.config.image_size, seed)
    else:
        encoder, width = model.audio, model.audio.config.d_model * model.shapes.frame_stack
        sizes = {"command": 10 * len(LANGS), "number": 100, "chars": len(alphabet()) + 1}
        source = EncoderClips(*speech, seed)
    heads = Heads(model.image_tokens if modality == "image" else model.audio_tokens, width, sizes).to(device)
    params = list(encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batches = stream(source, batch, 0, workers)
    encoder.train()
    logged, window, t0 = [], [], time.time()
    for step in tqdm(range(steps), desc=f"multimodal encoder ({modality})", unit="step", disable=steps < 2):
        inputs, labels = next(batches)
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(step, steps, min(30, steps // 10))
        with autocast(device):
            loss = heads.loss(model.encoded(modality, inputs.to(device)), to_device(labels, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        window.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            row = {"stage": f"encoder_{modality}", "step": step + 1, "seconds": round(time.time() - t0, 1),
                   f"loss_{modality}": round(sum(window) / len(window), 4)}
            logged.append(row)
            log(row)
            window = []
    encoder.eval()
    row = {"stage": f"encoder_{modality}", "step": steps,
           "heldout_accuracy": probe(model, modality, heads, source, heldout_speech)}
    log(row)
    return logged + [row]


@torch.no_grad()
def probe(model, modality: str, heads: Heads, source, heldout_speech, n: int = 256) -> dict:
    from qazlm.experiments.multimodal.train import autocast, to_device

    device = next(model.parameters()).device
    if modality == "image":
        inputs, labels = source(n, heldout=True)
    elif heldout_speech is not None:
        rows, mel = heldout_speech
        inputs, labels = torch.from_numpy(mel[:n].astype(np.float32)), audio_labels(rows[:n])
    else:
        return {}
    with autocast(device):
        return heads.accuracy(model.encoded(modality, inputs.to(device)), to_device(labels, device))
