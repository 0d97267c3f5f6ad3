# The last step of the Hugging Face recipes (finetune_gpt2_cl_ltd.sh,
# continue_pretraining_cl_ltd.sh): export the trained checkpoint to a transformers folder,
# never replacing a finished export unless asked. Sourced after examples/_python.sh.
#
#   EXPORT          the folder (the recipe sets its default)
#   REPLACE_EXPORT  1: a new export replaces a finished one, once written whole
#   check_export    run first: a finished export and no REPLACE_EXPORT=1 stops the recipe
#                   at once, before any training, with one error line
#   export_hf CKPT  write EXPORT from the checkpoint folder CKPT
REPLACE_EXPORT=${REPLACE_EXPORT:-0}

_export_done() { [[ -d $EXPORT && -n $(ls -A "$EXPORT") ]]; }

check_export() {
  if _export_done && [[ $REPLACE_EXPORT != 1 ]]; then
    echo "error: $EXPORT holds a finished export; set REPLACE_EXPORT=1 to replace it with" \
         "this run's, or EXPORT=<a new folder>" >&2
    exit 2
  fi
}

export_hf() {
  if _export_done && [[ $REPLACE_EXPORT == 1 ]]; then
    rm -rf "$EXPORT.new"
    "$PYTHON" tools/checkpoint_util.py --saver hf --load-dir "$1" --save-dir "$EXPORT.new"
    rm -rf "$EXPORT" && mv "$EXPORT.new" "$EXPORT"
  else                     # checkpoint_util refuses a folder that is not empty
    "$PYTHON" tools/checkpoint_util.py --saver hf --load-dir "$1" --save-dir "$EXPORT"
  fi
}
