#!/usr/bin/env bash
# All GPU checks of the pretraining engine in one call (run on a machine with one H100/H200):
#   1. tokens/s and MFU of a training step for the 200m, 350m and 500m presets, bf16 autocast + torch.compile,
#      seq 2048, through the real `qazlm pretrain` loop (random tokens: throughput does not depend on content);
#   2. a short loss curve on real text: the tiny recipe's tokenizer + data stages on the bundled sample, then
#      the `small` model for 400 steps on the GPU, validation bits per byte per language vs unigram baselines.
# Writes a markdown report with the date and device to stdout and to $OUT/gpu_checks.md
# (OUT defaults to benchmarks/results). Target: >= 45% MFU for 350m.
#   bash benchmarks/gpu_checks.sh                 # everything (~15 min on an H100)
#   PRESETS="350m" STEPS=20 SKIP_CURVE=1 bash benchmarks/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-benchmarks/results}"
PRESETS="${PRESETS:-200m 350m 500m}"
STEPS="${STEPS:-30}"            # timed steps per preset (the first 5 logged ones are warm-up/compile)
MICRO="${MICRO:-16}"            # sequences per micro-batch (16 x 2048 tokens)
VOCAB="${VOCAB:-65536}"
WORK="$(mktemp -d /tmp/qazlm_gpu.XXXXXX)"
mkdir -p "$OUT"
REPORT="$OUT/gpu_checks.md"

python - "$WORK/tokens.npy" "$VOCAB" <<'PY'
import sys, numpy as np
np.save(sys.argv[1], np.random.default_rng(0).integers(0, int(sys.argv[2]), size=50_000_000, dtype=np.int32))
PY

DEVICE="$(python -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")')"
TORCH="$(python -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
{
  echo "## GPU checks — $(date -u '+%Y-%m-%d %H:%M UTC'), ${DEVICE}, torch ${TORCH}"
  echo
  echo "### Training throughput (bf16 autocast + torch.compile, seq 2048, micro-batch ${MICRO}, fp32 master weights, AdamW fused)"
  echo
  echo "| preset | params | tokens/s | MFU | peak memory |"
  echo "|---|---|---|---|---|"
} > "$WORK/report.md"

for P in $PRESETS; do
  RUN="$WORK/tp_$P"
  if qazlm pretrain --config "recipes/$P.toml" --data "$WORK/tokens.npy" --out "$RUN" --no-plot \
      --set "model_overrides.vocab_size=$VOCAB" --set tokenizer='""' --set "steps=$((STEPS + 5))" \
      --set "micro_batch=$MICRO" --set "global_batch_tokens=$((MICRO * 2048))" --set warmup_steps=5 \
      --set eval_every=-1 --set ckpt_every=0 --set log_every=1 --set resume=false --set tensorboard=false \
      > "$RUN.log" 2>&1; then
    python - "$RUN/metrics.jsonl" "$P" >> "$WORK/report.md" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
head = next(r for r in recs if "params" in r)
steps = [r for r in recs if "tokens_per_s" in r][5:]          # skip warm-up + compilation
tps = statistics.median(r["tokens_per_s"] for r in steps)
mfu = statistics.median(r["mfu"] for r in steps)
mem = max(r["memory_gb"] for r in steps)
flag = " (target >= 45%: " + ("met" if mfu >= 0.45 else "NOT met") + ")" if sys.argv[2] == "350m" else ""
print(f"| {sys.argv[2]} | {head['params'] / 1e6:.0f}M | {tps:,.0f} | {100 * mfu:.1f}%{flag} | {mem:.1f} GB |")
PY
  else
    echo "| $P | failed: see $RUN.log | | | |" >> "$WORK/report.md"
    tail -20 "$RUN.log" >&2
  fi
done

if [ -z "${SKIP_CURVE:-}" ]; then
  CURVE="$WORK/curve"
  qazlm run recipes/tiny.toml --only tokenizer --only data --set "run.out_dir=$CURVE" > "$WORK/prep.log" 2>&1
  qazlm pretrain --config recipes/tiny.toml --data "$CURVE/data/tokens" --out "$CURVE/pretrain" \
      --set model='"small"' --set seq_len=512 --set micro_batch=32 --set global_batch_tokens=32768 \
      --set steps=400 --set lr=3e-3 --set min_lr=3e-4 --set warmup_steps=40 --set eval_every=50 \
      --set eval_docs=200 --set eval_max_len=512 --set ckpt_every=200 --set "val_data=\"$CURVE/data\"" \
      > "$WORK/curve.log" 2>&1
  python - "$CURVE/pretrain/metrics.jsonl" >> "$WORK/report.md" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
base = next(r for r in recs if any(k.startswith("unigram_bpb/") for k in r))
langs = sorted(k.split("/")[1] for k in base if k.startswith("unigram_bpb/"))
print("\n### Loss curve on real text (bundled sample corpus, `small` model, 400 steps x 32k tokens)\n")
print("| step | train loss | " + " | ".join(f"val bpb {l}" for l in langs) + " |")
print("|---|---|" + "---|" * len(langs))
loss = {r["step"]: r["loss"] for r in recs if "loss" in r}
for r in recs:
    if "val/bpb_" + langs[0] in r:
        near = loss.get(r["step"], float("nan"))
        print(f"| {r['step']} | {near:.3f} | " + " | ".join(f"{r['val/bpb_' + l]:.3f}" for l in langs) + " |")
print("| unigram baseline | | " + " | ".join(f"{base['unigram_bpb/' + l]:.3f}" for l in langs) + " |")
samples = [r for r in recs if any(k.startswith("sample/") for k in r)]
if samples:
    print()
    for k, v in samples[-1].items():
        if k.startswith("sample/"):
            print(f"- {k[7:]}: {v!r}")
PY
  qazlm plot "$CURVE/pretrain" --out "$OUT/gpu_curve_plots" > /dev/null
fi

cp "$WORK/report.md" "$REPORT"
cat "$REPORT"
echo
echo "report: $REPORT (raw runs and logs in $WORK)"
