"""One question about one picture or one sound (the experiment's `generate --image/--audio`; its server too)."""

from __future__ import annotations

import io
from pathlib import Path

from qazlm.errors import QazlmError


def answer(model, question: str, image=None, audio=None, max_new_tokens: int = 32) -> str:
    """The model's greedy reply to `question` about a PIL `image` or a 16 kHz float32 `audio` array (one)."""
    from qazlm.experiments.multimodal.evaluate import answer_items
    from qazlm.experiments.multimodal.speech import log_mel

    if (image is None) == (audio is None):
        raise QazlmError("multimodal: give one image or one sound with the question")
    if max_new_tokens < 1:
        raise QazlmError(f"max new tokens {max_new_tokens}: give 1 or more")
    if image is not None and model.vision is None:
        raise QazlmError("multimodal: this model has no vision encoder; give it a sound instead")
    if audio is not None and model.audio is None:
        raise QazlmError("multimodal: this model has no audio encoder; give it a picture instead")
    item = {"modality": "image", "question": question, "image": image.convert("RGB")} if image is not None else \
        {"modality": "audio", "question": question, "mel": log_mel([audio])[0]}
    return answer_items(model, [item], "model", max_new_tokens=max_new_tokens)[0]


def ask(model_dir: str | Path, question: str, image: str | None = None, audio: str | None = None,
        max_new_tokens: int = 32) -> str:
    from qazlm.experiments.multimodal.model import load
    from qazlm.experiments.multimodal.speech import read_audio

    if (image is None) == (audio is None):
        raise QazlmError("multimodal ask: give --image FILE or --audio FILE (one)")
    picture = read_image(image) if image is not None else None
    sound = read_audio(audio) if audio is not None else None
    return answer(load(model_dir), question, picture, sound, max_new_tokens)


def read_image(source: str | Path | bytes):
    """A picture from a file path or its bytes, as RGB."""
    from PIL import Image, UnidentifiedImageError

    name = "the image" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise QazlmError(f"{name}: not a readable picture ({type(e).__name__}); give a PNG or JPEG file") from None
