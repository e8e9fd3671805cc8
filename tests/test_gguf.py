"""`qazlm export gguf`: llama.cpp's converter and quantizer on our models and HF folders; llama.cpp tokenizes as
transformers does (Kazakh letters, digits, emoji, mixed scripts, whitespace runs, chat markup), the f32 file
computes our logits, the metadata carries the chat template and the special ids; skip/rebuild; the stage."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from test_eval_helpers import make_hf_folder, make_our_folder  # noqa: E402

from qazlm.gguf.config import GGUFConfig  # noqa: E402
from qazlm.gguf.export import run_gguf  # noqa: E402

CONVERSATION = [{"role": "system", "content": "Тек қазақша жауап бер."},
                {"role": "user", "content": "Алматыда ауа райы қандай?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "weather", "arguments": {"city": "Алматы"}}}]},
                {"role": "tool", "content": "{\"temp_c\": 21}"},
                {"role": "assistant", "content": "Алматыда +21°C."},
                {"role": "user", "content": "Рақмет! And tomorrow?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "Weather now", "parameters": CITY}}]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, corpus):
    """A tokenizer trained by `qazlm.tokenizer.train` (Llama 3 split regex, chat template) in about a second."""
    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    out = tmp_path_factory.mktemp("gguf_tok")
    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=1200), out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tok_dir):
    root = tmp_path_factory.mktemp("gguf")
    model = make_our_folder(tok_dir, root / "ours")
    out = root / "out"
    report = run_gguf(GGUFConfig(model=str(model), out_dir=str(out), types=["f32", "q8_0", "q4_k_m"],
                                 check_sentences=4), log=lambda *_: None)
    return model, out, report


def test_files_and_their_tensor_types(exported):
    _, out, report = exported
    assert sorted(p.name for p in out.glob("*.gguf")) == ["ours-F32.gguf", "ours-Q4_K_M.gguf", "ours-Q8_0.gguf"]
    files = report["files"]
    assert files["f32"]["tensor_types"] == {"F32": files["f32"]["tensor_types"]["F32"]}
    assert "Q8_0" in files["q8_0"]["tensor_types"]
    # width 192 is no multiple of 256: llama.cpp's k-quants fall back to legacy types, as llama-quantize does
    assert set(files["q4_k_m"]["tensor_types"]) - {"F32"} <= {"Q4_K", "Q5_0", "Q6_K", "Q8_0", "Q5_1", "Q4_0"}
    # ...and the report counts them from the tensors' shapes: of the 4 layers x 7 matrices, all but the four
    # ffn_down (rows of ffn_dim 512) are 192 wide; the Q8_0 file is no k-quant
    kquant = files["q4_k_m"]["kquant"]
    assert kquant["tensors"] == 28 and sum(kquant["fallbacks"].values()) == 24
    assert set(kquant["fallbacks"]) <= {"Q5_0", "Q8_0"} and files["q8_0"]["kquant"] is None
    assert {"Q4_K", "Q6_K"} & set(files["q4_k_m"]["tensor_types"])      # the 512-wide rows got the k-quant
    assert ("q4_k_m: 24 of 28 quantized layer tensors have rows that are no multiple of 256"
            in (out / "gguf_report.md").read_text())
    assert files["f32"]["bytes"] > files["q8_0"]["bytes"] > files["q4_k_m"]["bytes"]
    assert (out / "gguf_report.md").read_text().count("| q") >= 2
    assert json.loads((out / "qazlm_stage.json").read_text())["config"]["types"] == ["f32", "q8_0", "q4_k_m"]


def test_the_command_with_its_default_types_then_package_ships_a_file(exported, tmp_path, capfd):
    """`qazlm export gguf MODEL -o OUT` with the default types (f16 first, which no other test builds) and
    `qazlm package ... --gguf FILE --run --repo-id --license` through the command line, as the docs show them."""
    from cli_harness import run_cli

    model = exported[0]
    out = tmp_path / "gguf"
    code, _, err = run_cli(["export", "gguf", model, "-o", out, "--check-sentences", "2"], capfd)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.gguf")) == ["ours-F16.gguf", "ours-Q4_K_M.gguf", "ours-Q8_0.gguf"]
    report = json.loads((out / "gguf_report.json").read_text())
    assert "F16" in report["files"]["f16"]["tensor_types"]
    assert report["files"]["f16"]["bytes"] > report["files"]["q8_0"]["bytes"] > report["files"]["q4_k_m"]["bytes"]
    pkg = tmp_path / "pkg"
    code, printed, err = run_cli(["package", model, "-o", pkg, "--gguf", out / "ours-Q8_0.gguf", "--run", tmp_path,
                                  "--repo-id", "me/qazlm-x", "--license", "mit"], capfd)
    assert code == 0, err
    card = (pkg / "README.md").read_text()
    assert "me/qazlm-x" in card and "license: mit" in card and (pkg / "ours-Q8_0.gguf").is_file()
    assert "not evaluated" in card      # --run points at a folder without reports: no number is invented


def test_llama_cpp_token_ids_equal_ours(exported, tok_dir):
    from transformers import AutoTokenizer

    from qazlm.gguf.check import PARITY_SAMPLES
    from qazlm.gguf.llamacpp import open_gguf, tokenize

    _, out, report = exported
    assert report["parity"]["samples"] == {"lines": len(PARITY_SAMPLES), "identical": len(PARITY_SAMPLES),
                                           "first_mismatch": None}
    for lang in ("kk", "ru", "en"):
        assert report["parity"][lang]["identical"] == report["parity"][lang]["lines"] == 4
    tok = AutoTokenizer.from_pretrained(tok_dir)
    hard = ["ӘәҒғҚқҢңӨөҰұҮүҺһІі", "Ұлттық  банк\t\t2026 жылы 1 234 567 теңге", "🇰🇿🚀 Қазақ-English-Русский",
            "   \n\n  \t ", "x" * 40, "<|im_end|><|im_start|>"]
    with open_gguf(out / "ours-F32.gguf", vocab_only=True) as llm:
        for text in hard:
            assert tokenize(llm, text) == tok(text, add_special_tokens=False)["input_ids"], text
        assert tokenize(llm, "<|im_end|>") == [tok.convert_tokens_to_ids("<|im_end|>")]  # one special token


def test_metadata_chat_template_and_special_ids(exported, tok_dir):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    from qazlm.gguf.llamacpp import open_gguf
    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE, inference_template

    _, out, report = exported
    tok = AutoTokenizer.from_pretrained(tok_dir)
    specials = report["special_tokens"]
    assert specials["pre_tokenizer"] == "dbrx" and specials["add_bos_token"] == "false"
    assert specials["gguf"] == specials["transformers"]
    assert specials["gguf"]["eot"] == tok.convert_tokens_to_ids("<|im_end|>")
    with open_gguf(out / "ours-Q8_0.gguf", vocab_only=True) as llm:
        template = llm.metadata["tokenizer.chat_template"]
    assert template == inference_template(CHAT_TEMPLATE)  # our base model gets the ChatML template it reserves
    prompt = Jinja2ChatFormatter(template, eos_token="<|endoftext|>", bos_token="<|endoftext|>")(
        messages=CONVERSATION, tools=TOOLS).prompt
    tok.chat_template = CHAT_TEMPLATE
    assert prompt == tok.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False, add_generation_prompt=True)


def test_inference_template_renders_the_same_text(tok_dir):
    import jinja2
    from transformers import AutoTokenizer

    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE, inference_template

    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.chat_template = CHAT_TEMPLATE
    env = jinja2.Environment()  # no generation extension; `tojson` as transformers defines it (keys unsorted)
    env.filters["tojson"] = lambda x: json.dumps(x, ensure_ascii=False)
    plain = env.from_string(inference_template(CHAT_TEMPLATE))
    assert "generation %}" not in inference_template(CHAT_TEMPLATE)
    string_args = [dict(m, tool_calls=[{"function": {"name": "weather", "arguments": "{\"city\": \"Алматы\"}"}}])
                   if m.get("tool_calls") else m for m in CONVERSATION]
    for messages in (CONVERSATION, string_args, CONVERSATION[1:2]):
        for gen in (True, False):
            expected = tok.apply_chat_template(messages, tools=TOOLS, tokenize=False, add_generation_prompt=gen)
            assert plain.render(messages=messages, tools=TOOLS, add_generation_prompt=gen) == expected
    rendered = plain.render(messages=string_args, tools=None)  # string arguments are emitted, never quoted again
    assert '"arguments": {"city": "Алматы"}' in rendered and '\\"city' not in rendered


def test_f32_logits_match_ours_and_quality_numbers(exported):
    _, _, report = exported
    for lang, c in report["f32_vs_source"].items():
        assert c["max_logit_diff"] < 1e-3, lang
        assert c["bpb_test"] == pytest.approx(c["bpb_ref"], rel=1e-5)
        assert c["tokens"] > 20
    q8, q4 = report["quality"]["q8_0"], report["quality"]["q4_k_m"]
    for lang in ("kk", "ru", "en"):
        assert q8[lang]["kl"] < 0.01 and q8[lang]["top1"] > 0.9 and abs(q8[lang]["ppl_delta_pct"]) < 2
        assert q4[lang]["kl"] > q8[lang]["kl"]  # fewer bits, further from f32
    assert report["f32_vs_source"]["kk"]["bpb_ref"] == pytest.approx(GOLDEN_KK_BPB, rel=1e-4)


GOLDEN_KK_BPB = 3.32830  # the seed-0 random `tiny` model on the first 4 FLORES+ dev kk sentences (pinned)


def test_f32_file_generates_what_our_engine_generates(exported):
    from qazlm.gguf.llamacpp import open_gguf
    from qazlm.infer.engine import SamplingParams, generate_ids
    from qazlm.infer.loading import load_model

    model, out, _ = exported
    ours, tok, _ = load_model(model)
    prompt = tok("Қазақстан Республикасы", add_special_tokens=False)["input_ids"]
    expected = generate_ids(ours, [prompt], SamplingParams(max_new_tokens=12), stop_token_ids=())[0]
    with open_gguf(out / "ours-F32.gguf", logits_all=False) as llm:
        got = []
        for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            got.append(token)
            if len(got) == 12:
                break
    assert got == expected


def test_hf_folder_skip_and_type_change(tmp_path, tok_dir):
    model = make_hf_folder(tok_dir, tmp_path / "hf")
    out, logs = tmp_path / "out", []
    cfg = GGUFConfig(model=str(model), out_dir=str(out), types=["q4_0"], name="hfq", check_sentences=0)
    first = run_gguf(cfg, log=logs.append)
    samples = first["parity"]["samples"]
    assert first["model_kind"] == "hf" and samples["identical"] == samples["lines"]
    assert first["quality"]["q4_0"] == {} and first["f32_vs_source"] == {}  # check_sentences=0: token checks only
    md = (out / "gguf_report.md").read_text()
    assert "Not checked (`check_sentences = 0`)." in md
    table = md[md.index("## Quantized files"):].splitlines()[2:5]   # header, delimiter, q4_0's row
    assert [row.count("|") for row in table] == [5, 5, 5]          # a table Markdown renders: cells line up
    assert table[2].startswith("| q4_0 | ") and "Q4_0 " in table[2]
    run_gguf(cfg, log=logs.append)
    assert "up to date" in logs[-1]
    run_gguf(GGUFConfig(**{**cfg.__dict__, "types": ["q8_0"]}), log=logs.append)
    assert any("settings changed" in line for line in logs)
    assert sorted(p.name for p in out.glob("*.gguf")) == ["hfq-Q8_0.gguf"]  # the dropped type's file is gone
    assert not list(out.glob(".qazlm-tmp-*"))


def test_a_llama_folder_exports_as_llama_with_its_logits(tmp_path, tok_dir):
    """The imported-Llama path (SmolLM2's family): llama.cpp's converter writes a `llama` GGUF whose token ids
    equal ours and whose f32 logits are the source's within 1e-3."""
    import torch
    from gguf import GGUFReader
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                 tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    report = run_gguf(GGUFConfig(model=str(tmp_path / "llama"), out_dir=str(tmp_path / "out"), types=["f32"],
                                 name="ll", check_sentences=2), log=lambda *_: None)
    field = GGUFReader(tmp_path / "out" / "ll-F32.gguf").fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "llama"
    assert all(p["identical"] == p["lines"] for p in report["parity"].values())
    assert all(c["max_logit_diff"] < 1e-3 for c in report["f32_vs_source"].values())


def test_pre_tokenizer_choice():
    from qazlm.gguf.vocab import PRE_TOKENIZERS, split_pattern
    from qazlm.tokenizer.train import PATTERNS

    def tokenizer_json(regex, normalizer=None):
        return {"normalizer": normalizer, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}}

    assert split_pattern(tokenizer_json(PATTERNS["llama3"])) == "llama3"
    assert split_pattern(tokenizer_json(PATTERNS["qwen2"])) == "qwen2"
    assert split_pattern(tokenizer_json(PATTERNS["llama3"], {"type": "NFC"})) is None  # llama.cpp won't normalize
    assert split_pattern(tokenizer_json(r"\s+|\S+")) is None
    assert split_pattern({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) is None
    # llama.cpp's `llama-bpe` takes whole-word vocabulary hits (ignore_merges); ours merge every piece: `dbrx`
    assert PRE_TOKENIZERS[("llama3", False)] == "dbrx" and PRE_TOKENIZERS[("llama3", True)] == "llama-bpe"


def test_stage_exports_the_fp32_chat_model(tmp_path):
    from qazlm.errors import QazlmError
    from qazlm.gguf.stage import stage_config
    from qazlm.runs import RunConfig, RunContext

    ctx = RunContext(RunConfig(name="tiny", out_dir=str(tmp_path)), tmp_path / "recipe.toml")
    cfg = stage_config({}, ctx)
    assert cfg.model == str(tmp_path / "pretrain" / "final") and cfg.name == "tiny"
    (tmp_path / "sft" / "final").mkdir(parents=True)
    (tmp_path / "quantize" / "final").mkdir(parents=True)  # torchao weights are never the GGUF source
    cfg = stage_config({"types": ["q4_k_m"]}, ctx)
    assert cfg.model == str(tmp_path / "sft" / "final") and cfg.out_dir == str(tmp_path / "gguf")
    with pytest.raises(QazlmError, match=r"\[gguf\] out_dir: not settable"):
        stage_config({"out_dir": "x"}, ctx)


def test_package_ships_the_files_with_their_scoreboard(exported, tmp_path):
    from huggingface_hub import ModelCard

    from qazlm.package.config import PackageConfig
    from qazlm.package.package import run_package

    model, out, report = exported
    pkg = tmp_path / "pkg"
    run_package(PackageConfig(model=str(model), out_dir=str(pkg), gguf=[str(out / "ours-Q8_0.gguf")]),
                log=lambda *_: None)
    assert (pkg / "ours-Q8_0.gguf").read_bytes() == (out / "ours-Q8_0.gguf").read_bytes()
    card = ModelCard.load(pkg / "README.md")
    assert "gguf" in card.data.tags
    q8 = report["quality"]["q8_0"]
    row = next(line for line in card.text.splitlines() if line.startswith("| ours-Q8_0.gguf |"))
    assert f"{q8['kk']['ppl_delta_pct']:+.2f}%" in row and "llama-cli -m ours-Q8_0.gguf --jinja" in card.text
    assert "ours-Q4_K_M.gguf" not in card.text  # only the shipped files are listed


def test_card_gguf_table_without_quality_checks_is_a_table():
    """A package made from an export run with check_sentences = 0 (as the benchmarks run it) says so, and its
    table's rows have as many cells as its header, so Markdown renders it (the header had one cell too many)."""
    from qazlm.package.card import gguf_table

    report = {"model": "/runs/x/sft/final", "parity": {"samples": {"identical": 14, "lines": 14}}, "f32_vs_source": {},
              "quality": {"q8_0": {}}, "files": {"f32": {"file": "x-F32.gguf", "bytes": 2**21},
                                                 "q8_0": {"file": "x-Q8_0.gguf", "bytes": 2**20}}}
    lines = gguf_table(report, ["x-Q8_0.gguf"])
    assert lines[1].endswith("on 14/14 test texts; logits and quality not checked (`check_sentences = 0`).")
    assert lines[3:] == ["| file | MiB |", "|---|---:|", "| x-Q8_0.gguf | 1.0 |"]


def test_importance_matrix_from_calibration_text(tmp_path, tok_dir, corpus):
    """The matrix llama-imatrix would collect (mean squared input per column of every weight), computed on the
    source model, saved in llama-imatrix's GGUF format, used by the quantizer, and read back exactly."""
    import torch
    from transformers import AutoModelForCausalLM

    from qazlm.gguf.imatrix import calibration_chunks, read

    model = make_hf_folder(tok_dir, tmp_path / "hf")  # 2 layers, width 64, 128 positions, tied head
    base = dict(model=str(model), types=["q4_k_m"], name="m", check_sentences=0)
    report = run_gguf(GGUFConfig(**base, out_dir=str(tmp_path / "a"), calibration=[str(corpus)], calibration_chunks=2,
                                 output_type="f16"), log=lambda *_: None)
    assert report["imatrix"]["chunks"] == 2 and report["imatrix"]["chunk_tokens"] == 128
    matrix = read(tmp_path / "a" / "m.imatrix.gguf")
    linears = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    assert set(matrix.sums) == {f"blk.{b}.{n}.weight" for b in (0, 1) for n in linears} | {"token_embd.weight"}
    assert set(matrix.counts.values()) == {256}
    # the tied head's entry is the mean square of the final normed hidden state, as transformers computes it
    from transformers import AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    chunks = calibration_chunks([str(corpus)], AutoTokenizer.from_pretrained(model), 2, 128)
    with torch.no_grad():
        last = torch.cat([hf(torch.tensor([c]), output_hidden_states=True).hidden_states[-1][0] for c in chunks])
    expected = (last.double() ** 2).mean(0)
    assert torch.allclose(torch.tensor(matrix.means()["token_embd.weight"], dtype=torch.float64), expected, rtol=1e-4)
    # f16 output: the tied embedding stays in f16 inside the 4-bit file
    assert "F16" in report["files"]["q4_k_m"]["tensor_types"]
    # the matrix changes the quantization, and the saved file reproduces it byte for byte
    run_gguf(GGUFConfig(**base, out_dir=str(tmp_path / "b"), output_type="f16"), log=lambda *_: None)
    run_gguf(GGUFConfig(**base, out_dir=str(tmp_path / "c"), output_type="f16",
                        imatrix=str(tmp_path / "a" / "m.imatrix.gguf")), log=lambda *_: None)
    with_matrix, without, reread = ((tmp_path / d / "m-Q4_K_M.gguf").read_bytes() for d in "abc")
    assert with_matrix != without and with_matrix == reread
    assert not (tmp_path / "c" / "m.imatrix.gguf").exists()  # a given matrix is not copied
    assert "Quantizer: importance matrix `m.imatrix.gguf` from 2 x 128 tokens of" in (
        tmp_path / "a" / "gguf_report.md").read_text()
    assert "Quantizer: no importance matrix; output tensor: f16." in (tmp_path / "b" / "gguf_report.md").read_text()


def test_calibration_lines_weigh_each_input_the_same(tmp_path):
    """One line from each input in turn, and within a folder from each file in turn: a folder of many files
    does not crowd out a single file (give kk/, ru/, en/ for equal thirds)."""
    from qazlm.gguf.imatrix import calibration_lines

    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "a.txt").write_text("a1\na2\na3\n")
    (tmp_path / "en" / "b.txt").write_text("b1\n")
    (tmp_path / "kk.txt").write_text("k1\nk2\nk3\nk4\n")
    lines = list(calibration_lines([str(tmp_path / "en"), str(tmp_path / "kk.txt")]))
    assert lines == ["a1", "k1", "b1", "k2", "a2", "k3", "a3", "k4"]


def test_summary_without_quality_checks_says_so():
    """check_sentences = 0 (the benchmarks score devtest themselves): the summary says quality was not checked
    instead of printing a NaN logit difference and empty per-type lines."""
    from pathlib import Path

    from qazlm.gguf.export import summary

    report = {"parity": {"samples": {"identical": 14, "lines": 14}}, "files": {"f32": {}, "q4_k_m": {}},
              "seconds": 1.0, "f32_vs_source": {}, "quality": {"q4_k_m": {}}}
    assert summary(report, Path("out")).splitlines() == [
        "gguf: f32, q4_k_m -> out (1.0 s); token ids identical on 14/14 texts; "
        "quality not checked (check_sentences = 0)"]
