"""Speech the project synthesizes itself with espeak-ng (licensed by construction), with kk/ru/en questions.

Three kinds of clip, each spoken by espeak-ng's kk, ru or en-us voice at several speeds, pitches and voice
variants: a spoken command from a closed set of ten per language ("жарықты қос", "включи свет", "open the
door"), a single word, and a number (answered in digits). Held out: commands and numbers in two voice
variants training never hears, and words training never hears (the images' held-out words). Features are
Whisper's log-mel spectrogram (transformers' WhisperFeatureExtractor), two seconds per clip.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qazlm.errors import QazlmError
from qazlm.experiments.multimodal.images import LANGS, word_pool

SAMPLE_RATE = 16_000
SECONDS = 2                       # the encoder's window: Whisper's 30 s cut to what a command needs
MEL_BINS = 80
VOICES = {"kk": "kk", "ru": "ru", "en": "en-us"}
# espeak-ng voice variants ("" = the default): many in training, so a new voice is one more of a kind
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m8", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt3",
                  "croak", "adam", "Andy", "Annie", "belinda", "benjamin", "david", "edward", "john", "linda", "max",
                  "paul", "robert", "steph", "quincy")
HELDOUT_VARIANTS = ("m7", "f5")
SPEEDS = (130, 150, 170, 190)     # words per minute
PITCHES = (35, 50, 65)
COMMANDS = {
    "kk": ("жарықты қос", "жарықты өшір", "есікті аш", "есікті жап", "музыканы қос", "дыбысты көтер",
           "дыбысты азайт", "тоқта", "алға жүр", "артқа қайт"),
    "ru": ("включи свет", "выключи свет", "открой дверь", "закрой дверь", "включи музыку", "сделай громче",
           "сделай тише", "стоп", "иди вперёд", "вернись назад"),
    "en": ("turn on the light", "turn off the light", "open the door", "close the door", "play music",
           "volume up", "volume down", "stop", "go forward", "go back"),
}
ASK = {
    "command": ("Қандай команда айтылды?", "Какая команда прозвучала?", "Which command was spoken?"),
    "word": ("Қандай сөз айтылды?", "Какое слово прозвучало?", "Which word was spoken?"),
    "number": ("Қандай сан айтылды? Цифрмен жазыңыз.", "Какое число прозвучало? Напишите цифрами.",
               "Which number was spoken? Write it in digits."),
}
TASK_SHARES = (("command", 0.4), ("word", 0.4), ("number", 0.2))


@dataclass
class Clip:
    lang: str
    task: str
    text: str          # what espeak-ng says
    answer: str
    voice: str         # espeak-ng voice, e.g. "kk+f2"
    speed: int
    pitch: int

    @property
    def question(self) -> str:
        return ASK[self.task][LANGS.index(self.lang)]


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise QazlmError("multimodal: espeak-ng not found; install Debian's espeak-ng (make test does it as root)")
    return path


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's waveform of `text`, float32 in [-1, 1] at 16 kHz."""
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.wav"
        done = subprocess.run([espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                              capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            raise QazlmError(f"multimodal: espeak-ng -v {voice} failed: {done.stderr.strip()[:200]}")
        with wave.open(str(out)) as w:
            rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    audio = pcm.astype(np.float32) / 32768.0
    return resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32) if rate != SAMPLE_RATE else audio


def feature_extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=MEL_BINS, sampling_rate=SAMPLE_RATE, chunk_length=SECONDS)


