"""The multimodal experiment (qazlm.experiments.multimodal): pixel shuffle and frame stacking, the spliced
embeddings, the chat-template prompts and their loss mask, the head-only-where-needed path pinned to the
model's own forward, espeak-ng speech, two-stage training (golden first loss, stage-1 resume, LoRA merged),
the model folder, `ask` and `eval`, and bad input."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from qazlm.errors import QazlmError

pytest.importorskip("PIL")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None and not os.environ.get("QAZLM_REQUIRE_ESPEAK"),
                                  reason="espeak-ng not installed (make test installs it as root)")

# First logged losses of the short run below (2-layer LM, 1-layer encoders, seed 0): any change to the
# prompts, the loss mask, the splice, the projectors or the encoders' configs moves them.
GOLDEN_FIRST = {"loss_image": 7.0864, "loss_audio": 7.152}
SMALL = {"shapes.vision_width": 32, "shapes.vision_layers": 1, "shapes.vision_heads": 2, "shapes.audio_width": 32,
         "shapes.audio_layers": 1, "shapes.audio_heads": 2}


@pytest.fixture(scope="module")
def lm(tmp_path_factory, corpus):
    """A qazlm tokenizer (with the reserved placeholder tokens) and a random 2-layer model folder."""
    from transformers import AutoTokenizer

    from qazlm.model.io import save_model_folder
    from qazlm.model.presets import preset
    from qazlm.model.transformer import build_model
    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    root = tmp_path_factory.mktemp("mm_lm")
    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=1200), root / "tok", show_progress=False)
    tok = AutoTokenizer.from_pretrained(root / "tok")
    model = build_model(preset("tiny", len(tok), n_layers=2, d_model=64, n_heads=2, n_kv_heads=1, head_dim=32,
                               ffn_dim=128), seed=0)
    return save_model_folder(model, root / "lm", root / "tok")


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        if os.environ.get("QAZLM_REQUIRE_ESPEAK"):
            pytest.fail("espeak-ng is not installed but QAZLM_REQUIRE_ESPEAK is set (CI): make test installs it")
        pytest.skip("espeak-ng not installed")
    from qazlm.experiments.multimodal.speech import write_dataset

    out = tmp_path_factory.mktemp("mm_speech") / "speech"
    assert write_dataset(out, 24, 12) == {"train": {"clips": 24, "too_long": 0},
                                          "heldout": {"clips": 12, "too_long": 0}}
    return out


@pytest.fixture(scope="module")
def tiny_mm(lm, speech_dir, tmp_path_factory):
    """A multimodal folder trained for two steps (image and audio): enough for the plumbing."""
    from qazlm.experiments.multimodal.train import train

    return train(small_config(lm, speech_dir, projector_steps=1, full_steps=1),
                 tmp_path_factory.mktemp("mm_tiny") / "run", log=lambda _: None)


def small_config(lm, speech_dir, **kw):
    from qazlm.config import apply_overrides, from_dict
    from qazlm.experiments.multimodal.train import MultimodalTrainConfig

    base = {"lm": str(lm), "speech_data": str(speech_dir), "projector_steps": 2, "full_steps": 2, "batch": 6,
            "log_every": 2, "warmup": 0, "threads": 2}
    data = apply_overrides({**base, **kw}, [f"{k}={v}" for k, v in SMALL.items()])
    return from_dict(MultimodalTrainConfig, data)


def test_pixel_shuffle_and_frame_stacking():
    from qazlm.experiments.multimodal.model import pixel_shuffle, stack_frames

    grid = torch.arange(16.0).view(1, 16, 1)             # a 4x4 patch grid, one channel: value = patch index
    out = pixel_shuffle(grid, 2)
    assert out.shape == (1, 4, 4)
    assert out[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]   # 2x2 blocks
    with pytest.raises(QazlmError, match="square grid"):
        pixel_shuffle(torch.zeros(1, 12, 3), 2)
    frames = torch.arange(10.0).view(1, 5, 2)
    stacked = stack_frames(frames, 2)
    assert stacked.shape == (1, 3, 4) and stacked[0, 0].tolist() == [0, 1, 2, 3]
    assert stacked[0, 2].tolist() == [8, 9, 0, 0]   # padded up to a whole group


def build_small(lm, speech_dir=None):
    from qazlm.experiments.multimodal.train import MultimodalTrainConfig, build

    cfg = MultimodalTrainConfig(lm=str(lm), speech_data=str(speech_dir or ""), modalities=["image", "audio"])
    for k, v in SMALL.items():
        setattr(cfg.shapes, k.split(".")[1], v)
    return build(cfg)


def test_prompts_are_the_chat_template_and_only_answers_are_trained(lm):
    from qazlm.experiments.multimodal.model import IMAGE_TOKEN
    from qazlm.experiments.multimodal.train import Prompts, collate

    model = build_small(lm)
    prompts = Prompts(model.tokenizer, model.image_tokens, model.audio_tokens)
    question, answer = "Суреттегі пішін қандай түсті?", "қызыл"
    p, a = prompts.prompt("image", question), prompts.answer(answer)
    whole = model.tokenizer.apply_chat_template(
        [{"role": "user", "content": IMAGE_TOKEN * 16 + "\n" + question}, {"role": "assistant", "content": answer}],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert (p + a) == whole["input_ids"][:len(p + a)]      # the template adds only the closing newline
    assert p.count(model.image_id) == model.image_tokens == 16
    mask = whole["assistant_masks"][:len(p + a)]
    assert [i for i, m in enumerate(mask) if m] == list(range(len(p), len(p + a)))   # answer + <|im_end|>
    ids, targets = collate([(p, a), (p[:5], a)], pad_id=1)
    assert ids.shape == (2, len(p + a)) and ids[1, 5 + len(a):].eq(1).all()
    assert targets[0, len(p) - 1:len(p) + len(a) - 1].tolist() == a and (targets[0] != -100).sum() == len(a)


def test_embeddings_spliced_in_order_and_head_path_equals_forward(lm):
    from qazlm.experiments.multimodal.model import last_hidden

    torch.manual_seed(0)
    model = build_small(lm).eval()
    n = model.image_tokens
    ids = torch.tensor([[5] * 3 + [model.image_id] * n + [7] * 2] * 2)
    pixels = torch.randn(2, 3, 64, 64)
    x = model.embed(ids, pixel_values=pixels)
    feats = model.image_features(pixels)
    assert torch.equal(x[:, 3:3 + n], feats) and torch.equal(x[:, :3], model.lm.embed_tokens(ids[:, :3]))
    with torch.no_grad():
        ours = torch.nn.functional.linear(last_hidden(model.lm, x), model.lm.output_weight())
        theirs = model.lm(inputs_embeds=x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    with pytest.raises(QazlmError, match="32 image placeholders for 1 x 16"):
        model.embed(ids, pixel_values=pixels[:1])
    with pytest.raises(QazlmError, match="no image was given"):
        model.embed(ids)


def test_every_answer_weighs_the_same_in_the_loss(lm):
    """A 6-token answer and a 1-token answer count equally: the loss is the mean of per-answer means."""
    torch.manual_seed(0)
    model = build_small(lm).eval()
    ids = torch.randint(10, 200, (2, 9))
    targets = torch.full((2, 9), -100)
    targets[0, 2:8], targets[1, 4] = ids[0, 3:9], ids[1, 5]
    with torch.no_grad():
        logits = model(ids)
        ce = [torch.nn.functional.cross_entropy(logits[r][targets[r] != -100], targets[r][targets[r] != -100])
              for r in range(2)]
        torch.testing.assert_close(model(ids, targets), (ce[0] + ce[1]) / 2)


@needs_espeak
def test_speech_clips(speech_dir):
    from qazlm.experiments.multimodal.speech import COMMANDS, HELDOUT_VARIANTS, make_clips, synthesize
    from qazlm.experiments.multimodal.train import read_speech

    rows, mel = read_speech(speech_dir, "heldout")
    assert mel.shape == (12, 80, 200) and mel.dtype.name == "float16" and len(rows) == 12
    assert {r["lang"] for r in rows} == {"kk", "ru", "en"}
    for r in rows:
        if r["task"] == "command":
            assert r["answer"] in COMMANDS[r["lang"]] and r["voice"].split("+")[-1] in HELDOUT_VARIANTS
    train = make_clips(300, "train")
    assert not any(c.voice.split("+")[-1] in HELDOUT_VARIANTS for c in train)
    assert {c.task for c in train} == {"command", "word", "number"}
    audio = synthesize("жарықты қос", "kk", 150, 50)
    assert audio.dtype.name == "float32" and 0.3 < len(audio) / 16000 < 2 and abs(audio).max() > 0.05
    assert len(list((speech_dir / "examples").glob("*.wav"))) == 6


@needs_espeak
def test_two_stage_training_folder_resume_and_ask(lm, speech_dir, tmp_path):
    from qazlm.experiments.multimodal.__main__ import main
    from qazlm.experiments.multimodal.model import load
    from qazlm.experiments.multimodal.train import train

    logged = []
    cfg = small_config(lm, speech_dir)
    final = train(cfg, tmp_path / "run", log=logged.append)
    first = logged[0]
    assert first["stage"] == "projector"
    for key, value in GOLDEN_FIRST.items():
        assert first[key] == pytest.approx(value, abs=2e-3), (key, first[key], first)
    assert [r["stage"] for r in logged] == ["projector", "full"]
    meta = json.loads((final / "multimodal.json").read_text())
    assert meta["image_tokens"] == 16 and meta["audio_tokens"] == 25 and meta["lineage"]["stage"] == "full"
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    # stage 1 trains the projectors and the (from-scratch) encoders, never the language model
    stage1, parent = load(tmp_path / "run" / "stage1"), load(final)
    from qazlm.model.io import load_model_folder

    base = load_model_folder(lm)
    assert torch.equal(stage1.lm.embed_tokens.weight, base.embed_tokens.weight)
    assert not torch.equal(parent.lm.layers[0].mlp.up_proj.weight, base.layers[0].mlp.up_proj.weight)
    # the LM inside is an ordinary qazlm model folder
    assert load_model_folder(final / "lm").cfg.n_layers == 2
    # a rerun after a kill starts at stage 2
    again = []
    train(cfg, tmp_path / "run", log=again.append)
    assert [r["stage"] for r in again if isinstance(r, dict)] == ["full"] and "stage 1 done" in again[0]
    # going on from a finished folder: stage 2 only, the parent (text-only baseline) kept, the losses appended
    more = train(small_config("", speech_dir, init=str(final)), tmp_path / "more", log=lambda _: None)
    lineage = json.loads((more / "multimodal.json").read_text())["lineage"]
    assert lineage["parent"] == str(lm.resolve()) and [r["stage"] for r in lineage["metrics"]] == [
        "projector", "full", "full"]
    # LoRA in stage 2: merged, so the folder holds plain weights
    lora = train(small_config(lm, speech_dir, lora_rank=4), tmp_path / "lora", log=lambda _: None)
    assert not any("lora" in k for k in load(lora).lm.state_dict())
    # ask: one picture, one WAV
    from qazlm.experiments.multimodal.images import draw_shapes

    img, _ = draw_shapes("red", "circle", 2, None, 64, __import__("random").Random(0))
    img.save(tmp_path / "red.png")
    assert main(["ask", str(final), "--image", str(tmp_path / "red.png"), "What colour is the shape?",
                 "--max-new-tokens", "3"]) == 0
    wav = next((speech_dir / "examples").glob("*.wav"))
    assert main(["ask", str(final), "--audio", str(wav), "Which command was spoken?", "--max-new-tokens", "3"]) == 0


@needs_espeak
def test_eval_report(tiny_mm, speech_dir, tmp_path):
    from qazlm.experiments.multimodal.evaluate import CHANCE, evaluate

    report = evaluate(tiny_mm, tmp_path / "eval", str(speech_dir), n_images=12, n_speech=9, log=lambda _: None)
    assert report["n"] == 21
    assert set(report["model"]) >= {"colour", "read", "command"} or set(report["model"]) >= {"read"}
    for name in ("model", "blind", "text-only"):
        for task, langs in report[name].items():
            for row in langs.values():
                assert 0 <= row["exact"] <= 1 and row["n"] > 0
                if task in ("read", "word"):
                    assert row["cer"] >= 0
    assert set(report["targets"]) == {"image shapes (colour/shape/count) exact", "reading CER",
                                      "spoken command accuracy (each language)"}
    assert CHANCE["colour"] == 1 / 8 and CHANCE["shape"] == 1 / 5
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "| target |" in md and "text-only" in md
    for png in ("scores.png", "examples.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 5000


def test_cer_and_scoring():
    from qazlm.experiments.multimodal.evaluate import cer, score

    assert cer("алма", "алма") == 0 and cer("алмa", "алма") == 0.25 and cer("", "кот") == 1
    items = [{"task": "read", "lang": "kk", "answer": "алма"}, {"task": "colour", "lang": "en", "answer": "red"}]
    s = score(items, ["АЛМА", "Red."])
    assert s["read"]["kk"] == {"n": 1, "exact": 1.0, "cer": 0.0} and s["colour"]["en"]["exact"] == 1.0
    spelled = [{"task": "read", "lang": "kk", "answer": "а л м а"}] * 2   # reading answers spell; CER on letters
    assert score(spelled, ["а л м а", "а л м"])["read"]["kk"] == {"n": 2, "exact": 0.5, "cer": 0.125}


def test_report_shows_the_encoders_own_heldout_accuracy():
    from qazlm.experiments.multimodal.evaluate import markdown, targets

    report = {"model_dir": "m", "parent": "p", "n": 0, "targets": targets({}), "model": {}, "blind": {},
              "text-only": {}, "examples": [], "encoder_probes": {"image": {"shape": 0.93, "chars": 0.75}}}
    md = markdown(report)
    assert "| image | shape | 93.0% |" in md and "| image | chars | 75.0% |" in md


def test_bad_input(lm, tmp_path):
    from qazlm.experiments.multimodal.__main__ import main
    from qazlm.experiments.multimodal.model import load
    from qazlm.experiments.multimodal.train import MultimodalTrainConfig

    with pytest.raises(QazlmError, match="not a multimodal model folder"):
        load(lm)
    with pytest.raises(QazlmError, match="give --lm"):
        MultimodalTrainConfig()
    with pytest.raises(QazlmError, match="modalities"):
        MultimodalTrainConfig(lm=str(lm), modalities=["video"])
    with pytest.raises(QazlmError, match="read_share"):
        MultimodalTrainConfig(lm=str(lm), read_share=float("nan"))
    with pytest.raises(QazlmError, match="device='tpu'"):
        MultimodalTrainConfig(lm=str(lm), device="tpu")
    if not torch.cuda.is_available():
        from qazlm.runs import resolve_device

        with pytest.raises(QazlmError, match=r"multimodal train: device = 'cuda:1' but no CUDA GPU"):
            resolve_device("cuda:1", "multimodal train:")
    (tmp_path / "bad.png").write_text("not a picture")
    from qazlm.experiments.multimodal.ask import read_image

    with pytest.raises(QazlmError, match="not a readable picture"):
        read_image(tmp_path / "bad.png")
    from qazlm.experiments.multimodal.speech import read_audio

    with pytest.raises(QazlmError, match="not a readable WAV"):
        read_audio(tmp_path / "bad.png")
    assert main(["train", "--lm", str(lm), "-o", str(tmp_path / "o"), "--set", "modalities=audio",
                 "--set", "projector_steps=1", "--set", "full_steps=0"]) == 2   # audio without --speech-data
    empty = tmp_path / "empty_speech"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    np.save(empty / "train.mel.npy", np.zeros((0, 80, 200), np.float16))
    from qazlm.experiments.multimodal.train import read_speech

    with pytest.raises(QazlmError, match="no train clips"):
        read_speech(empty, "train")


def test_cli_help_has_examples(capsys):
    from qazlm.experiments.multimodal.__main__ import main

    for verb in ("data", "train", "eval", "ask", "serve"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert "example:" in capsys.readouterr().out


def _data_url(img) -> str:
    import base64
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@needs_espeak
def test_server_answers_images_and_sounds_through_the_openai_client(tiny_mm, speech_dir):
    import base64
    import random
    import urllib.error
    import urllib.request

    from openai import BadRequestError, NotFoundError, OpenAI
    from serve_harness import running_app

    from qazlm.experiments.multimodal.ask import answer
    from qazlm.experiments.multimodal.images import draw_shapes
    from qazlm.experiments.multimodal.model import load
    from qazlm.experiments.multimodal.serve import create_app
    from qazlm.experiments.multimodal.speech import read_audio

    img, _ = draw_shapes("blue", "square", 3, None, 64, random.Random(1))
    wav = next((speech_dir / "examples").glob("*.wav")).read_bytes()
    model = load(tiny_mm)
    expected_img = answer(model, "How many shapes are in the picture?", image=img, max_new_tokens=6)
    expected_wav = answer(model, "Which command was spoken?", audio=read_audio(wav), max_new_tokens=6)
    with running_app(create_app(tiny_mm, model_id="mm")) as url:
        client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        listed = client.models.list().data[0]
        assert listed.id == "mm" and listed.model_extra["capabilities"] == ["vision", "audio"]
        question = [{"type": "text", "text": "How many shapes are in the picture?"},
                    {"type": "image_url", "image_url": {"url": _data_url(img)}}]
        asked = [{"role": "user", "content": question}]
        whole = client.chat.completions.create(model="mm", max_tokens=6, messages=asked)
        assert whole.choices[0].message.content == expected_img
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="mm", max_tokens=6, stream=True, messages=[{"role": "user", "content": question}]))
        assert streamed == expected_img
        spoken = [{"type": "text", "text": "Which command was spoken?"},
                  {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}}]
        heard = client.chat.completions.create(model="mm", max_tokens=6, messages=[{"role": "user", "content": spoken}])
        assert heard.choices[0].message.content == expected_wav
        for content, match in (("no picture", "exactly one image_url or input_audio"),
                               ([{"type": "image_url", "image_url": {"url": "http://x/cat.png"}}], "data:image"),
                               ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}], "base64"),
                               ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
                                "not a readable picture")):
            with pytest.raises(BadRequestError, match=match):
                client.chat.completions.create(model="mm", messages=[{"role": "user", "content": content}])
        with pytest.raises(NotFoundError, match="not served"):
            client.chat.completions.create(model="other", messages=[{"role": "user", "content": question}])
        with pytest.raises(urllib.error.HTTPError) as big:
            urllib.request.urlopen(urllib.request.Request(url + "/v1/chat/completions", method="POST",
                                                          data=b"x" * (8 * 1024 * 1024 + 1)), timeout=30)
        assert big.value.code == 413 and b"Traceback" not in big.value.read()
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert "default-src 'none'" in page.headers["content-security-policy"]


@needs_espeak
def test_web_chat_sends_a_picture(tiny_mm, tmp_path):
    """The core server's page, served for a vision model: the Image button appears, a picture is attached,
    shown in the user's bubble, sent as an image_url part, and the reply arrives."""
    import random

    from serve_harness import running_app
    from test_webchat import CHROMIUM_ARGS, _need_browser

    from qazlm.experiments.multimodal.images import draw_shapes
    from qazlm.experiments.multimodal.serve import create_app

    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    img, _ = draw_shapes("red", "circle", 2, None, 64, random.Random(2))
    img.save(tmp_path / "red.png")
    with running_app(create_app(tiny_mm, model_id="mm")) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=CHROMIUM_ARGS)
        page = browser.new_page()
        sent = []
        page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/chat/completions") else None)
        page.goto(url + "/")
        expect(page.locator("#model")).to_have_text("mm")
        expect(page.locator("#attach")).to_be_visible()
        page.set_input_files("#image", str(tmp_path / "red.png"))
        expect(page.locator("#attach.ready")).to_be_visible()
        page.fill("#max-tokens", "4")
        page.fill("#input", "What colour is the shape?")
        page.click("#send")
        page.wait_for_selector(".msg.assistant[data-done]", timeout=30_000)
        assert page.locator(".msg.user img").count() == 1
        parts = sent[0]["messages"][-1]["content"]
        assert parts[0] == {"type": "text", "text": "What colour is the shape?"}
        assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
        assert page.locator(".msg.error").count() == 0
        browser.close()


