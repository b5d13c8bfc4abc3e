#!/bin/sh
# Regenerate every JSON under docs/data/ that docs/make_results.py reads (except the speed
# benchmarks, which run on an otherwise idle machine: see docs/performance.md).
# Needs the evaluation data beside the repo: ../shared/data (Set5 and the canonical kernels).
# One thread, so that the run can share the machine; about 20 minutes.
set -e
cd "$(dirname "$0")/.."
export NUMBA_NUM_THREADS=1
D=../shared/data
K=""
for s in 1.2 1.6 2.0 2.4; do K="$K --kernel $D/kernels/gauss_iso_s${s}_15.npy"; done
O=docs/data
PRUNED=$(python -c "from intsr.pruning import RATIOS; print(*RATIOS[1:])")
intsr eval $D/set5 $K --quiet --json $O/eval_set5_meta.json
intsr eval $D/set5 $K --quiet --weights weights/pretrained_bic.npz \
  --config bicubic --config fp --config int8-ours --json $O/eval_set5_pretrained_bic.json
intsr eval $D/set5 $K --quiet --weights weights/pretrained_gauss.npz \
  --config bicubic --config fp --config int8-ours --json $O/eval_set5_pretrained_gauss.json
for r in $PRUNED; do
  intsr eval $D/set5 $K --quiet --config int8-ours --prune $r --json $O/eval_set5_meta_prune$r.json
done
for r in $PRUNED; do  # the literal Eq. 8 reading, for comparison
  intsr eval $D/set5 $K --quiet --config int8-ours --prune $r --masks weights/masks_eq8.npz \
    --json $O/eval_set5_meta_eq8_prune$r.json
done
for n in 1 3 4 5; do
  intsr eval $D/set5 $K --quiet --config int8-ours --layerwise $n \
    --json $O/eval_set5_meta_layerwise$n.json
done
python benchmarks/quant_modes.py --data $D/set5 \
  --kernels $D/kernels/gauss_iso_s1.6_15.npy $D/kernels/gauss_iso_s2.4_15.npy \
  --json $O/quant_modes.json
