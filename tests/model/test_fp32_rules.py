"""What stays fp32 in a bf16 model (megatron/model/precision.py): each rule checked so that
breaking it fails here. RoPE and the router are checked through the real cast
(``Float16Module``); norms, softmax and loss against an fp64 reference on the same bf16
inputs, with a tolerance a bf16 computation of the statistic does not meet."""
import torch

from megatron.core.tensor_parallel import vocab_parallel_cross_entropy
from megatron.model import GPTModel
from megatron.model.fused_layer_norm import LayerNorm
from megatron.model.module import Float16Module
from megatron.model.norms import RMSNorm
from megatron.model.attention import core_attention
from megatron.optimizer import OptimizerConfig, get_megatron_optimizer
from tests.moe.helpers import model_config, moe_config


def _half_gpt(**kw) -> tuple[GPTModel, Float16Module]:
    torch.manual_seed(0)
    fp32 = GPTModel(model_config(**kw))
    torch.manual_seed(0)
    return fp32, Float16Module(GPTModel(model_config(**kw)), torch.bfloat16)


def test_rope_frequencies_and_angles_stay_fp32_under_bf16():
    fp32, half = _half_gpt(position_embedding_type="rope", seq=4096)
    rope = half.module.rotary_pos_emb
    assert rope.inv_freq.dtype == torch.float32
    positions = torch.tensor([[0, 1, 2047, 4095]])
    angles = rope(positions)
    assert angles.dtype == torch.float32
    # exactly the fp32 module's angles (a bf16 inv_freq is ~0.37 rad off at 2047)
    assert torch.equal(angles, fp32.rotary_pos_emb(positions))
    # the model's parameters did become bf16
    assert half.module.embedding.word_embeddings.weight.dtype == torch.bfloat16


def test_router_weight_and_logits_stay_fp32_under_bf16():
    _, half = _half_gpt(moe=moe_config(num_experts=4, layers=2, freq=1), layers=2)
    router = half.module.transformer.layers[0].mlp.router
    assert router.weight.dtype == torch.float32
    logits = router(torch.randn(5, 16, dtype=torch.bfloat16))
    assert logits.dtype == torch.float32
    # the optimizer gives it its own fp32 gradient buffer beside the bf16 parameters'
    opt = get_megatron_optimizer([half], OptimizerConfig(bf16=True, use_distributed_optimizer=True))
    assert router.weight.main_grad.dtype == torch.float32
    assert {b.param_data.dtype for b in opt.optimizer.buffers} == {torch.bfloat16, torch.float32}


def test_layer_norm_statistics_are_fp32():
    torch.manual_seed(0)
    norm = LayerNorm(256, dtype=torch.bfloat16)
    # a large mean and a small spread: bf16 statistics lose the spread entirely
    x = (1000.0 + torch.randn(8, 256)).bfloat16()
    want = torch.nn.functional.layer_norm(x.double(), (256,), eps=1e-5)
    got = norm(x)
    assert got.dtype == torch.bfloat16
    assert (got.double() - want).abs().max() < 0.02   # bf16 rounding of the output only


def test_rms_norm_statistics_are_fp32():
    """A constant row normalises to exactly 1 (weight 1): fp32 statistics give 1 - ~eps/2c^2,
    which rounds to 1.0 in bf16; bf16 statistics (a rounded c^2 and rsqrt) miss by an ulp
    for some c."""
    norm = RMSNorm(256, dtype=torch.bfloat16)
    c = 1 + torch.arange(128, dtype=torch.float32) / 128          # every bf16 value in [1, 2)
    x = c[:, None].expand(128, 256).bfloat16()
    got = norm(x)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, torch.ones_like(got)), got.unique()
    assert torch.equal(norm(-x), -torch.ones_like(got))


def test_attention_softmax_is_fp32():
    torch.manual_seed(0)
    s, b, n, d = 128, 2, 2, 64
    q, k, v = ((torch.randn(s, b, n, d) * 3).bfloat16() for _ in range(3))
    mask = torch.rand(b, 1, s, s) < 0.3
    for m in (None, mask):
        causal = torch.ones(s, s, dtype=torch.bool).triu(1) if m is None else m
        qd, kd, vd = (x.double().permute(1, 2, 0, 3) for x in (q, k, v))
        scores = (qd @ kd.transpose(-1, -2) / d ** 0.5).masked_fill(causal, float("-inf"))
        want = (scores.softmax(-1) @ vd).permute(2, 0, 1, 3).reshape(s, b, -1)
        got = core_attention(q, k, v, m, 0.0).double()
        # fp32 scores and softmax: ~0.3% of the largest output; bf16 scores: ~3%
        assert (got - want).abs().max() / want.abs().max() < 0.01


def test_loss_is_fp32_from_bf16_logits():
    torch.manual_seed(0)
    logits = (torch.randn(16, 2, 1000) * 8).bfloat16()
    target = torch.randint(0, 1000, (16, 2))
    loss = vocab_parallel_cross_entropy(logits, target)
    assert loss.dtype == torch.float32
    want = torch.nn.functional.cross_entropy(logits.double().reshape(-1, 1000),
                                             target.reshape(-1), reduction="none")
    torch.testing.assert_close(loss.double(), want.reshape(16, 2), rtol=1e-6, atol=1e-5)


def test_bf16_gpt_returns_an_fp32_loss():
    _, half = _half_gpt()
    tokens = torch.randint(0, 64, (2, 16))
    loss = half(tokens, torch.arange(16).expand(2, 16), None, labels=tokens)
    assert loss.dtype == torch.float32