@needs_espeak
def test_stage0_pretrains_the_encoders_then_llava_keeps_them_frozen(lm, speech_dir, tmp_path):
    from qazlm.experiments.multimodal.encoders import SLOTS, alphabet, audio_labels, char_targets
    from qazlm.experiments.multimodal.model import load
    from qazlm.experiments.multimodal.train import build, train

    ab = alphabet()
    assert {"ә", "ң", "ё", "z", "7"} <= set(ab)
    assert char_targets("ана") == [ab.index("а"), ab.index("н"), ab.index("а"), len(ab), -100, -100]
    assert len(char_targets("абвгдеж")) == SLOTS
    labels = audio_labels([{"task": "command", "lang": "ru", "answer": "стоп"},
                           {"task": "number", "lang": "kk", "answer": "42"}])
    assert labels["command"].tolist() == [17, -100] and labels["number"].tolist() == [-100, 42]
    logged = []
    cfg = small_config(lm, speech_dir, encoder_steps=2)
    final = train(cfg, tmp_path / "run", log=logged.append)
    stages = [r["stage"] for r in logged if isinstance(r, dict)]
    assert stages == ["encoder_image"] * 2 + ["encoder_audio"] * 2 + ["projector", "full"]
    probes = [r["heldout_accuracy"] for r in logged if isinstance(r, dict) and "heldout_accuracy" in r]
    assert set(probes[0]) == {"colour", "shape", "count", "side", "chars"} and set(probes[1]) >= {"command"}
    assert all(0 <= v <= 1 for p in probes for v in p.values())
    fresh, stage1, done = build(cfg), load(tmp_path / "run" / "stage1"), load(final)
    for name in ("vision", "audio"):
        w0, w1, w2 = (dict(getattr(m, name).named_parameters()) for m in (fresh, stage1, done))
        key = next(k for k in w0 if k.endswith("q_proj.weight"))
        assert not torch.equal(w0[key], w1[key])     # stage 0 trained it
        assert torch.equal(w1[key], w2[key])         # stages 1-2 kept it frozen
    # going on from a finished folder: its encoders are pretrained, so frozen unless full_encoder_lr is set
    for lr, trained in ((0.0, False), (1e-3, True)):
        more = load(train(small_config("", speech_dir, init=str(final), full_encoder_lr=lr), tmp_path / f"more{lr}",
                          log=lambda _: None))
        for name in ("vision", "audio"):
            before, after = (dict(getattr(m, name).named_parameters()) for m in (done, more))
            key = next(k for k in before if k.endswith("q_proj.weight"))
            assert torch.equal(before[key], after[key]) != trained, (name, lr)


