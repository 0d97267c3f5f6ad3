"""Read and write a ``transformers`` model directory, and carry the tokenizer files over.

A written directory holds ``config.json``, ``model.safetensors`` (fp32 or the checkpoint's
dtype, contiguous tensors), the tokenizer files our run used and a
``tokenizer_config.json`` naming the matching ``transformers`` tokenizer class (a Hugging
Face tokenizer's files are copied as they are: its folder's own ``tokenizer_config.json``,
or one written for a bare ``tokenizer.json``). It is
written as ``DIR.tmp`` and renamed into place, so a crash never leaves a half directory
that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil

import torch

from megatron.run_config import TokenizerConfig
from megatron.tokenizer.hf_tokenization import (HF_TYPE, bare_file_special_tokens,
                                                canonical_type)
from megatron.tokenizer.hf_tokenization import tokenizer_files as hf_tokenizer_files

# our --tokenizer-type -> (transformers class, {our flag: file name there}, extra config)
_TOKENIZERS = {
    "GPT2BPETokenizer": ("GPT2Tokenizer", {"vocab_file": "vocab.json",
                                           "merge_file": "merges.txt"}, {}),
    "BertWordPieceLowerCase": ("BertTokenizer", {"vocab_file": "vocab.txt"},
                               {"do_lower_case": True}),
    "BertWordPieceCase": ("BertTokenizer", {"vocab_file": "vocab.txt"},
                          {"do_lower_case": False}),
}


def tokenizer_files(tokenizer: TokenizerConfig, max_positions: int
                    ) -> tuple[dict[str, str], dict | None, str]:
    """Files to copy ``{name in the HF dir: source path}``, the tokenizer config (its
    ``model_max_length`` the model's ``max_positions``), and a note for the user (empty
    when everything was carried over)."""
    kind = canonical_type(tokenizer.tokenizer_type)
    if kind == HF_TYPE:
        return _hf_tokenizer_files(tokenizer, max_positions)
    if kind not in _TOKENIZERS:
        return {}, None, (f"tokenizer {kind!r} has no transformers counterpart here: "
                          "no tokenizer files were written")
    cls, names, extra = _TOKENIZERS[kind]
    files, missing = {}, []
    for flag, name in names.items():
        path = getattr(tokenizer, flag)
        if path and os.path.isfile(path):
            files[name] = path
        else:
            missing.append(f"--{flag.replace('_', '-')} {path!r}")
    if missing:
        return {}, None, ("tokenizer files not found (" + ", ".join(missing) + "; paths are "
                          "as saved by the training run): no tokenizer files were written")
    config = {"tokenizer_class": cls, "model_max_length": max_positions, **extra}
    if cls == "GPT2Tokenizer":
        config.update(bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                      unk_token="<|endoftext|>")
    return files, config, ""


def _hf_tokenizer_files(tokenizer: TokenizerConfig, max_positions: int
                        ) -> tuple[dict[str, str], dict | None, str]:
    """A Hugging Face tokenizer's files, copied as they are; a ``tokenizer_config.json``
    (its special tokens by their conventional names) only where the run had none."""
    path = tokenizer.tokenizer_model
    try:
        found = hf_tokenizer_files(path or "")
    except (OSError, ValueError) as err:
        return {}, None, (f"tokenizer files not found ({err}; paths are as saved by the "
                          "training run): no tokenizer files were written")
    config = None
    if "tokenizer_config.json" not in found:
        config = {"tokenizer_class": "PreTrainedTokenizerFast",
                  "model_max_length": max_positions,
                  **bare_file_special_tokens(found["tokenizer.json"])}
    return found, config, ""


def tokenizer_flags(tokenizer: TokenizerConfig) -> list[str]:
    """The tokenizer flags of a checkpoint's run, for the command that trains from it."""
    kind = tokenizer.tokenizer_type
    flags = [f"--tokenizer-type {kind}"] if kind else []
    names = ("vocab_size",) if kind == "NullTokenizer" else \
        ("vocab_file", "merge_file", "tokenizer_model")
    for name in names:
        if getattr(tokenizer, name):
            flags.append(f"--{name.replace('_', '-')} {getattr(tokenizer, name)}")
    return flags


