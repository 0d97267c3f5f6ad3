# CL_seqtru_voc + random-LTD at the paper's GPT-3 pretraining settings (Li et al., AAAI 2024,
# Table 1), as the flags that size a run, and the analyzer's voc index they need. Sourced by
# the pretraining recipes (pretrain_gpt_1.3B_cl_ltd.sh, pretrain_llama_cl_ltd.sh) after
# examples/_python.sh.
#
#   cl_ltd_sizing   reads OUT SEQ GBS TRAIN_TOKENS EVAL (array) and MODEL (an array that
#                   starts with --num-layers N); sets INDEX (default $OUT/analysis), SEED,
#                   SPLIT and SIZING: the flags that decide how many samples the run draws,
#                   given to the analyzer and to training alike
#   index_samples   step 2: the voc index of every training sample, once (node 0), run by
#                   ANALYZER (an array: the interpreter, under mpiexec on a cluster) on DATA
cl_ltd_sizing() {
  INDEX=${INDEX:-$OUT/analysis}
  SEED=1234; SPLIT=949,50,1
  # Schedules in steps of the nominal batch; curriculum and random-LTD steps consume fewer
  # tokens, so the run takes more steps than this until --train-tokens are consumed.
  local nominal=$(( TRAIN_TOKENS / (GBS * SEQ) ))
  local cl_steps=$(( nominal * 40 / 100 ))     # T_c = 40% (GPT-3 pretraining preset)
  local ltd_steps=$(( nominal * 70 / 100 ))    # T_r = 70%
  local r_s=$(( SEQ * 128 / 2048 ))            # r_s = 128 of 2048 (scaled for DRY_RUN)
  local d_s=$(( SEQ < 2048 ? 8 : 80 ))         # d_s = 80 of 2048 (DRY_RUN: one step of 8)
  SIZING=(
    "${MODEL[@]:0:2}" --global-batch-size "$GBS" --train-tokens "$TRAIN_TOKENS"
    --data-efficiency-curriculum-learning --curriculum-metric seqtru voc
    --curriculum-index-path - "$INDEX/voc" --curriculum-difficulty-type value percentile
    --curriculum-min-difficulty $d_s 1 --curriculum-max-difficulty "$SEQ" 100
    --curriculum-schedule-type fixed_linear fixed_root --curriculum-total-steps $cl_steps
    --curriculum-difficulty-step 8 1 --curriculum-root-degree 1 2
    --random-ltd --random-ltd-min-seqlen $r_s --random-ltd-total-steps $ltd_steps
    --random-ltd-seq-per-step 16
    "${EVAL[@]}"                               # validation samples
  )
}

index_samples() {
  [[ -f $INDEX/voc/meta.json || ${NODE_RANK:-0} != 0 ]] && return 0
  "${ANALYZER[@]}" tools/analyze_data.py --data-path "$DATA" --granularity sample \
      --split $SPLIT --seq-length "$SEQ" --seed $SEED --data-cache-path "$OUT/cache" \
      --metrics total_vocab_freq voc --save-path "$INDEX" "${SIZING[@]}"
}
