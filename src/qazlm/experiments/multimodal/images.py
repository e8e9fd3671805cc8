"""Images the project draws itself (licensed by construction) with questions and answers in kk/ru/en.

Each picture is a white square with 1-4 copies of one coloured shape (colour, shape, count and side are known
by construction), or a word or number printed in one of several fonts. Questions: the colour, the shape, how
many, which side (one shape), what is written (read out letter by letter), and a caption. The held-out split
uses colour x shape combinations and words that the training split never shows, so a model that answers them
has learned the parts, not the pictures. Eight colours and five shapes, one combination per colour held out:
every colour is seen with four shapes and every shape with six or seven colours, so colour never predicts
shape in training (with five colours and three shapes it did, and the model answered held-out shapes from
the colour).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.paths import SAMPLE_DIR

LANGS = ("kk", "ru", "en")
SHAPES = {"circle": ("дөңгелек", "круг", "circle"), "square": ("шаршы", "квадрат", "square"),
          "triangle": ("үшбұрыш", "треугольник", "triangle"), "diamond": ("ромб", "ромб", "diamond"),
          "cross": ("айқыш", "крест", "cross")}
COLOURS = {"red": ((220, 30, 30), ("қызыл", "красный", "red")), "green": ((30, 160, 60), ("жасыл", "зелёный", "green")),
           "blue": ((30, 70, 220), ("көк", "синий", "blue")), "yellow": ((235, 200, 0), ("сары", "жёлтый", "yellow")),
           "black": ((20, 20, 20), ("қара", "чёрный", "black")),
           "orange": ((250, 130, 20), ("қызғылт сары", "оранжевый", "orange")),
           "purple": ((140, 40, 180), ("күлгін", "фиолетовый", "purple")),
           "brown": ((120, 70, 30), ("қоңыр", "коричневый", "brown"))}
# colour k with shape k mod 5: each colour held out once, each shape with one or two colours
HELDOUT_COMBOS = {(c, list(SHAPES)[k % len(SHAPES)]) for k, c in enumerate(COLOURS)}
WORD_LETTERS = {"kk": "а-яёәғқңөұүһі", "ru": "а-яё", "en": "a-z"}
WORDS_PER_LANG = 1500
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
ASK = {
    "colour": ("Суреттегі пішін қандай түсті?", "Какого цвета фигура на картинке?", "What colour is the shape?"),
    "shape": ("Суретте қандай пішін бар?", "Какая фигура на картинке?", "What shape is in the picture?"),
    "count": ("Суретте неше пішін бар?", "Сколько фигур на картинке?", "How many shapes are in the picture?"),
    "side": ("Пішін суреттің қай жағында?", "С какой стороны картинки фигура?", "On which side is the shape?"),
    "read": ("Суретте не жазылған? Әріптеп айтыңыз.", "Что написано на картинке? Назовите по буквам.",
             "What is written in the picture? Spell it out."),
    "caption": ("Суретті сипаттаңыз.", "Опишите картинку.", "Describe the picture."),
}
SIDES = {"left": ("сол жақта", "слева", "left"), "right": ("оң жақта", "справа", "right")}
CAPTION = ("Пішін: {shape}, түсі: {colour}, саны: {count}.", "Фигура: {shape}, цвет: {colour}, количество: {count}.",
           "Shape: {shape}, colour: {colour}, count: {count}.")


def is_heldout_word(word: str) -> bool:
    """One word in ten, by a fixed hash: never drawn (or spoken) in training, so reading it is reading."""
    return zlib.crc32(word.encode()) % 10 == 0


@lru_cache(maxsize=1)
def words() -> dict[str, list[str]]:
    """The 1,500 most frequent 3-6 letter words per language of the bundled sample text (data/sample)."""
    out = {}
    for lang, letters in WORD_LETTERS.items():
        counts: Counter = Counter()
        for path in sorted((SAMPLE_DIR / lang).glob("*.txt.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                counts.update(w for w in re.findall(rf"[{letters}]+", fh.read().lower()) if 3 <= len(w) <= 6)
        if not counts:
            raise QazlmError(f"multimodal: no {lang} words under {SAMPLE_DIR / lang}; the bundled sample is missing")
        out[lang] = sorted(w for w, _ in counts.most_common(WORDS_PER_LANG))
    return out


def word_pool(heldout: bool) -> list[tuple[str, str]]:
    """(language, word) pairs of the split."""
    return [(lang, w) for lang, ws in words().items() for w in ws if is_heldout_word(w) == heldout]


@dataclass
class Item:
    image: object            # a PIL image
    lang: str
    task: str
    question: str
    answer: str
    meta: dict


def font(name: str, size: int):
    from PIL import ImageFont

    path = FONT_DIR / name
    if not path.is_file():
        raise QazlmError(f"multimodal: font {path} not found; install Debian's fonts-dejavu-core")
    return ImageFont.truetype(str(path), size)


def draw_shapes(colour: str | tuple, shape: str, count: int, side: str | None, size: int, rng: random.Random):
    """The picture and the centre of every shape drawn (for checks); `colour`: a name of COLOURS or an RGB."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(img)
    r = size // 10
    half = (0, size // 2) if side == "left" else (size // 2, size) if side == "right" else (0, size)
    centres: list[tuple[int, int]] = []
    while len(centres) < count:
        c = (rng.randint(half[0] + r + 1, half[1] - r - 2), rng.randint(r + 1, size - r - 2))
        if all(abs(c[0] - o[0]) > 2 * r + 2 or abs(c[1] - o[1]) > 2 * r + 2 for o in centres):
            centres.append(c)
    rgb = COLOURS[colour][0] if isinstance(colour, str) else colour
    for x, y in centres:
        box = (x - r, y - r, x + r, y + r)
        if shape == "circle":
            pen.ellipse(box, fill=rgb)
        elif shape == "square":
            pen.rectangle(box, fill=rgb)
        elif shape == "triangle":
            pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=rgb)
        elif shape == "diamond":
            pen.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=rgb)
        else:
            w = max(1, r // 3)
            pen.rectangle((x - w, y - r, x + w, y + r), fill=rgb)
            pen.rectangle((x - r, y - w, x + r, y + w), fill=rgb)
    return img, centres


def draw_text(text: str, font_name: str, size: int):
    """`text` in black from the left edge (so the n-th letter is always about as far in), vertically centred,
    at a quarter of the picture's height, smaller when it would not fit."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(img)
    points = size // 4
    while True:
        f = font(font_name, points)
        box = pen.textbbox((0, 0), text, font=f)
        if box[2] - box[0] <= size - 4 or points <= 6:
            break
        points -= 1
    pen.text((2 - box[0], (size - (box[3] - box[1])) // 2 - box[1]), text, fill="black", font=f)
    return img


def nearest_colour(rgb: tuple) -> str:
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c][0], rgb)))


def unnamed_colour(rng: random.Random, shape: str) -> tuple:
    """Any colour (not too pale to see) whose nearest named colour does not make a held-out pair with `shape`."""
    while True:
        rgb = tuple(rng.randint(0, 255) for _ in range(3))
        if sum(rgb) < 600 and (nearest_colour(rgb), shape) not in HELDOUT_COMBOS:
            return rgb


def shape_item(rng: random.Random, heldout: bool, lang: str, size: int) -> Item:
    """Copies of one shape. Training questions about shape, count or side show three times in four a colour without a
    name (outside every held-out pair), so the colour never tells the shape: taught on named colours alone, the
    encoder learned colour-shape pairs and answered a held-out pair's shape from its colour."""
    combos = [(c, s) for c in COLOURS for s in SHAPES if ((c, s) in HELDOUT_COMBOS) == heldout]
    colour, shape = rng.choice(combos)
    task = rng.choice(("colour", "shape", "count", "side", "caption"))
    count = 1 if task == "side" else rng.randint(1, 4)
    side = rng.choice(tuple(SIDES)) if task == "side" else None
    named = heldout or task in ("colour", "caption") or rng.random() < 0.25
    rgb = COLOURS[colour][0] if named else unnamed_colour(rng, shape)
    colour = colour if named else nearest_colour(rgb)
    img, centres = draw_shapes(rgb, shape, count, side, size, rng)
    i = LANGS.index(lang)
    answer = {"colour": COLOURS[colour][1][i], "shape": SHAPES[shape][i], "count": str(count),
              "side": SIDES[side][i] if side else "",
              "caption": CAPTION[i].format(shape=SHAPES[shape][i], colour=COLOURS[colour][1][i], count=count)}[task]
    return Item(img, lang, task, ASK[task][i], answer,
                {"colour": colour, "named": named, "rgb": rgb, "shape": shape, "count": count, "side": side,
                 "centres": centres})


def spell(text: str) -> str:
    """The answer to a reading question: the letters one by one ("кітап" -> "к і т а п"). Our tokenizer has a
    token for (nearly) every letter, so each answer token is one letter the picture shows; a whole-word
    answer would ask a small model to compose the subword tokens of words it has never seen."""
    return " ".join(text)


def unspell(reply: str) -> str:
    return "".join(reply.split())


@lru_cache(maxsize=1)
def letters() -> dict[str, str]:
    """Each language's letters, as its words use them."""
    return {lang: "".join(sorted(set("".join(ws)))) for lang, ws in words().items()}


def pseudo_word(rng: random.Random) -> str:
    """3-6 random letters of one language, never a held-out word (the split's own hash rule)."""
    abc = letters()[rng.choice(LANGS)]
    while True:
        text = "".join(rng.choice(abc) for _ in range(rng.randint(3, 6)))
        if not is_heldout_word(text):
            return text


def text_item(rng: random.Random, heldout: bool, lang: str, size: int) -> Item:
    """A printed word (any of the three languages: reading is not translation) or, in training, also random
    letters and numbers; the answer spells it. Random letters take a third of training: on words alone the
    model read seen words far better than unseen ones (docs/multimodal.md), i.e. it half-recalled words
    instead of reading letters."""
    pick = 0.0 if heldout else rng.random()
    if pick < 0.5:
        text = rng.choice(word_pool(heldout))[1]
    elif pick < 0.85:
        text = pseudo_word(rng)
    else:
        text = str(rng.randint(0, 999))
    font_name = rng.choice(FONTS)
    return Item(draw_text(text, font_name, size), lang, "read", ASK["read"][LANGS.index(lang)], spell(text),
                {"text": text, "font": font_name})


def make_items(n: int, split: str = "train", seed: int = 0, size: int = 64) -> list[Item]:
    """`n` items of `split` ("train" or "heldout"), languages and kinds evenly mixed; same seed, same items."""
    if split not in ("train", "heldout"):
        raise QazlmError(f"multimodal: split {split!r}; use train or heldout")
    rng = random.Random(f"{seed}:{split}")
    make = (shape_item, shape_item, text_item)
    return [make[k % 3](rng, split == "heldout", LANGS[(k // 3) % 3], size) for k in range(n)]


def write_dataset(out_dir: str | Path, n_train: int, n_heldout: int, seed: int = 0, size: int = 64) -> dict:
    """PNG files + train.jsonl / heldout.jsonl (image path, lang, task, question, answer, meta), atomically."""
    from qazlm.io import atomic_dir

    out = Path(out_dir)
    counts = {}
    with atomic_dir(out) as tmp:
        for split, n in (("train", n_train), ("heldout", n_heldout)):
            (tmp / split).mkdir()
            rows = []
            for k, it in enumerate(make_items(n, split, seed, size)):
                name = f"{split}/{k:06d}.png"
                it.image.save(tmp / name)
                rows.append({"image": name, "lang": it.lang, "task": it.task, "question": it.question,
                             "answer": it.answer, "meta": {k2: v for k2, v in it.meta.items() if k2 != "centres"}})
            (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                                encoding="utf-8")
            counts[split] = len(rows)
    return counts
