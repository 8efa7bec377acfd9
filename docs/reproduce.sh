#!/usr/bin/env bash
# Every measurement of docs/reproduction.md, in order: `bash docs/reproduce.sh [OUT]` (default repro-out).
# SmolLM2-135M-Instruct and the demo benchmark, the demo's unlearning settings (rmu.demo.settings.DEFAULT),
# completion scoring. About 1.5 hours on one CPU core; rerunning resumes the sweeps and skips finished runs.
set -euo pipefail
OUT=${1:-repro-out}
mkdir -p "$OUT"
cd "$OUT"
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

M=$(python -c "from rmu.demo import smollm2_path; print(smollm2_path())")
python -c "from rmu.demo import write_benchmark; write_benchmark('bench')"
COMMON="--forget elements=bench/forget.jsonl --retain bench/retain.jsonl --batch-size 4 --max-len 128
  --retain-max-len 128 --min-len 0 --lr 3e-3 --alpha 300 --mask-padding --seed 42 --device cpu"
TASKS="--forget-task bench/forget_questions.jsonl --retain-task bench/retain_questions.jsonl --scoring completion"

# The demo's two models: RMU c = 6.5 and Adaptive RMU beta = 2 at layer 7, 75 steps.
[ -f rmu_l7/run.json ] || rmu unlearn --model "$M" $COMMON --method rmu --steering-coeff 6.5 --layer 7 --steps 75 --output rmu_l7
[ -f adaptive_l7/run.json ] || rmu unlearn --model "$M" $COMMON --method adaptive --beta 2 --layer 7 --steps 75 --output adaptive_l7

# Claim 1: token confidence.
rmu analyze confidence --model base="$M" --model rmu=rmu_l7 --model adaptive=adaptive_l7 \
  --questions bench/forget_questions.jsonl --limit 50 --tokens 30 --prompt completion --output confidence

# Claim 2: the coefficient: accuracy and cos(h_7, u) against c (RMU) and beta (Adaptive RMU).
rmu sweep coeff --model "$M" $COMMON $TASKS --steps 75 --method rmu --layer 7 --values 6.5,50,150,400,1200 --output coeff_rmu
rmu sweep coeff --model "$M" $COMMON $TASKS --steps 75 --method adaptive --layer 7 --values 0.5,1,2,4 --output coeff_adaptive

# Claim 3: noise sensitivity per layer, then RMU and Adaptive RMU over the layers, and norm convergence.
rmu analyze noise-sensitivity --model base="$M" --model rmu=rmu_l7 --model adaptive=adaptive_l7 \
  --texts bench/forget.jsonl --layers 0-28:2 --batches 1 --samples 1 --scale 0.1 --output noise
rmu sweep layers --model "$M" $COMMON $TASKS --steps 75 --steering-coeff 6.5 --beta 2 --layers 3-27:4 --output layers
rmu analyze norms layers --output norms
# Where the attention sink forms (the first real token's norm against the median, per layer), and the
# same sweep with each row's first real token left out of the losses.
rmu analyze token-norms --model base="$M" --texts bench/forget.jsonl --batches 2 --output token_norms
rmu sweep layers --model "$M" $COMMON $TASKS --steps 75 --steering-coeff 6.5 --beta 2 --mask-first-token --layers 3-27:4 --output layers_sink

rmu report confidence coeff_rmu coeff_adaptive noise layers norms token_norms layers_sink --output report
