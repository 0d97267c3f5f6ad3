"""Tiny configs shared by the MoE tests."""
from megatron.model.config import TransformerConfig
from megatron.model.moe.config import MoEConfig, moe_layer_ids


def moe_config(num_experts=4, topk=1, capacity=None, policy="probs", layers=4, freq=2,
               coeff=0.01, ep=1, min_capacity=0) -> MoEConfig:
    return MoEConfig(num_experts=num_experts, moe_layer_ids=moe_layer_ids(layers, freq),
                     topk=topk, aux_loss_coeff=coeff, train_capacity_factor=capacity,
                     eval_capacity_factor=capacity, min_capacity=min_capacity,
                     token_drop_policy=policy, expert_model_parallel_size=ep)


def model_config(moe=None, layers=4, hidden=16, vocab=64, seq=16, **kw) -> TransformerConfig:
    return TransformerConfig(num_layers=layers, hidden_size=hidden, num_attention_heads=2,
                             padded_vocab_size=vocab, max_position_embeddings=seq,
                             hidden_dropout=0.0, attention_dropout=0.0,
                             use_cpu_initialization=True, moe=moe, **kw)
