"""`python -m qazlm.experiments.multimodal data|train|eval|ask|serve` — the experiment's own command (the core CLI
never imports experiments)."""

from __future__ import annotations

import argparse
import json
import sys

from qazlm.errors import QazlmError

EXAMPLES = {
    "data": "python -m qazlm.experiments.multimodal data -o runs/mm/speech --train 9000 --heldout 450",
    "train": "python -m qazlm.experiments.multimodal train --lm runs/tiny/sft/final --speech-data runs/mm/speech "
             "-o runs/mm/train --set encoder_steps=2000 --set full_steps=2000",
    "eval": "python -m qazlm.experiments.multimodal eval runs/mm/train/final --speech-data runs/mm/speech "
            "-o runs/mm/eval",
    "ask": "python -m qazlm.experiments.multimodal ask runs/mm/train/final --image cat.png "
           "\"Суретте не жазылған?\"",
    "serve": "python -m qazlm.experiments.multimodal serve runs/mm/train/final --port 8001  # web chat at /",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qazlm.experiments.multimodal",
                                description="Images and speech into the trilingual model (docs/multimodal.md).")
    sub = p.add_subparsers(dest="verb", required=True)

    def verb(name: str, help_: str):
        return sub.add_parser(name, help=help_, description=help_, epilog="example:\n  " + EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    d = verb("data", "synthesize the speech set with espeak-ng (images are drawn during training)")
    d.add_argument("-o", "--out", required=True)
    d.add_argument("--train", type=int, default=9000, help="training clips (default 9000)")
    d.add_argument("--heldout", type=int, default=450, help="held-out clips (default 450)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--images", type=int, default=0, help="also write this many train PNGs (+ a third held out) "
                                                         "to <out>/images, to look at")
    t = verb("train", "two-stage training: projectors (+ encoders from scratch), then + the language model")
    t.add_argument("--lm", default="", help="the text model: our model folder or an HF Qwen3/Llama folder "
                                            "(e.g. runs/tiny/sft/final); not needed with --set init=FOLDER")
    t.add_argument("--speech-data", default="", help="folder written by `data` (for the audio modality)")
    t.add_argument("--config", help="TOML file with a [multimodal] table")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set full_steps=900 --set modalities=image")
    t.add_argument("-o", "--out", required=True)
    e = verb("eval", "held-out scores beside chance, the blind model and the text-only parent")
    e.add_argument("model")
    e.add_argument("--speech-data", default=None)
    e.add_argument("--images", type=int, default=540, help="held-out image questions (default 540)")
    e.add_argument("--speech", type=int, default=450, help="held-out clips at most (default 450)")
    e.add_argument("-o", "--out", required=True)
    a = verb("ask", "answer one question about an image or a WAV file")
    a.add_argument("model")
    a.add_argument("question")
    group = a.add_mutually_exclusive_group(required=True)
    group.add_argument("--image", help="a picture (PNG/JPEG; resized to the encoder's size)")
    group.add_argument("--audio", help="a 16-bit PCM WAV file (cut to two seconds)")
    a.add_argument("--max-new-tokens", type=int, default=32)
    s = verb("serve", "the web chat and an OpenAI-style chat route that take a picture or a WAV")
    s.add_argument("model")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    s.add_argument("--port", type=int, default=8001)
    return p


def _data(args) -> int:
    from qazlm.experiments.multimodal import images, speech

    for flag, value in (("--train", args.train), ("--heldout", args.heldout), ("--images", args.images)):
        if value < 0:
            raise QazlmError(f"{flag} {value}: give a count >= 0")
    report = speech.write_dataset(args.out, args.train, args.heldout, args.seed,
                                  progress=lambda split, r: print(f"data: {split}: {r}", flush=True))
    if args.images:
        images.write_dataset(f"{args.out}/images", args.images, max(1, args.images // 3), args.seed)
    print(json.dumps(report))
    return 0


def _train(args) -> int:
    from qazlm.config import load_config
    from qazlm.experiments.multimodal.train import MultimodalTrainConfig, train

    given = {"lm": args.lm, "speech_data": args.speech_data}
    overrides = [f"{k}={v}" for k, v in given.items() if v] + args.set
    cfg = load_config(MultimodalTrainConfig, args.config, section="multimodal" if args.config else None,
                      overrides=overrides)
    print(f"multimodal train: -> {train(cfg, args.out)}")
    return 0


def _eval(args) -> int:
    from qazlm.experiments.multimodal.evaluate import evaluate

    for flag, value in (("--images", args.images), ("--speech", args.speech)):
        if value < 1:
            raise QazlmError(f"{flag} {value}: give a count of 1 or more")
    report = evaluate(args.model, args.out, args.speech_data, args.images, args.speech)
    print((__import__("pathlib").Path(args.out) / "report.md").read_text(encoding="utf-8"))
    print(json.dumps({"targets": report["targets"]}))
    return 0


def _ask(args) -> int:
    from qazlm.experiments.multimodal.ask import ask

    print(ask(args.model, args.question, image=args.image, audio=args.audio, max_new_tokens=args.max_new_tokens))
    return 0


def _serve(args) -> int:
    from qazlm.experiments.multimodal.serve import serve

    if not 1 <= args.port <= 65535:
        raise QazlmError(f"--port {args.port}: give 1-65535")
    serve(args.model, args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"data": _data, "train": _train, "eval": _eval, "ask": _ask, "serve": _serve}[args.verb](args)
    except QazlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
