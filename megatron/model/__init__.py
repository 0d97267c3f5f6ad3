"""GPT/BERT models built from tensor-parallel layers."""
from megatron.model.bert_model import BertModel
from megatron.model.config import TransformerConfig
from megatron.model.gpt_model import GPTModel
from megatron.model.module import Float16Module, MegatronModule

__all__ = ["TransformerConfig", "GPTModel", "BertModel", "Float16Module", "MegatronModule"]
