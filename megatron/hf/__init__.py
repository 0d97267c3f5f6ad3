"""Hugging Face ``transformers`` interop: export our checkpoints, import theirs.

* :mod:`megatron.hf.mapping` -- pure tensor renames/reshapes between our whole-model state
  dict and the ``transformers`` one (GPT2LMHeadModel, GPTNeoXForCausalLM,
  MegatronBertForPreTraining / MegatronBertForMaskedLM, LlamaForCausalLM), by the layer
  spec's slots; torch only.
* :mod:`megatron.hf.architecture` -- which ``transformers`` architecture equals a
  checkpoint's model (or why none does), and the config in both directions;
  :mod:`megatron.hf.llama` the Llama config and its checks.
* :mod:`megatron.hf.hf_dir` -- read/write a model directory (``config.json``,
  ``model.safetensors``, tokenizer files), atomically.

Driven by ``tools/checkpoint_util.py --saver hf`` / ``--loader hf``. ``transformers`` and
``safetensors`` (requirements-eval.txt) are imported inside functions only: the training
path never imports this package.
"""
