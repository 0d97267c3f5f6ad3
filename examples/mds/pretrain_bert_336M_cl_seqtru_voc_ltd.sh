#!/bin/bash
# BERT-large 336M, CL_seqtru_voc + random-LTD, 2M steps: Megatron-DeepSpeed's
# examples_deepspeed/data_efficiency/bert/pretrain/ds_pretrain_bert_336M_base_script.sh
# with the settings of its "CL+random-LTD 1049B tokens (100%)" block, in Megatron-DeepSpeed's
# own flag spelling and ds_config JSON, launched by torchrun instead of deepspeed.
#
# See README.md in this folder (and the main README) for what each DeepSpeed-only flag maps
# to. Every setting below can be overridden from the environment.
# PRINT_COMMAND=1 prints the launch command's arguments instead of running it. The
# launcher is the torchrun of $PYTHON (examples/_python.sh: the project's .venv by default).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/ds_config.sh"
source "$root/examples/_python.sh"

### Model (BERT-large 336M) and batch
seq_len=${SEQ_LEN:-512}
num_layers=${NUM_LAYERS:-24}
hidden_size=${HIDDEN_SIZE:-1024}
num_attn_heads=${NUM_ATTN_HEADS:-16}
global_batch_size=${GLOBAL_BATCH_SIZE:-1024}
lr=${LR:-1e-4}
min_lr=1e-5
init_std=0.02

### Duration: train_tokens (2M steps' worth) and train_iters are both stop conditions
train_iters_of_tokens=${TRAIN_ITERS_OF_TOKENS:-2000000}
train_tokens=$(( train_iters_of_tokens * seq_len * global_batch_size ))
train_iters=${TRAIN_ITERS:-4000000}
exit_duration=30000000
lr_warmup_iters=${LR_WARMUP_ITERS:-10000}
lr_decay_tokens=${train_tokens}
lr_decay_style="linear"

### Parallelism: no MP, no PP, no ZeRO
mp_size=1
pp_size=1
zero_stage=${ZERO_STAGE:-0}
nproc_per_node=${NPROC_PER_NODE:-8}
num_nodes=${NNODES:-1}
dp_size=$(( nproc_per_node * num_nodes / pp_size / mp_size ))
batch_size=${MICRO_BATCH_SIZE:-$(( global_batch_size / dp_size ))}

### random-LTD: kept length 128 -> seq_len over 2M steps, dropout 0.1
ltd_enabled="true"
ltd_start=${LTD_START:-128}
ltd_step=${LTD_STEP:-2000000}
dropout=1e-1

### CL: voc (percentile 5 -> 100, root 2) and seqlen_truncate (128 -> seq_len, step 8)
cl_enabled="true"
cl_total_step=${CL_TOTAL_STEP:-960000}
analysis_home=${ANALYSIS_HOME:-/data/analysis_pile_bert_5epoch}
cl_1st_metric="voc"
cl_1st_index_to_sample_path=${CL_1st_SAMPLE_PATH:-${analysis_home}/vocab_rarity/vocab_rarity_index_to_sample_percentile_merged}
cl_1st_index_to_metric_path=${CL_1st_METRIC_PATH:-${analysis_home}/vocab_rarity/vocab_rarity_index_to_metric}
cl_1st_difficulty_type="percentile"
cl_1st_clustering_type="schedule_based"
cl_1st_min=5
cl_1st_max=100
cl_1st_total_step=${cl_total_step}
cl_1st_difficulty_step=1
cl_1st_root=2
cl_2nd_metric="seqlen_truncate"
cl_2nd_index_to_sample_path="dummy"
cl_2nd_index_to_metric_path="dummy"
cl_2nd_difficulty_type="value"
cl_2nd_clustering_type="single_cluster"
cl_2nd_min=${CL_2nd_MIN:-128}
cl_2nd_max=${seq_len}
cl_2nd_total_step=${cl_total_step}
cl_2nd_difficulty_step=8
cl_2nd_root=1

