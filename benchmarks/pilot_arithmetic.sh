#!/usr/bin/env bash
# The pilot of docs/pilot.md: SmolLM2-135M-Instruct on builtin:arithmetic, 30 GRPO steps per
# run on 2 CPU cores. Its settings were fixed before any result was seen and stay fixed; the
# study grew by arms only (a rerun with more --arms or --seeds extends the same study):
#   2026-12-02  uniform, gainrl, length x 3 seeds (gainrl then ranked the R1-prompted rows)
#   2026-12-03  + calibrated and pass-rate (issue 22), every ranked arm scored as trained
#   2026-12-07  all 15 runs (5 arms x 3 seeds) finished and archived
# A rerun resumes; OUT defaults to pilot-arith. The finished study is archived in
# benchmarks/results/pilot-arith.tar.gz (everything but checkpoints): `tar xzf` it into the
# repository root to check or extend it without rerunning the finished runs.
set -euo pipefail
OUT=${1:-pilot-arith}
ARMS=${ARMS:-uniform,gainrl,length,calibrated,pass-rate}
.venv/bin/anglecurate pilot --model builtin:smollm2 --data builtin:arithmetic --id-field uid \
    --field problem --answer-field answer --out "$OUT" \
    --arms "$ARMS" --seeds 3 --steps 30 --eval-every 5 \
    --eval-rows 150 --train-rows 1200 --reward number \
    --num-generations 8 --prompts-per-step 4 --max-completion-length 16 --learning-rate 2e-5
