# The data of a recipe's DRY_RUN=1: the default corpus (this Python's standard library,
# tools/prepare_default_corpus.py), a SentencePiece tokenizer trained on it and its token
# store, built once under a folder. Sourced by the recipes after examples/_python.sh.
#   dry_run_data DIR   ->  DIR/corpus_text_document.bin/.idx and DIR/sp.model
#   (1.5 MB of the corpus, 2,000 SentencePiece pieces)
dry_run_data() {
  local dir=$1 root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  mkdir -p "$dir"
  [[ -s $dir/corpus_text_document.idx && -s $dir/sp.model ]] && return 0
  "$PYTHON" "$root"/tools/prepare_default_corpus.py --output "$dir/corpus.jsonl" --skip-tests \
      --max-bytes 1500000
  "$PYTHON" "$root"/tools/train_tokenizer.py --input "$dir/corpus.jsonl" --model-prefix "$dir/sp" \
      --vocab-size 2000 --num-threads 2
  "$PYTHON" "$root"/tools/preprocess_data.py --input "$dir/corpus.jsonl" --output-prefix "$dir/corpus" \
      --tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$dir/sp.model" \
      --append-eod --workers 2
}
