"""The study's arm tables and command lines: the paper's arms, Table 1 scaled to the run,
every run sized in tokens."""
from __future__ import annotations

from dataclasses import replace

import pytest

from megatron.arguments import parse_args
from megatron.study.commands import (DataSpec, RunSpec, analyzer_metrics, nominal_steps,
                                     pretrain_command, window_metrics)
from megatron.study.presets import (BERT_ARMS, GPT_ARMS, PRUNE_ARMS, Arm, Window, get_preset,
                                    paper_plan, with_hyper)

DATA = DataSpec("/d/corpus_text_document", ("--tokenizer-type", "NullTokenizer"), "/d/cache")


def _parsed(preset, arm, fraction=1.0, seed=1):
    cmd = pretrain_command(preset, RunSpec(arm, fraction, seed), DATA, "/o/run", "/o/tb",
                           "/o/index")
    extra = (lambda p: (p.add_argument("--bert-no-binary-head", action="store_true"), p)[1])
    return cmd, parse_args(extra_args_provider=extra, args=cmd[1:])


def test_arm_names_are_the_papers_tables():
    assert list(GPT_ARMS) == ["baseline", "CL_seqtru", "CL_seqres", "CL_voc", "CL_seqtru_voc",
                              "CL_seqres_voc", "random-LTD", "CL_seqtru_voc+random-LTD"]
    assert GPT_ARMS["CL_seqtru_voc+random-LTD"].curriculum == ("seqtru", "voc")
    assert GPT_ARMS["CL_seqtru_voc+random-LTD"].random_ltd
    assert BERT_ARMS["CL_seqreo_voc"].curriculum == ("seqreo_voc",)
    plan = paper_plan(GPT_ARMS)
    assert len(plan) == 8 + 4 + 4
    assert [a for a, f in plan if f == 0.5] == ["baseline", "CL_seqtru_voc", "random-LTD",
                                                "CL_seqtru_voc+random-LTD"]


def test_gpt_table1_at_2048_tokens_gives_the_papers_values():
    preset = replace(get_preset("gpu-125m"), seq_length=2048, train_tokens=2048 * 256 * 1000)
    cmd, args = _parsed(preset, GPT_ARMS["CL_seqtru_voc+random-LTD"])
    assert args.curriculum_metric == ["seqtru", "voc"]
    assert args.curriculum_min_difficulty == [80, 1]
    assert args.curriculum_max_difficulty == [2048, 100]
    assert args.curriculum_difficulty_type == ["value", "percentile"]
    assert args.curriculum_schedule_type == ["fixed_linear", "fixed_root"]
    assert args.curriculum_index_path == ["-", "/o/index/voc"]
    assert args.curriculum_total_steps == [400]        # 40% of 1000 baseline steps
    assert args.random_ltd and args.random_ltd_min_seqlen == 128
    assert args.random_ltd_total_steps == 700          # 70%
    assert args.train_tokens == 2048 * 256 * 1000 and args.eval_full


def test_bert_table1_at_512_tokens():
    preset = replace(get_preset("cpu", "bert"), seq_length=512, global_batch_size=16,
                     train_tokens=512 * 16 * 100)
    _, args = _parsed(preset, BERT_ARMS["CL_seqtru_voc+random-LTD"])
    assert args.curriculum_min_difficulty == [128, 5]
    assert args.curriculum_total_steps == [50] and args.random_ltd_total_steps == 100
    assert args.random_ltd_min_seqlen == 128
    _, args = _parsed(preset, BERT_ARMS["CL_seqreo"])
    assert args.curriculum_index_path == ["/o/index/seqlen"]
    assert analyzer_metrics([BERT_ARMS["CL_seqreo_voc"], BERT_ARMS["CL_voc"]]) == \
        ["total_vocab_freq", "seqlen_voc", "voc"]
    assert analyzer_metrics([GPT_ARMS["CL_seqtru"], GPT_ARMS["random-LTD"]]) == []


