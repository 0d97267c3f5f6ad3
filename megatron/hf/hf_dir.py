"""Read and write a ``transformers`` model directory, and carry the tokenizer files over.

A written directory holds ``config.json``, ``model.safetensors`` (fp32 or the checkpoint's
dtype, contiguous tensors), the tokenizer files our run used and a
``tokenizer_config.json`` naming the matching ``transformers`` tokenizer class. It is
written as ``DIR.tmp`` and renamed into place, so a crash never leaves a half directory
that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil

import torch

# our --tokenizer-type -> (transformers class, {our flag: file name there}, extra config)
_TOKENIZERS = {
    "GPT2BPETokenizer": ("GPT2Tokenizer", {"vocab_file": "vocab.json",
                                           "merge_file": "merges.txt"}, {}),
    "BertWordPieceLowerCase": ("BertTokenizer", {"vocab_file": "vocab.txt"},
                               {"do_lower_case": True}),
    "BertWordPieceCase": ("BertTokenizer", {"vocab_file": "vocab.txt"},
                          {"do_lower_case": False}),
}


def tokenizer_files(args: dict) -> tuple[dict[str, str], dict | None, str]:
    """Files to copy ``{name in the HF dir: source path}``, the tokenizer config, and a
    note for the user (empty when everything was carried over)."""
    kind = args.get("tokenizer_type")
    if kind not in _TOKENIZERS:
        return {}, None, (f"tokenizer {kind!r} has no transformers counterpart here: "
                          "no tokenizer files were written")
    cls, names, extra = _TOKENIZERS[kind]
    files, missing = {}, []
    for flag, name in names.items():
        path = args.get(flag)
        if path and os.path.isfile(path):
            files[name] = path
        else:
            missing.append(f"--{flag.replace('_', '-')} {path!r}")
    if missing:
        return {}, None, ("tokenizer files not found (" + ", ".join(missing) + "; paths are "
                          "as saved by the training run): no tokenizer files were written")
    config = {"tokenizer_class": cls, "model_max_length": int(args["max_position_embeddings"]),
              **extra}
    if cls == "GPT2Tokenizer":
        config.update(bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                      unk_token="<|endoftext|>")
    return files, config, ""


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


def hf_tokenizer_args(load_dir: str) -> dict:
    """Our tokenizer flags for the tokenizer files of an HF directory (absolute paths)."""
    vocab_json, merges = (os.path.join(load_dir, n) for n in ("vocab.json", "merges.txt"))
    if os.path.isfile(vocab_json) and os.path.isfile(merges):
        return {"tokenizer_type": "GPT2BPETokenizer", "vocab_file": os.path.abspath(vocab_json),
                "merge_file": os.path.abspath(merges)}
    vocab_txt = os.path.join(load_dir, "vocab.txt")
    if os.path.isfile(vocab_txt):
        lower = True
        cfg = os.path.join(load_dir, "tokenizer_config.json")
        if os.path.isfile(cfg):
            lower = bool(json.load(open(cfg)).get("do_lower_case", True))
        return {"tokenizer_type": "BertWordPieceLowerCase" if lower else "BertWordPieceCase",
                "vocab_file": os.path.abspath(vocab_txt)}
    return {}