def test_example_pictures_cover_every_task_and_language():
    from qazlm.experiments.multimodal.evaluate import example_picks
    from qazlm.experiments.multimodal.images import make_items

    items = [{"task": it.task, "lang": it.lang} for it in make_items(540, "heldout")]
    picks = example_picks(items, 12)
    assert len(picks) == 12 and picks[0]["task"] == "read"
    assert {p["task"] for p in picks} == {"read", "colour", "shape", "count", "side", "caption"}
    assert {p["lang"] for p in picks} == {"kk", "ru", "en"}


def test_loss_plot_puts_a_continued_run_after_the_one_it_went_on_from():
    from qazlm.experiments.multimodal.train import loss_segments

    rows = [{"stage": s, "step": k} for s, k in
            [("projector", 1), ("projector", 2), ("full", 1), ("full", 3), ("full", 2), ("full", 4)]]
    assert [(offset, [r["step"] for r in seg]) for offset, seg in loss_segments(rows)] == [
        (0, [1, 2]), (2, [1, 3]), (5, [2, 4])]


def test_pictures_drawn_by_worker_processes_differ_per_worker_and_repeat():
    """A GPU run draws pictures in DataLoader workers; each worker must draw its own (reseeded) pictures,
    the same ones on a rerun, and a run without workers must keep the original seed (the golden losses)."""
    from qazlm.experiments.multimodal.encoders import EncoderImages
    from qazlm.experiments.multimodal.train import stream

    def first_two(workers):
        batches = stream(EncoderImages(64, 0), 3, 0, workers)
        return [next(batches)[0] for _ in range(2)]

    a, b = first_two(2), first_two(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])
    in_process = first_two(0)
    assert torch.equal(in_process[0], EncoderImages(64, 0)(3)[0]) and not torch.equal(in_process[0], a[0])


def test_a_local_pretrained_vision_folder_is_loaded_and_kept_frozen(lm, tmp_path):
    """Hub-form SigLIP weights from a local folder (no download): loaded as they are, frozen in both stages."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from qazlm.experiments.multimodal.model import load
    from qazlm.experiments.multimodal.train import train

    torch.manual_seed(3)
    given = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=32, patch_size=8,
                                                 vision_use_head=False))
    given.save_pretrained(tmp_path / "siglip")
    final = train(small_config(lm, "", modalities=["image"], vision_encoder=str(tmp_path / "siglip")),
                  tmp_path / "run", log=lambda _: None)
    model = load(final)
    assert model.vision.config.image_size == 32 and model.image_tokens == 4    # 4x4 patches, shuffled 2x2
    for name, weight in given.state_dict().items():
        assert torch.equal(model.vision.state_dict()[name], weight), name
