#!/bin/sh
# Regenerate docs/data/real_inputs_*.json, docs/data/blind_vs_told_set5*.json and the pictures
# docs/img/real_*.png of docs/real-inputs.md. Needs ../shared/data beside the repository.
# About 10 minutes on 2 cores.
set -e
cd "$(dirname "$0")/.."
D=../shared/data
O=docs/data
# validation: the held-out training images (what the weights were chosen on)
python benchmarks/real_inputs.py --data $D/train/bsds500 $D/train/t91 --holdout \
  --per-kind 18 --max-side 256 --json $O/real_inputs_val.json
# test: Set14 then BSD68 (the first 60 images in that order), the shared HR test images
python benchmarks/real_inputs.py --data $D/set14 $D/bsd68 --per-kind 60 --max-side 256 \
  --json $O/real_inputs_test.json
# the pictures: Set14's monarch, every kind
python benchmarks/real_inputs.py --data $D/set14 --per-kind 14 --max-side 256 --crops docs/img \
  --crop-image monarch.png
python benchmarks/blind_vs_told.py --images $D/set5 --kernels $D/kernels/*.npy \
  --json $O/blind_vs_told_set5.json
# x2: MZSR's kernels and the canonical ones, Eq. 1 at x2
K=$(mktemp -d)
python benchmarks/mzsr_kernels.py "$K"
python benchmarks/blind_vs_told.py --scale 2 --images $D/set5 --kernels "$K"/*.npy \
  $D/kernels/*.npy --json $O/blind_vs_told_set5_x2.json
rm -rf "$K"
