#!/bin/bash
# Llama-2 (GQA), CL_seqtru_voc + random-LTD: Megatron-DeepSpeed's
# examples_deepspeed/pretrain_llama2_distributed.sh in its own flag spelling and ds_config
# (bf16, ZeRO stage 0, GPTSentencePieceTokenizer on Llama's tokenizer.model), with the
# curriculum and random-LTD added as the data-efficiency GPT recipe of this folder adds
# them (the ds_config's data_efficiency section at the paper's GPT settings, --random-ltd,
# --data-efficiency-curriculum-learning, the LR schedule and the budget on consumed
# tokens), launched by torchrun.
#
# See README.md in this folder (and the main README) for what each DeepSpeed-only flag maps
# to. Every setting below can be overridden from the environment.
# PRINT_COMMAND=1 prints the launch command's arguments instead of running it. The
# launcher is the torchrun of $PYTHON (examples/_python.sh: the project's .venv by default).
#
# DRY_RUN=1 runs it shrunk on CPU (one rank, gloo): the default corpus and a SentencePiece
# tokenizer trained on it (examples/_dry_run_data.sh), this project's analyzer for the voc
# index (tools/analyze_data.py, sized by the same flags), a 4-layer x 64 Llama for 12
# steps' worth of tokens, under build/dry_run_mds_llama2; every flag and the ds_config as
# the recipe writes them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/ds_config.sh"
source "$root/examples/_python.sh"
source "$root/examples/_dry_run_data.sh"

DRY_RUN=${DRY_RUN:-0}
if [[ $DRY_RUN == 1 ]]; then   # the shrunk run's defaults (the environment still wins)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
  : "${BASE_PATH:=$root/build/dry_run_mds_llama2}"
  if [[ -z ${DATASET_1:-} ]]; then   # else: DATASET_1 and TOKENIZER_PATH given
    dry_run_data "$BASE_PATH/data"
    DATASET_1=$BASE_PATH/data/corpus_text_document; TOKENIZER_PATH=$BASE_PATH/data/sp.model
  fi
  : "${TP:=1}" "${PP:=1}" "${GPUS_PER_NODE:=1}" "${DISTRIBUTED_BACKEND:=gloo}"
  : "${HIDDEN_SIZE:=64}" "${FFN_HIDDEN_SIZE:=176}" "${NUM_LAYERS:=4}" "${NUM_HEADS:=4}"
  : "${NUM_KV_HEADS:=2}" "${SEQ_LENGTH:=128}" "${MICRO_BATCH_SIZE:=4}" "${GLOBAL_BATCH_SIZE:=8}"
  : "${TRAIN_STEPS:=12}" "${LR_WARMUP_STEPS:=1}" "${LOG_INTERVAL:=2}" "${SAVE_INTERVAL:=6}"
  : "${EVAL_INTERVAL:=6}" "${EVAL_ITERS:=2}" "${LTD_START:=16}" "${CL_2nd_MIN:=8}"
  : "${CHECKPOINT_PATH:=$BASE_PATH/checkpoints}" "${ANALYSIS_HOME:=$BASE_PATH/analysis}"
  : "${MASTER_PORT:=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')}"
  # this project's analyzer folder, named by the two DeepSpeed keys' files
  : "${CL_1st_SAMPLE_PATH:=$ANALYSIS_HOME/voc/sorted_samples.npy}"
  : "${CL_1st_METRIC_PATH:=$ANALYSIS_HOME/voc/sample_to_metric.npy}"
fi

######################################
# Change the below configurations here
BASE_PATH=${BASE_PATH:-./tmp}
DS_CONFIG=${BASE_PATH}/deepspeed.json
DATASET_1=${DATASET_1:-"./tmp/data/bookcorpus_train_1m_text_sentence"}
# one prefix, not their weighted blend "1 ${DATASET_1}": the curriculum's index numbers the
# samples of one dataset (training refuses a blend with a curriculum index, saying so)
DATASET="${DATASET_1}"
CHECKPOINT_PATH=${CHECKPOINT_PATH:-./tmp}
TOKENIZER_PATH=${TOKENIZER_PATH:-./tmp/tokenizer.model} # offical llama tokenizer.model

TP=${TP:-2}
PP=${PP:-2}
ZERO_STAGE=${ZERO_STAGE:-0}

GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-6000}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
DISTRIBUTED_BACKEND=${DISTRIBUTED_BACKEND:-nccl}

