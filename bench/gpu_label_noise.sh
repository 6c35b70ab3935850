#!/usr/bin/env bash
# The label-issue finder at a real set's size on a lent GPU (issue 7), one prepared script.
#
# 1. Makes one synthetic set per noise level (1,400 erasers at 310 px, obvious defects, seed 1:
#    the same bytes bench.label_noise would make itself) with every CPU core.
# 2. Sweep: every configuration in bench/label_noise_configs/ runs bench.label_noise at the
#    first level (default 10 % missed defects), all at once on the one GPU.
# 3. The configuration whose flagged list scored the best F1 against the flips runs the
#    remaining levels; its first level is reused from the sweep (bench.label_noise --workdir).
#
# Each configuration writes its results section into $RES/<config>.md (RES: $OUT/label_noise
# when OUT is set) and its log beside it; $RES/best.txt names the winner. Settings come from
# the environment: N, SIZE, EPOCHS, LEVELS (the first is the sweep's), CONFIGS (JSON files),
# WORK (scratch folder), SWEEP_S and FULL_S (time limits in seconds). Carry the wheels that
# bench/gpu.sh's header fetches, install them into /tmp/site and put it on PYTHONPATH first.
# On one H200 with the defaults: sweep about 2 minutes, the remaining levels about 4.5.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
N=${N:-1400}
SIZE=${SIZE:-310}
EPOCHS=${EPOCHS:-40}
read -r -a LEVELS <<<"${LEVELS:-0.1 0.2 0.05 0}"
WORK=${WORK:-/tmp/label-noise-gpu}
RES=${RES:-${OUT:+$OUT/label_noise}}
RES=${RES:-$WORK/results}
mkdir -p "$WORK/data" "$RES"
cores=$(nproc)

echo "== synthetic sets: $N erasers at $SIZE px, levels ${LEVELS[*]}"
for level in "${LEVELS[@]}"; do
  d="$WORK/data/noise_$($PY -c "print(f'{float(\"$level\"):g}')")"
  [ -f "$d/labels_multiclass.csv" ] || $PY -m data.synth "$d" --n "$N" --size "$SIZE" \
    --noise "$level" --seed 1 --subtle-rate 0 --workers "$cores" --force >/dev/null
done

# one configuration at the given levels, in its own workdir that links the shared sets
run() {
  local cfg=$1 name limit=$2
  shift 2
  name=$(basename "$cfg" .json)
  mkdir -p "$WORK/$name"
  ln -sfn "$WORK"/data/noise_* "$WORK/$name/"
  timeout --signal=INT --kill-after=20 "$limit" "$PY" -m bench.label_noise --config "$cfg" \
    --n "$N" --source-size "$SIZE" --epochs "$EPOCHS" --workdir "$WORK/$name" --threads 2 \
    --write --results "$RES/$name.md" --levels "$@" >>"$RES/$name.log" 2>&1 \
    || echo "($name stopped: exit $?, see $name.log)"
}

echo "== sweep at ${LEVELS[0]}"
configs=(${CONFIGS:-bench/label_noise_configs/*.json})
for cfg in "${configs[@]}"; do run "$cfg" "${SWEEP_S:-240}" "${LEVELS[0]}" & done
wait

best=$($PY - "$WORK" "${configs[@]}" <<'EOF'
import json
import sys
from pathlib import Path

work, configs = Path(sys.argv[1]), sys.argv[2:]
scores = {}
for cfg in configs:
    name = Path(cfg).stem
    try:
        r = json.loads((work / name / "label_noise.json").read_text())[0]
    except (OSError, ValueError, IndexError):
        continue
    f = r["finder"]
    print(f"{name}: recall {f['recall']:.2f}, precision {f['precision']:.2f}, OOF AUROC "
          f"print {r['oof_kind_auroc']['print']:.3f} physical "
          f"{r['oof_kind_auroc']['physical']:.3f}, {r['seconds']:.0f} s", file=sys.stderr)
    rec, prec = (0.0 if v != v else v for v in (f["recall"], f["precision"]))
    scores[cfg] = 2 * rec * prec / (rec + prec) if rec + prec else 0.0
print(max(scores, key=scores.get) if scores else "")
EOF
)
[ -n "$best" ] || { echo "no configuration finished the sweep"; exit 1; }
echo "$best" >"$RES/best.txt"
echo "== $best at ${LEVELS[*]}"
run "$best" "${FULL_S:-200}" "${LEVELS[@]}"
tail -n 30 "$RES/$(basename "$best" .json).md"
