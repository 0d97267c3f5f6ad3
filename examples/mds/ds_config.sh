# Fills a ds_config_*_TEMPLATE.json of this folder the way Megatron-DeepSpeed's
# data-efficiency scripts do (one sed pass per placeholder there; one pass here).
# Sourced by the two recipes; reads their shell variables.
fill_ds_config() {   # fill_ds_config TEMPLATE OUTPUT
    local layer_ids
    layer_ids=$(seq -s, 1 $(( num_layers - 2 )))
    sed -e "s/GBSIZE/${global_batch_size}/" \
        -e "s/MBSIZE/${batch_size}/" \
        -e "s/LOG_INTERVAL/${log_interval}/" \
        -e "s/ZERO_STAGE/${zero_stage}/" \
        -e "s/PRESCALE_GRAD/${prescale_grad}/" \
        -e "s/DATA_EFFICIENCY_SEED/${seed}/" \
        -e "s/LTD_ENABLED/${ltd_enabled}/" \
        -e "s/LTD_TOTAL_LAYERS/${num_layers}/" \
        -e "s/LTD_LAYER_NUM/$(( num_layers - 2 ))/" \
        -e "s/LTD_LAYER_IDS/${layer_ids}/" \
        -e "s/LTD_MIN/${ltd_start}/" \
        -e "s/LTD_MAX/${seq_len}/" \
        -e "s/LTD_STEP/${ltd_step}/" \
        -e "s/CL_ENABLED/${cl_enabled}/" \
        -e "s/DATA_SAMPLING_NUM_WORKERS/${num_workers}/" \
        -e "s#CL_CLUSTER_PATH#${data_cluster_path}#" \
        -e "s#CL_1st_METRIC_NAME#${cl_1st_metric}#" \
        -e "s#CL_1st_SAMPLE_PATH#${cl_1st_index_to_sample_path}#" \
        -e "s#CL_1st_METRIC_PATH#${cl_1st_index_to_metric_path}#" \
        -e "s#CL_1st_DIFF_TYPE#${cl_1st_difficulty_type}#" \
        -e "s#CL_1st_CLUSTER_TYPE#${cl_1st_clustering_type}#" \
        -e "s/CL_1st_MIN/${cl_1st_min}/" \
        -e "s/CL_1st_MAX/${cl_1st_max}/" \
        -e "s/CL_1st_TOTAL_STEP/${cl_1st_total_step}/" \
        -e "s/CL_1st_DIFF_STEP/${cl_1st_difficulty_step}/" \
        -e "s/CL_1st_ROOT/${cl_1st_root}/" \
        -e "s#CL_2nd_METRIC_NAME#${cl_2nd_metric}#" \
        -e "s#CL_2nd_SAMPLE_PATH#${cl_2nd_index_to_sample_path}#" \
        -e "s#CL_2nd_METRIC_PATH#${cl_2nd_index_to_metric_path}#" \
        -e "s#CL_2nd_DIFF_TYPE#${cl_2nd_difficulty_type}#" \
        -e "s#CL_2nd_CLUSTER_TYPE#${cl_2nd_clustering_type}#" \
        -e "s/CL_2nd_MIN/${cl_2nd_min}/" \
        -e "s/CL_2nd_MAX/${cl_2nd_max}/" \
        -e "s/CL_2nd_TOTAL_STEP/${cl_2nd_total_step}/" \
        -e "s/CL_2nd_DIFF_STEP/${cl_2nd_difficulty_step}/" \
        -e "s/CL_2nd_ROOT/${cl_2nd_root}/" \
        "$1" > "$2"
}

# Runs the launcher, or with PRINT_COMMAND=1 prints its arguments one per line (what a test
# or a reader wants to see without a GPU cluster).
launch() {
    if [ "${PRINT_COMMAND:-0}" = "1" ]; then
        printf '%s\n' "$@"
    else
        "$@"
    fi
}