HIDDEN_SIZE=${HIDDEN_SIZE:-2048} # e.g. llama-13b: 5120
FFN_HIDDEN_SIZE=${FFN_HIDDEN_SIZE:-5504} # e.g. llama-13b: 13824
NUM_LAYERS=${NUM_LAYERS:-24} # e.g. llama-13b: 40
NUM_HEADS=${NUM_HEADS:-16} # e.g. llama-13b: 40
SEQ_LENGTH=${SEQ_LENGTH:-2048}
NUM_KV_HEADS=${NUM_KV_HEADS:-4} # llama2 70B uses GQA

MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-4}
GLOBAL_BATCH_SIZE=${GLOBAL_BATCH_SIZE:-32} # e.g. llama: 4M tokens
TRAIN_STEPS=${TRAIN_STEPS:-250000} # e.g. llama: 1T tokens / 4M tokens_per_batch = 250000 steps
LR=${LR:-3e-4}
MIN_LR=${MIN_LR:-3e-5}
LR_WARMUP_STEPS=${LR_WARMUP_STEPS:-2000}
WEIGHT_DECAY=0.1
GRAD_CLIP=1
LOG_INTERVAL=${LOG_INTERVAL:-1}
SAVE_INTERVAL=${SAVE_INTERVAL:-10000}
EVAL_INTERVAL=${EVAL_INTERVAL:-1000}
EVAL_ITERS=${EVAL_ITERS:-10}

## Activation checkpointing saves GPU memory, but reduces training speed
activation_checkpoint=${ACTIVATION_CHECKPOINT:-false}

LOG_TO_WANDB=${LOG_TO_WANDB:-0}
if [ "$LOG_TO_WANDB" -eq 1 ]; then
  echo "error: LOG_TO_WANDB=1: this codebase has no Weights & Biases logging (--wandb-*);" \
       "its scalars go to TensorBoard (--tensorboard-dir)" >&2
  exit 2
fi

### Data efficiency (added): the paper's GPT pretraining settings, in steps of the nominal
### batch. The budget is the tokens of TRAIN_STEPS full batches (--train-tokens, which the LR
### schedule also runs on); shorter curriculum steps and dropped tokens consume fewer, so
### the run takes more steps: --train-iters is only a cap, twice the nominal count.
train_tokens=$(( TRAIN_STEPS * GLOBAL_BATCH_SIZE * SEQ_LENGTH ))
train_iters=${TRAIN_ITERS:-$(( 2 * TRAIN_STEPS ))}
lr_warmup_tokens=$(( LR_WARMUP_STEPS * GLOBAL_BATCH_SIZE * SEQ_LENGTH ))

# the names ds_config.sh fills the template with
seq_len=${SEQ_LENGTH}
num_layers=${NUM_LAYERS}
global_batch_size=${GLOBAL_BATCH_SIZE}
batch_size=${MICRO_BATCH_SIZE}
zero_stage=${ZERO_STAGE}
log_interval=${LOG_INTERVAL}
seed=1234
num_workers=${NUM_WORKERS:-2}
prescale_grad="true"

### random-LTD: kept length 128 -> seq_len over 70% of the steps (T_r)
ltd_enabled="true"
ltd_start=${LTD_START:-128}
ltd_step=${LTD_STEP:-$(( TRAIN_STEPS * 70 / 100 ))}

### CL: voc (percentile 1 -> 100, root 2) and seqlen_truncate (80 -> seq_len, step 8),
### over 40% of the steps (T_c)
cl_enabled="true"
cl_total_step=${CL_TOTAL_STEP:-$(( TRAIN_STEPS * 40 / 100 ))}
analysis_home=${ANALYSIS_HOME:-${BASE_PATH}/analysis}
cl_1st_metric="voc"
cl_1st_index_to_sample_path=${CL_1st_SAMPLE_PATH:-${analysis_home}/vocab_rarity/vocab_rarity_index_to_sample_percentile_merged}
cl_1st_index_to_metric_path=${CL_1st_METRIC_PATH:-${analysis_home}/vocab_rarity/vocab_rarity_index_to_metric}
cl_1st_difficulty_type="percentile"
cl_1st_clustering_type="schedule_based"
cl_1st_min=1
cl_1st_max=100
cl_1st_total_step=${cl_total_step}
cl_1st_difficulty_step=1
cl_1st_root=2
cl_2nd_metric="seqlen_truncate"
cl_2nd_index_to_sample_path="dummy"
cl_2nd_index_to_metric_path="dummy"
cl_2nd_difficulty_type="value"
cl_2nd_clustering_type="single_cluster"
cl_2nd_min=${CL_2nd_MIN:-80}
cl_2nd_max=${seq_len}
cl_2nd_total_step=${cl_total_step}
cl_2nd_difficulty_step=8
cl_2nd_root=1
data_cluster_path="${BASE_PATH}/data_cluster"

