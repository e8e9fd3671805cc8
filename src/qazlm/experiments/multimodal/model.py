"""Our language model with a vision and a speech encoder spliced in through `inputs_embeds`.

LLaVA's recipe, sized as SmolVLM/nanoVLM and Ultravox size it:
- images: transformers' SigLIP vision tower (a local pretrained folder, or a small config trained from
  scratch here), its patch grid pixel-shuffled (SmolVLM: each 2x2 block of patches becomes one token with 4x
  the width, so 64 patches cost 16 tokens), an MLP into the LM's width;
- speech: transformers' Whisper encoder on log-mel frames, every 4 output frames stacked into one (Ultravox
  stacks 8), an MLP into the LM's width;
- the prompt holds one placeholder token per feature vector (reserved tokens of our tokenizer, so the
  vocabulary never grows), rendered by the one chat template; `embed` swaps their embeddings for the features.

A folder is `lm/` (an ordinary qazlm model folder: generate/eval/serve load it as text-only), `vision/` and
`audio/` (transformers folders), `projectors.safetensors` and `multimodal.json`. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qazlm.errors import QazlmError

IMAGE_TOKEN = "<|reserved_62|>"
AUDIO_TOKEN = "<|reserved_63|>"


@dataclasses.dataclass
class EncoderShapes:
    """The encoders' sizes when they are built from scratch (a pretrained folder brings its own)."""

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 192
    vision_layers: int = 4
    vision_heads: int = 3
    pixel_shuffle: int = 2
    audio_width: int = 192
    audio_layers: int = 4
    audio_heads: int = 3
    mel_bins: int = 80
    audio_frames: int = 200        # log-mel frames per clip (10 ms each); Whisper's convs halve them
    frame_stack: int = 4


