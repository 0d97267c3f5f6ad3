#!/bin/bash
# GPT-3 1.3B, CL_seqtru_voc + random-LTD, 300B tokens: Megatron-DeepSpeed's
# examples_deepspeed/data_efficiency/gpt/pretrain/ds_pretrain_gpt_1.3B_dense_base_script.sh
# with the settings of its "CL+random-LTD 300B tokens (100%)" block, in Megatron-DeepSpeed's
# own flag spelling and ds_config JSON, launched by torchrun instead of deepspeed.
#
# See README.md in this folder (and the main README) for what each DeepSpeed-only flag maps
# to. Every setting below can be overridden from the environment (the CPU test shrinks the
# model and the run that way).
# PRINT_COMMAND=1 prints the launch command's arguments instead of running it. The
# launcher is the torchrun of $PYTHON (examples/_python.sh: the project's .venv by default).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/ds_config.sh"
source "$root/examples/_python.sh"

### Model (GPT-3 XL 1.3B) and batch
seq_len=${SEQ_LEN:-2048}
num_layers=${NUM_LAYERS:-24}
hidden_size=${HIDDEN_SIZE:-2048}
num_attn_heads=${NUM_ATTN_HEADS:-16}
global_batch_size=${GLOBAL_BATCH_SIZE:-512}
lr=${LR:-2.0e-4}
min_lr=1.0e-6
init_std=0.013

### Duration: train_tokens is the main stop; train_samples only sizes the dataset
train_tokens=${TRAIN_TOKENS:-300000000000}
train_samples=${TRAIN_SAMPLES:-$(( 300 * 1000000000 * 2 / seq_len ))}
exit_duration=30000000
lr_warmup_tokens=${LR_WARMUP_TOKENS:-3000000000}
lr_decay_tokens=${train_tokens}
lr_decay_style="cosine"

### Parallelism: no MP, no PP, ZeRO stage 1
mp_size=1
pp_size=1
zero_stage=${ZERO_STAGE:-1}
nproc_per_node=${NPROC_PER_NODE:-8}
num_nodes=${NNODES:-1}
dp_size=$(( nproc_per_node * num_nodes / pp_size / mp_size ))
batch_size=${MICRO_BATCH_SIZE:-$(( global_batch_size / dp_size ))}

### random-LTD: kept length 128 -> seq_len over 200000 steps
ltd_enabled="true"
ltd_start=${LTD_START:-128}
ltd_step=${LTD_STEP:-200000}

### CL: voc (percentile 1 -> 100, root 2) and seqlen_truncate (80 -> seq_len, step 8)
cl_enabled="true"
cl_total_step=${CL_TOTAL_STEP:-110000}
analysis_home=${ANALYSIS_HOME:-/data/analysis_pile_gpt_1epoch}
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

### Logging, evaluation, checkpoints
log_interval=${LOG_INTERVAL:-100}
eval_iters=${EVAL_ITERS:-10}
eval_interval=${EVAL_INTERVAL:-100}
estimated_train_iter=$(( train_tokens / seq_len / global_batch_size ))
save_interval=${SAVE_INTERVAL:-$(( estimated_train_iter / 100 > 0 ? estimated_train_iter / 100 : 1 ))}
seed=1234
num_workers=${NUM_WORKERS:-0}
prescale_grad="true"
if [[ $zero_stage -gt 0 ]]; then prescale_grad="false"; fi

### Data: the token store and the sample maps the analyzer indexed
data_home=${DATA_HOME:-/data/the_pile_public_merged_nopreprocessing}
data_path=${DATA_PATH:-${data_home}/pile_text_document}
doc_idx_path=${DOC_IDX_PATH:-${data_home}/pile_text_document_train_indexmap_exact1ep_2048sl_1234s_doc_idx.npy}
sample_idx_path=${SAMPLE_IDX_PATH:-${data_home}/pile_text_document_train_indexmap_exact1ep_2048sl_1234s_sample_idx.npy}
shuffle_idx_path=${SHUFFLE_IDX_PATH:-${data_home}/pile_text_document_train_indexmap_exact1ep_2048sl_1234s_shuffle_idx.npy}
vocab_path=${VOCAB_FILE:-gpt2-vocab.json}
merge_path=${MERGE_FILE:-gpt2-merges.txt}

output_home=${OUTPUT_HOME:-$root/build/mds_gpt}
jobname="gpt_1.3B_cl_seqtru_voc_ltd_seed${seed}"
checkpoint_path="${output_home}/checkpoint/${jobname}"
tensorboard_path="${output_home}/tensorboard/${jobname}"
data_cluster_path="${output_home}/data_cluster/${jobname}"
mkdir -p "$checkpoint_path" "$tensorboard_path" "$data_cluster_path"

config_json="${output_home}/ds_config_gbs${global_batch_size}_mbs${batch_size}_zero${zero_stage}_ltd_${ltd_start}_${ltd_step}_cl.json"
fill_ds_config "$here/ds_config_gpt_2clmetrics_TEMPLATE.json" "$config_json"

launch "${TORCHRUN[@]}" --nnodes "$num_nodes" --nproc_per_node "$nproc_per_node" "$root/pretrain_gpt.py" \
    --override-opt_param-scheduler \
    --adam-beta1 0.9 \
    --adam-beta2 0.95 \
    --tensor-model-parallel-size ${mp_size} \
    --init-method-std ${init_std} \
    --lr-decay-tokens ${lr_decay_tokens} \
    --lr-warmup-tokens ${lr_warmup_tokens} \
    --micro-batch-size ${batch_size} \
    --exit-duration-in-mins ${exit_duration} \
    --global-batch-size ${global_batch_size} \
    --num-layers ${num_layers} \
    --hidden-size ${hidden_size} \
    --num-attention-heads ${num_attn_heads} \
    --seq-length ${seq_len} \
    --max-position-embeddings ${seq_len} \
    --train-tokens ${train_tokens} \
    --train-samples ${train_samples} \
    --lr ${lr} \
    --min-lr ${min_lr} \
    --lr-decay-style ${lr_decay_style} \
    --split 949,50,1 \
    --log-interval ${log_interval} \
    --eval-interval ${eval_interval} \
    --eval-iters ${eval_iters} \
    --save-interval ${save_interval} \
    --weight-decay 0.1 \
    --clip-grad 1.0 \
    --hysteresis 2 \
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
    --checkpoint-activations \
    --log-optimizer-states-to-tensorboard \
    --random-ltd \
    --train-doc-idx-path "${doc_idx_path}" \
    --train-sample-idx-path "${sample_idx_path}" \
    --train-shuffle-idx-path "${shuffle_idx_path}" \
    --data-efficiency-curriculum-learning \
    --vocab-file "${vocab_path}" \
    --merge-file "${merge_path}" \
    --data-path "${data_path}" \
    --data-impl mmap \
    --deepspeed \
    --deepspeed_config "${config_json}" \
    --zero-stage ${zero_stage} \
    --pipeline-model-parallel-size ${pp_size} \
    --no-pipeline-parallel \
    --deepspeed-activation-checkpointing \
    ${EXTRA_ARGS:-}
