#!/usr/bin/env bash
# A second quality measure for a finished GPT study on the default corpus: each run's final
# checkpoint scored on documents no study run trained on (the first 20% of the reference
# slice, DIR/data/reference_text_document, the same samples for every run), as the mean
# token loss the analyzer's `loss` metric gives (tools/analyze_data.py + inspect_index.py).
#
#   bash examples/study_heldout.sh [DIR] [RUN ...]     # DIR defaults to build/study_cpu,
#                                                      # RUN to every run under DIR/runs
# Prints "run  val_loss(whole split)  heldout_loss" per run on stdout (the analyzer's
# progress goes to stderr); indexes go to DIR/heldout/<run>.
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_python.sh
DIR=${1:-build/study_cpu}
shift || true
RUNS=("$@")
if [ ${#RUNS[@]} -eq 0 ]; then
    mapfile -t RUNS < <(ls "$DIR/runs")
fi
SEQ=$(sed -n 's/.*--seq-length \([0-9]*\).*/\1/p' "$DIR/runs/${RUNS[0]}/command.txt")
printf "%-36s %10s %10s\n" run val_loss heldout
for run in "${RUNS[@]}"; do
    out="$DIR/heldout/$run"
    if [ ! -e "$out/loss" ]; then
        "$PYTHON" tools/analyze_data.py --data-path "$DIR/data/reference_text_document" \
            --granularity sample --split 20,80,0 --seq-length "$SEQ" --seed 1234 \
            --train-samples 1 --data-cache-path "$DIR/data/cache" --metrics loss \
            --reference-load "$DIR/runs/$run/checkpoints" --save-path "$out" >&2
    fi
    heldout=$("$PYTHON" tools/inspect_index.py "$out/loss" | awk '$1 == "mean" {print $2}')
    val=$("$PYTHON" -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['val_loss']:.4f}\")" \
          "$DIR/runs/$run/result.json")
    printf "%-36s %10s %10s\n" "$run" "$val" "$heldout"
done