def write_model_dir(save_dir: str, config, tensors: dict[str, torch.Tensor],
                    files: dict[str, str], tokenizer_config: dict | None) -> str:
    """Write the directory atomically; ``save_dir`` must be absent or empty."""
    from safetensors.torch import save_file
    save_dir = os.path.abspath(save_dir)
    if os.path.isdir(save_dir) and os.listdir(save_dir):
        raise FileExistsError(f"{save_dir} is not empty; choose an empty --save-dir")
    tmp = save_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    config.save_pretrained(tmp)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()},
              os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    for name, src in files.items():
        shutil.copyfile(src, os.path.join(tmp, name))
    if tokenizer_config is not None:
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump(tokenizer_config, f, indent=2)
    if os.path.isdir(save_dir):
        os.rmdir(save_dir)
    os.rename(tmp, save_dir)
    return save_dir


def _weight_files(load_dir: str) -> list[str]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        path = os.path.join(load_dir, index)
        if os.path.isfile(path):
            shards = sorted(set(json.load(open(path))["weight_map"].values()))
            return [os.path.join(load_dir, s) for s in shards]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(load_dir, name)):
            return [os.path.join(load_dir, name)]
    raise FileNotFoundError(f"{load_dir} holds no model.safetensors, pytorch_model.bin or "
                            "shard index: is it a transformers model directory?")


def read_model_dir(load_dir: str):
    """(config, {name: tensor}) of a local ``transformers`` model directory (no download)."""
    import transformers
    from safetensors.torch import load_file
    if not os.path.isfile(os.path.join(load_dir, "config.json")):
        raise FileNotFoundError(f"{load_dir}/config.json not found: is --load-dir a "
                                "transformers model directory?")
    config = transformers.AutoConfig.from_pretrained(load_dir, local_files_only=True)
    tensors: dict[str, torch.Tensor] = {}
    for path in _weight_files(load_dir):
        part = load_file(path) if path.endswith(".safetensors") else \
            torch.load(path, map_location="cpu", weights_only=True)
        tensors.update(part)
    if config.model_type == "gpt2" and "wte.weight" in tensors:   # bare GPT2Model files
        tensors = {f"transformer.{k}": v for k, v in tensors.items()}
    return config, tensors


def _tokenizer_config(load_dir: str) -> dict:
    path = os.path.join(load_dir, "tokenizer_config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def hf_tokenizer_args(load_dir: str) -> dict:
    """Our tokenizer flags for the tokenizer files of an HF directory (absolute paths):
    GPT-2's BPE files (a GPT-2 tokenizer class or none named) and BERT's vocab.txt as our
    own tokenizers; any other ``tokenizer.json`` / ``tokenizer_config.json`` as a
    ``HuggingFaceTokenizer`` of the directory."""
    config = _tokenizer_config(load_dir)
    vocab_json, merges = (os.path.join(load_dir, n) for n in ("vocab.json", "merges.txt"))
    if os.path.isfile(vocab_json) and os.path.isfile(merges) and \
            config.get("tokenizer_class") in (None, "GPT2Tokenizer", "GPT2TokenizerFast"):
        return {"tokenizer_type": "GPT2BPETokenizer", "vocab_file": os.path.abspath(vocab_json),
                "merge_file": os.path.abspath(merges)}
    vocab_txt = os.path.join(load_dir, "vocab.txt")
    if os.path.isfile(vocab_txt):
        lower = bool(config.get("do_lower_case", True))
        return {"tokenizer_type": "BertWordPieceLowerCase" if lower else "BertWordPieceCase",
                "vocab_file": os.path.abspath(vocab_txt)}
    if any(os.path.isfile(os.path.join(load_dir, n))
           for n in ("tokenizer.json", "tokenizer_config.json")):
        return {"tokenizer_type": HF_TYPE, "tokenizer_model": os.path.abspath(load_dir)}
    return {}