def test_budgets_are_tokens_with_the_same_warmup_and_the_decay_over_the_budget():
    preset = get_preset("cpu")
    _, full = _parsed(preset, GPT_ARMS["baseline"], 1.0)
    _, half = _parsed(preset, GPT_ARMS["CL_seqtru_voc"], 0.5)
    assert half.train_tokens == preset.train_tokens // 2 == full.train_tokens // 2
    assert half.lr_decay_tokens == half.train_tokens and full.lr_decay_tokens == full.train_tokens
    assert half.lr_warmup_tokens == full.lr_warmup_tokens > 0
    steps = nominal_steps(preset, half.train_tokens)
    assert half.curriculum_total_steps == [round(0.4 * steps)]
    assert full.curriculum_metric is None and not full.random_ltd


def test_overrides_and_run_names():
    preset = with_hyper(get_preset("cpu"), t_c=0.25, r_s=0.5, d_s_percentile=None)
    assert preset.hyper.t_c == 0.25 and preset.hyper.d_s_percentile == 1
    _, args = _parsed(preset, GPT_ARMS["random-LTD"])
    assert args.random_ltd_min_seqlen == preset.seq_length // 2
    assert RunSpec(GPT_ARMS["CL_seqtru_voc+random-LTD"], 0.67, 1235).name == \
        "CL_seqtru_voc+random-LTD_67_s1235"
    with pytest.raises(ValueError, match="known"):
        get_preset("cpu", "t5")


def test_pruning_arms_are_static_windows_over_their_index():
    preset = get_preset("cpu")
    assert list(PRUNE_ARMS) == ["prune_ppl_middle50", "prune_ppl_easy50", "prune_random50"]
    assert set(PRUNE_ARMS) <= set(preset.arms) and not set(PRUNE_ARMS) & set(BERT_ARMS)
    for name, (metric, lo, hi) in {"prune_ppl_middle50": ("ppl", 25, 75),
                                   "prune_ppl_easy50": ("ppl", 0, 50),
                                   "prune_random50": ("random", 0, 50)}.items():
        _, args = _parsed(preset, PRUNE_ARMS[name])
        assert args.data_efficiency_curriculum_learning and args.curriculum_metric == [metric]
        assert args.curriculum_index_path == [f"/o/index/{metric}"]
        assert args.curriculum_difficulty_type == ["percentile_window"]
        assert args.curriculum_window_low == [lo]
        assert args.curriculum_min_difficulty == args.curriculum_max_difficulty == [hi]
        assert not args.random_ltd and args.train_tokens == preset.train_tokens   # equal tokens
    assert window_metrics(PRUNE_ARMS.values()) == ["ppl", "random"]
    assert analyzer_metrics(PRUNE_ARMS.values()) == [] and window_metrics(GPT_ARMS.values()) == []
    with pytest.raises(ValueError, match="not combined"):
        Arm("x", curriculum=("voc",), window=Window("ppl", 0, 50))


def test_llama_presets_are_the_gpt_presets_with_the_llama_layer():
    """--model llama: the GPT preset's sizes, budget, plan and Table 1, run by
    pretrain_gpt.py with RMSNorm, grouped-query attention, SwiGLU, rotary, no biases and
    an untied output layer."""
    for name, groups in (("smoke", 1), ("demo", 2), ("cpu", 2)):
        gpt, llama = get_preset(name), get_preset(name, "llama")
        assert replace(llama, model="gpt", extra=gpt.extra) == gpt
        assert llama.hyper == gpt.hyper and llama.arms == gpt.arms
        cmd, args = _parsed(llama, GPT_ARMS["CL_seqtru_voc+random-LTD"])
        gpt_cmd, _ = _parsed(gpt, GPT_ARMS["CL_seqtru_voc+random-LTD"])
        assert cmd[0] == gpt_cmd[0] and cmd[0].endswith("pretrain_gpt.py")
        assert args.normalization == "RMSNorm" and args.num_query_groups == groups
        assert args.group_query_attention and args.swiglu and not args.add_bias_linear
        assert args.position_embedding_type == "rope" and not args.add_position_embedding
        assert args.untie_embeddings_and_output_weights and args.rotary_base == 10000
        assert (args.hidden_dropout, args.attention_dropout) == (0.0, 0.0)
        assert ("--num-workers" in cmd) == ("--num-workers" in gpt_cmd)
    with pytest.raises(ValueError, match="no preset 'gpu-125m' for --model llama"):
        get_preset("gpu-125m", "llama")
