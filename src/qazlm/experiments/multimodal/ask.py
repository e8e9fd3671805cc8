"""One question about one picture or one WAV file (the experiment's `generate --image/--audio`)."""

from __future__ import annotations

from pathlib import Path

import torch

from qazlm.errors import QazlmError


def ask(model_dir: str | Path, question: str, image: str | None = None, audio: str | None = None,
        max_new_tokens: int = 32) -> str:
    from qazlm.experiments.multimodal.evaluate import greedy
    from qazlm.experiments.multimodal.model import load
    from qazlm.experiments.multimodal.train import Prompts, image_processor

    if (image is None) == (audio is None):
        raise QazlmError("multimodal ask: give --image FILE or --audio FILE (one)")
    if max_new_tokens < 1:
        raise QazlmError(f"--max-new-tokens {max_new_tokens}: give 1 or more")
    model = load(model_dir)
    prompts = Prompts(model.tokenizer, model.image_tokens, model.audio_tokens)
    if image is not None:
        if model.vision is None:
            raise QazlmError(f"{model_dir}: this model has no vision encoder; ask it with --audio")
        pixels = image_processor(model.vision.config.image_size)([read_image(image)], return_tensors="pt")
        return greedy(model, [prompts.prompt("image", question)], pixel_values=pixels["pixel_values"],
                      max_new_tokens=max_new_tokens)[0]
    if model.audio is None:
        raise QazlmError(f"{model_dir}: this model has no audio encoder; ask it with --image")
    from qazlm.experiments.multimodal.speech import log_mel, read_audio

    mel = torch.from_numpy(log_mel([read_audio(audio)]).astype("float32"))
    return greedy(model, [prompts.prompt("audio", question)], mel=mel, max_new_tokens=max_new_tokens)[0]


def read_image(path: str | Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise QazlmError(f"{path}: not a readable picture ({type(e).__name__}); give a PNG or JPEG file") from None
