"""Megatron-style GPT/BERT pretraining with data efficiency (curriculum learning, random-LTD)."""