def log_mel(waves: list[np.ndarray]) -> np.ndarray:
    """[N, 80, 200] Whisper log-mel features (padded or cut to SECONDS)."""
    return feature_extractor()(waves, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"]


def make_clips(n: int, split: str = "train", seed: int = 0) -> list[Clip]:
    """`n` clips of `split`, languages in turn, tasks by TASK_SHARES; same seed, same clips."""
    if split not in ("train", "heldout"):
        raise QazlmError(f"multimodal: split {split!r}; use train or heldout")
    rng = random.Random(f"speech:{seed}:{split}")
    heldout = split == "heldout"
    pools = {lang: [w for lg, w in word_pool(heldout) if lg == lang] for lang in LANGS}
    tasks, weights = zip(*TASK_SHARES)
    clips = []
    for k in range(n):
        lang = LANGS[k % 3]
        task = rng.choices(tasks, weights)[0]
        # held-out commands and numbers: voices never heard; held-out words: words never heard
        variants = HELDOUT_VARIANTS if heldout and task != "word" else TRAIN_VARIANTS
        variant = rng.choice(variants)
        if task == "command":
            text = answer = rng.choice(COMMANDS[lang])
        elif task == "word":
            text = answer = rng.choice(pools[lang])
        else:
            text = answer = str(rng.randint(0, 99))
        clips.append(Clip(lang, task, text, answer, VOICES[lang] + (f"+{variant}" if variant else ""),
                          rng.choice(SPEEDS), rng.choice(PITCHES)))
    return clips


def synthesize_all(clips: list[Clip], workers: int = 4) -> list[np.ndarray]:
    with ThreadPoolExecutor(workers) as pool:   # espeak-ng runs as a child process: threads overlap them
        return list(pool.map(lambda c: synthesize(c.text, c.voice, c.speed, c.pitch), clips))


def write_dataset(out_dir: str | Path, n_train: int, n_heldout: int, seed: int = 0, progress=None) -> dict:
    """<out>/{train,heldout}.jsonl + .mel.npy (float16 log-mel, no pickle) + a few example WAVs, atomically.
    Clips longer than the window are counted and set aside (never cut silently)."""
    from qazlm.io import atomic_dir

    out = Path(out_dir)
    report = {}
    with atomic_dir(out) as tmp:
        for split, n in (("train", n_train), ("heldout", n_heldout)):
            clips = make_clips(n, split, seed)
            waves = synthesize_all(clips)
            keep = [k for k, w in enumerate(waves) if len(w) <= SECONDS * SAMPLE_RATE]
            mel = np.concatenate([log_mel([waves[k] for k in keep[i:i + 256]]) for i in range(0, len(keep), 256)]
                                 or [np.zeros((0, MEL_BINS, SECONDS * 100), np.float32)])
            np.save(tmp / f"{split}.mel.npy", mel.astype(np.float16), allow_pickle=False)
            rows = [{**clips[k].__dict__, "question": clips[k].question} for k in keep]
            (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                encoding="utf-8")
            report[split] = {"clips": len(keep), "too_long": n - len(keep)}
            if progress:
                progress(split, report[split])
        (tmp / "examples").mkdir()
        for k, clip in enumerate(make_clips(6, "train", seed)[:6]):
            write_wav(tmp / "examples" / f"{k}_{clip.lang}_{clip.task}.wav",
                      synthesize(clip.text, clip.voice, clip.speed, clip.pitch))
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())


def read_audio(path: str | Path | bytes) -> np.ndarray:
    """A 16-bit PCM WAV file (a path or its bytes) as float32 at 16 kHz (mono; the first channel of stereo)."""
    import io

    from scipy.signal import resample_poly

    if isinstance(path, bytes):
        source, path = io.BytesIO(path), "the audio"
    else:
        source = str(path)
    try:
        with wave.open(source) as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    except (OSError, wave.Error, EOFError) as e:
        raise QazlmError(f"{path}: not a readable WAV file ({e}); give a 16-bit PCM .wav") from None
    if width != 2:
        raise QazlmError(f"{path}: {8 * width}-bit samples; give a 16-bit PCM .wav (sox in.wav -b 16 out.wav)")
    audio = np.frombuffer(raw, dtype=np.int16).reshape(-1, channels)[:, 0].astype(np.float32) / 32768.0
    return resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32) if rate != SAMPLE_RATE else audio
