#!/usr/bin/env bash
# The CPU-scale comparison of docs/results.md: pretrain each method on COVID-BLUES, fine-tune
# and evaluate on POCUS (5 grouped folds), every method on identical folds and settings.
# Run from the repository root with the venv active; each method is one `dvc exp run`, whose
# results are copied to $RUNS/<method> for `uspipe report`. With SEEDS (pretraining seeds,
# e.g. SEEDS="0 1 2") each method runs once per seed into $RUNS/<method>-s<seed>, and
# `uspipe report` then also compares the recipes over their seeds.
#   bash benchmarks/pocus_study.sh [method ...]     (default: all, in the order below)
#   SEEDS="0 1" bash benchmarks/pocus_study.sh uscl scratch
set -euo pipefail
SHARED=${USPIPE_SHARED_DATA:-../shared/data}
RUNS=${RUNS:-runs}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-60}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-15}
methods=("$@")
[ ${#methods[@]} -eq 0 ] && methods=(scratch uscl simclr supervised hico meta_uscl)
for method in "${methods[@]}"; do
  epochs=$PRETRAIN_EPOCHS
  # SimCLR draws one pair per frame: the same number of steps is ~11x fewer epochs
  [ "$method" = simclr ] && epochs=$(( (PRETRAIN_EPOCHS + 10) / 11 ))
  for seed in ${SEEDS:-0}; do
    run="$RUNS/$method${SEEDS:+-s$seed}"
    start=$(date +%s)
    dvc exp run -q \
      -S data.pretrain.root="$SHARED/covid-blues" -S data.downstream.root="$SHARED/pocus" \
      -S train.method="$method" -S train.seed="$seed" -S train.epochs="$epochs" \
      -S train.image_size=64 -S train.batch_size=32 -S finetune.epochs="$FINETUNE_EPOCHS" \
      -S finetune.image_size=64
    mkdir -p "$run"
    cp -r results/. "$run/"
    cp models/pretrain/dvclive/metrics.json "$run/pretrain_metrics.json" 2>/dev/null || true
    echo "$run: $(( $(date +%s) - start )) s" | tee -a "$RUNS/times.txt"
  done
done
