#!/bin/sh
# Regenerate the JSON files of docs/results.md's "Blind mode" and "MZSR's protocol" sections
# (docs/blind.md, docs/grid.md). Needs ../shared/data (Set5, Set14, BSD68, the Urban100
# subset, the canonical kernels). One thread, so that it can share the machine.
set -e
cd "$(dirname "$0")/.."
export NUMBA_NUM_THREADS=1
D=../shared/data
O=docs/data
K=$(mktemp -d)
trap 'rm -rf "$K"' EXIT
python benchmarks/blind_kernels.py "$K/fresh" > /dev/null        # seed 2026, 3 iso + 3 aniso
python benchmarks/mzsr_kernels.py "$K/mzsr" > /dev/null
C="--config bicubic --config int8-ours"
# blind mode (x4): canonical kernels of the Done-when, then the fresh set on four test sets
intsr eval $D/set5 --kernel $D/kernels/gauss_iso_s1.6_15.npy --kernel $D/kernels/gauss_iso_s2.4_15.npy \
  $C --config int8-blind --quiet --json $O/blind_set5_canonical.json > /dev/null
for s in set5 set14 bsd68 urban100; do
  intsr eval $D/$s $(for k in "$K"/fresh/*.npy; do printf -- "--kernel %s " "$k"; done) \
    $C --config int8-blind --quiet --json $O/blind_$s.json > /dev/null
done
python benchmarks/blind_time.py --images $D/set5 --json $O/blind_time.json
# MZSR's protocol: corner grid, g^d_0.2 / g^d_2.0 / g^d_ani, x4 (with blind) and x2
M="--kernel $K/mzsr/g_d_0.2.npy --kernel $K/mzsr/g_d_2.0.npy --kernel $K/mzsr/g_d_ani.npy --grid corner"
for s in set5 bsd68 urban100; do
  intsr eval $D/$s $M $C --config int8-blind --quiet --json $O/mzsr_x4_$s.json > /dev/null
  intsr eval $D/$s $M --scale 2 $C --config shipped --quiet --json $O/mzsr_x2_$s.json > /dev/null
done