### Logging, evaluation, checkpoints
log_interval=${LOG_INTERVAL:-100}
eval_iters=${EVAL_ITERS:-10}
eval_interval=${EVAL_INTERVAL:-1000}
estimated_train_iter=$(( train_tokens / seq_len / global_batch_size ))
save_interval=${SAVE_INTERVAL:-$(( estimated_train_iter / 100 > 0 ? estimated_train_iter / 100 : 1 ))}
seed=1234
num_workers=${NUM_WORKERS:-4}
prescale_grad="true"
if [[ $zero_stage -gt 0 ]]; then prescale_grad="false"; fi

### Data: the sentence-level token store and the samples mapping the analyzer indexed
data_home=${DATA_HOME:-/data/the_pile_bert}
data_path=${DATA_PATH:-${data_home}/pile_bert_train_text_sentence}
train_idx_path=${TRAIN_IDX_PATH:-${data_home}/pile_bert_train_text_sentence_train_indexmap_exact5ep_509msl_0.10ssp_1234s.npy}
vocab_path=${VOCAB_FILE:-bert-large-uncased-vocab.txt}

output_home=${OUTPUT_HOME:-$root/build/mds_bert}
jobname="bert_336M_cl_seqtru_voc_ltd_seed${seed}"
checkpoint_path="${output_home}/checkpoint/${jobname}"
tensorboard_path="${output_home}/tensorboard/${jobname}"
data_cluster_path="${output_home}/data_cluster/${jobname}"
mkdir -p "$checkpoint_path" "$tensorboard_path" "$data_cluster_path"

config_json="${output_home}/ds_config_gbs${global_batch_size}_mbs${batch_size}_zero${zero_stage}_ltd_${ltd_start}_${ltd_step}_cl.json"
fill_ds_config "$here/ds_config_bert_2clmetrics_TEMPLATE.json" "$config_json"

launch "${TORCHRUN[@]}" --nnodes "$num_nodes" --nproc_per_node "$nproc_per_node" "$root/pretrain_bert.py" \
    --override-opt_param-scheduler \
    --adam-beta1 0.9 \
    --adam-beta2 0.999 \
    --tensor-model-parallel-size ${mp_size} \
    --init-method-std ${init_std} \
    --lr-decay-tokens ${lr_decay_tokens} \
    --lr-warmup-iters ${lr_warmup_iters} \
    --micro-batch-size ${batch_size} \
    --exit-duration-in-mins ${exit_duration} \
    --global-batch-size ${global_batch_size} \
    --num-layers ${num_layers} \
    --hidden-size ${hidden_size} \
    --num-attention-heads ${num_attn_heads} \
    --seq-length ${seq_len} \
    --max-position-embeddings ${seq_len} \
    --train-tokens ${train_tokens} \
    --train-iters ${train_iters} \
    --lr ${lr} \
    --min-lr ${min_lr} \
    --lr-decay-style ${lr_decay_style} \
    --split 949,50,1 \
    --log-interval ${log_interval} \
    --eval-interval ${eval_interval} \
    --eval-iters ${eval_iters} \
    --save-interval ${save_interval} \
    --weight-decay 1e-2 \
    --clip-grad 1.0 \
    --num-workers ${num_workers} \
    --fp16 \
    --seed ${seed} \
    --load "${checkpoint_path}" \
    --save "${checkpoint_path}" \
    --tensorboard-queue-size 1 \
    --log-timers-to-tensorboard \
    --log-batch-size-to-tensorboard \
    --log-validation-ppl-to-tensorboard \
    --tensorboard-dir "${tensorboard_path}" \
    --log-optimizer-states-to-tensorboard \
    --attention-dropout ${dropout} \
    --hidden-dropout ${dropout} \
    --random-ltd \
    --train-idx-path "${train_idx_path}" \
    --data-efficiency-curriculum-learning \
    --vocab-file "${vocab_path}" \
    --data-path "${data_path}" \
    --data-impl mmap \
    --deepspeed \
    --deepspeed_config "${config_json}" \
    --zero-stage ${zero_stage} \
    --pipeline-model-parallel-size ${pp_size} \
    --no-pipeline-parallel \
    ${EXTRA_ARGS:-}