class Projector(nn.Module):
    """Two-layer MLP (LLaVA-1.5) from encoder features to the LM's embedding width."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def pixel_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, N, C] patch features on a sqrt(N) grid -> [B, N / factor^2, C * factor^2]: each factor x factor
    block of neighbouring patches becomes one token (SmolVLM / nanoVLM's token reduction)."""
    B, N, C = x.shape
    side = int(round(N ** 0.5))
    if side * side != N or side % factor:
        raise QazlmError(f"multimodal: {N} patches is not a square grid divisible by pixel_shuffle={factor}")
    x = x.view(B, side // factor, factor, side // factor, factor, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (side // factor) ** 2, C * factor * factor)


def stack_frames(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, T, C] -> [B, T / factor, C * factor] (Ultravox's frame stacking; T is padded up to a multiple)."""
    B, T, C = x.shape
    pad = (-T) % factor
    if pad:
        x = torch.cat([x, x.new_zeros(B, pad, C)], dim=1)
    return x.reshape(B, (T + pad) // factor, C * factor)


def build_vision(shapes: EncoderShapes, pretrained: str | None = None):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    if pretrained:
        return SiglipVisionModel.from_pretrained(pretrained)
    return SiglipVisionModel(SiglipVisionConfig(
        hidden_size=shapes.vision_width, intermediate_size=shapes.vision_width * 3,
        num_hidden_layers=shapes.vision_layers, num_attention_heads=shapes.vision_heads,
        image_size=shapes.image_size, patch_size=shapes.patch_size, vision_use_head=False))


def build_audio(shapes: EncoderShapes, pretrained: str | None = None):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if pretrained:
        return WhisperEncoder.from_pretrained(pretrained)
    return WhisperEncoder(WhisperConfig(
        num_mel_bins=shapes.mel_bins, d_model=shapes.audio_width, encoder_layers=shapes.audio_layers,
        encoder_attention_heads=shapes.audio_heads, encoder_ffn_dim=shapes.audio_width * 3,
        max_source_positions=shapes.audio_frames // 2))


class MultimodalLM(nn.Module):
    def __init__(self, lm, tokenizer, vision=None, audio=None, shapes: EncoderShapes | None = None):
        super().__init__()
        self.lm, self.tokenizer, self.vision, self.audio = lm, tokenizer, vision, audio
        self.shapes = shapes or EncoderShapes()
        d = lm.cfg.d_model
        self.vision_proj = None if vision is None else Projector(vision.config.hidden_size
                                                                 * self.shapes.pixel_shuffle ** 2, d)
        self.audio_proj = None if audio is None else Projector(audio.config.d_model * self.shapes.frame_stack, d)
        self.image_id, self.audio_id = placeholder_id(tokenizer, IMAGE_TOKEN), placeholder_id(tokenizer, AUDIO_TOKEN)

    # ----------------------------------------------------------------------------------- features
    @property
    def image_tokens(self) -> int:
        if self.vision is None:
            return 0
        c = self.vision.config
        return (c.image_size // c.patch_size) ** 2 // self.shapes.pixel_shuffle ** 2

    @property
    def audio_tokens(self) -> int:
        if self.audio is None:
            return 0
        return -(-self.audio.config.max_source_positions // self.shapes.frame_stack)

    def encoded(self, modality: str, inputs: torch.Tensor) -> torch.Tensor:
        """The encoder's output in the projector's layout: pixel-shuffled patches or stacked frames."""
        if modality == "image":
            return pixel_shuffle(self.vision(pixel_values=inputs).last_hidden_state, self.shapes.pixel_shuffle)
        return stack_frames(self.audio(input_features=inputs).last_hidden_state, self.shapes.frame_stack)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_proj(self.encoded("image", pixel_values))

    def audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        return self.audio_proj(self.encoded("audio", mel))

    def embed(self, ids: torch.Tensor, pixel_values=None, mel=None) -> torch.Tensor:
        """Token embeddings with every placeholder replaced, in order, by a feature vector (LLaVA's splice)."""
        x = self.lm.embed_tokens(ids)
        for token, inputs, encode, name in ((self.image_id, pixel_values, self.image_features, "image"),
                                            (self.audio_id, mel, self.audio_features, "audio")):
            slots = ids == token
            if inputs is None:
                if slots.any():
                    raise QazlmError(f"multimodal: the prompt has {name} placeholders but no {name} was given")
                continue
            feats = encode(inputs)
            if int(slots.sum()) != feats.shape[0] * feats.shape[1]:
                raise QazlmError(f"multimodal: {int(slots.sum())} {name} placeholders for "
                                 f"{feats.shape[0]} x {feats.shape[1]} feature vectors")
            x = x.masked_scatter(slots.unsqueeze(-1), feats.to(x.dtype))
        return x

    def forward(self, ids, targets=None, pixel_values=None, mel=None):
        """Logits [B, T, V], or the loss: each answer's mean cross-entropy over its positions (target not
        -100; the output head runs only there), averaged over the answers. Every answer weighs the same: per
        token, a spelled word (~11 tokens) outweighed a colour (1-2) and the colour went unlearnt."""
        h = last_hidden(self.lm, self.embed(ids, pixel_values, mel))
        if targets is None:
            return F.linear(h, self.lm.output_weight()).float()
        keep = targets != -100
        ce = F.cross_entropy(F.linear(h[keep], self.lm.output_weight()).float(), targets[keep], reduction="none")
        per_answer = ce.new_zeros(len(ids)).index_add_(0, keep.nonzero()[:, 0], ce)
        counts = keep.sum(1)
        return (per_answer[counts > 0] / counts[counts > 0]).mean()

    # ----------------------------------------------------------------------------------- folders
    def save(self, folder: str | Path, lineage: dict) -> None:
        """Write the model folder (into a fresh directory; callers wrap it in atomic_dir)."""
        from safetensors.torch import save_file

        from qazlm.model.io import write_model_files

        folder = Path(folder)
        (folder / "lm").mkdir(parents=True)
        write_model_files(self.lm, folder / "lm")
        self.tokenizer.save_pretrained(folder / "lm")
        projectors = {}
        for name in ("vision", "audio"):
            encoder = getattr(self, name)
            if encoder is not None:
                encoder.save_pretrained(folder / name)
                projectors.update({f"{name}.{k}": v.contiguous() for k, v in
                                   getattr(self, f"{name}_proj").state_dict().items()})
        save_file(projectors, str(folder / "projectors.safetensors"))
        meta = {"format": "qazlm-multimodal", "version": 1, "image_token": IMAGE_TOKEN, "audio_token": AUDIO_TOKEN,
                "image_tokens": self.image_tokens, "audio_tokens": self.audio_tokens,
                "shapes": dataclasses.asdict(self.shapes), "lineage": lineage}
        (folder / "multimodal.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")


def load_lm(path: str | Path):
    """(our Transformer, tokenizer) from our model folder or an HF Qwen3/Llama folder (e.g. `qazlm sft`'s
    output), the latter as our Transformer holding the same tensors."""
    from qazlm.infer.loading import load_model
    from qazlm.model.hf import as_ours

    loaded = load_model(path)
    module = loaded.model.module
    lm = module if loaded.model.kind == "qazlm" else as_ours(module)
    if lm is None:
        raise QazlmError(f"{path}: the multimodal experiment takes qazlm models and fp32 Qwen3/Llama folders; "
                         f"this is a {type(module).__name__}")
    return lm, loaded.tokenizer


def last_hidden(lm, x: torch.Tensor) -> torch.Tensor:
    """Our Transformer's final normed hidden states for embeddings `x` — its forward without the head, so the
    16k-way head runs only where it is needed (answer positions in training, the last one in decoding): over
    every image/audio position it would cost more than the rest of the model. tests/test_multimodal.py pins
    it to `Transformer.forward(inputs_embeds=...)`."""
    T = x.shape[1]
    cos, sin = lm.rope_cos[:T].unsqueeze(0), lm.rope_sin[:T].unsqueeze(0)
    for layer in lm.layers:
        x = layer(x, cos, sin)
    return lm.norm(x)


def placeholder_id(tokenizer, token: str) -> int:
    from qazlm.tokenizer.special_tokens import token_id

    found = token_id(tokenizer, token)
    if found is None:
        raise QazlmError(f"multimodal: the tokenizer has no {token}; use a qazlm tokenizer (64 reserved tokens)")
    return found


def load(folder: str | Path) -> MultimodalLM:
    """A folder written by `MultimodalLM.save` (safetensors and JSON only)."""
    from safetensors.torch import load_file
    folder = Path(folder)
    meta_path = folder / "multimodal.json"
    if not meta_path.is_file():
        raise QazlmError(f"{folder}: not a multimodal model folder (no multimodal.json); "
                         "train one with `python -m qazlm.experiments.multimodal train`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    shapes = EncoderShapes(**meta["shapes"])
    vision = build_vision(shapes, str(folder / "vision")) if (folder / "vision").is_dir() else None
    audio = build_audio(shapes, str(folder / "audio")) if (folder / "audio").is_dir() else None
    model = MultimodalLM(*load_lm(folder / "lm"), vision, audio, shapes)
    weights = load_file(str(folder / "projectors.safetensors"))
    for name in ("vision", "audio"):
        proj = getattr(model, f"{name}_proj")
        if proj is not None:
            proj.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(name + ".")})
    return model.eval()