mkdir -p "$BASE_PATH" "$data_cluster_path"
fill_ds_config "$here/ds_config_llama2_2clmetrics_TEMPLATE.json" "$DS_CONFIG"

ds_args=""
ds_args=" --deepspeed ${ds_args}"
ds_args=" --deepspeed_config=$DS_CONFIG ${ds_args}"
ds_args=" --zero-stage=$ZERO_STAGE ${ds_args}"

if [ "${activation_checkpoint}" = "true" ]; then
  ds_args="--deepspeed-activation-checkpointing ${ds_args}"

  ## new argument for recomputing the transformer layer
  ds_args="--recompute-granularity full --recompute-method uniform ${ds_args}"
fi

# Added to their flags: the curriculum and random-LTD switches (the ds_config holds the
# settings), the budget and the LR schedule on consumed tokens, the index maps' cache.
de_args="--random-ltd --data-efficiency-curriculum-learning --train-tokens $train_tokens \
       --lr-warmup-tokens $lr_warmup_tokens --lr-decay-tokens $train_tokens \
       --num-workers $num_workers --seed $seed --data-cache-path $BASE_PATH/cache"

if [[ $DRY_RUN == 1 && ! -f $ANALYSIS_HOME/voc/meta.json ]]; then
  # the voc index, sized by the run's own flags (tools/analyze_data.py --help: run sizing)
  "$PYTHON" "$root/tools/analyze_data.py" --data-path "$DATASET_1" --granularity sample \
      --split 949,50,1 --seq-length "$SEQ_LENGTH" --seed $seed --metrics voc \
      --save-path "$ANALYSIS_HOME" --data-cache-path "$BASE_PATH/cache" \
      --num-layers $NUM_LAYERS --global-batch-size $GLOBAL_BATCH_SIZE --micro-batch-size $MICRO_BATCH_SIZE \
      --train-iters $train_iters --train-tokens $train_tokens --eval-interval $EVAL_INTERVAL \
      --eval-iters $EVAL_ITERS --deepspeed_config "$DS_CONFIG" --random-ltd \
      --data-efficiency-curriculum-learning
fi

DISTRIBUTED_ARGS="--nproc_per_node $GPUS_PER_NODE --nnodes $NNODES --node_rank $NODE_RANK --master_addr $MASTER_ADDR --master_port $MASTER_PORT"

launch "${TORCHRUN[@]}" $DISTRIBUTED_ARGS \
       "$root/pretrain_gpt.py" \
       --tensor-model-parallel-size $TP \
       --pipeline-model-parallel-size $PP \
       --num-layers $NUM_LAYERS \
       --hidden-size $HIDDEN_SIZE \
       --ffn-hidden-size $FFN_HIDDEN_SIZE \
       --num-attention-heads $NUM_HEADS \
       --micro-batch-size $MICRO_BATCH_SIZE \
       --global-batch-size $GLOBAL_BATCH_SIZE \
       --seq-length $SEQ_LENGTH \
       --max-position-embeddings $SEQ_LENGTH \
       --train-iters $train_iters \
       --save $CHECKPOINT_PATH \
       --load $CHECKPOINT_PATH \
       --data-path $DATASET \
       --data-impl mmap \
       --tokenizer-type GPTSentencePieceTokenizer \
       --tokenizer-model $TOKENIZER_PATH \
       --split 949,50,1 \
       --distributed-backend $DISTRIBUTED_BACKEND \
       --lr $LR \
       --lr-decay-style cosine \
       --min-lr $MIN_LR \
       --weight-decay $WEIGHT_DECAY \
       --clip-grad $GRAD_CLIP \
       --optimizer adam \
       --adam-beta1 0.9 \
       --adam-beta2 0.95 \
       --log-interval $LOG_INTERVAL \
       --save-interval $SAVE_INTERVAL \
       --eval-interval $EVAL_INTERVAL \
       --eval-iters $EVAL_ITERS \
       --bf16 \
       --no-query-key-layer-scaling \
       --attention-dropout 0 \
       --hidden-dropout 0 \
       --use-rotary-position-embeddings \
       --untie-embeddings-and-output-weights \
       --swiglu \
       --normalization rmsnorm \
       --disable-bias-linear \
       --num-key-value-heads $NUM_KV_HEADS \
       $de_args \
       $ds_args \
       ${EXTRA_ARGS:-}
