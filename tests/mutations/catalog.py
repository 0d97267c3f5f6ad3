"""The curated mutations ``make mutate`` plants, one at a time, in a scratch copy of the
tree: realistic bugs in the core (each a small edit a reviewer could miss), with the tests
that should catch it. A mutation that survives names a behaviour no test guards.

Each entry: name, file, edits (exact original snippet -> mutated snippet; every original
must occur exactly once in its file), the tests to run (pytest paths or node ids), and
what the bug is. tests/mutations/test_catalog.py checks that every snippet still occurs
exactly once, so the catalog follows the code.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    why: str


DE = "tests/data_efficiency"
CURRICULUM = f"{DE}/curriculum"
LTD = f"{DE}/random_ltd"
TRAINING = "tests/training"
RUNTIME = f"{DE}/test_runtime.py"
PRETRAIN_DE = f"{DE}/test_pretrain_data_efficiency.py"
GUARDS = f"{TRAINING}/test_loop_guards.py"

MUTATIONS = [
    # -- pacing (curriculum and MSLG) --------------------------------------------------
    Mutation("pacing-ceil", "megatron/data_efficiency/pacing.py",
             (("v = math.floor((float(t) / total)", "v = math.ceil((float(t) / total)"),),
             (f"{CURRICULUM}/test_curriculum_scheduler.py", f"{LTD}/test_random_ltd_schedule.py"),
             "pacing rounds up instead of down"),
    Mutation("pacing-floor-below-min", "megatron/data_efficiency/pacing.py",
             (("floor_at = math.ceil(lo / multiple) * multiple",
               "floor_at = math.floor(lo / multiple) * multiple"),),
             (f"{CURRICULUM}/test_curriculum_scheduler.py",),
             "a difficulty below d_min is raised to the multiple below it (older DeepSpeed's 0)"),
    Mutation("pacing-clamp-progress", "megatron/data_efficiency/pacing.py",
             (("v = math.floor((float(t) / total) ** (1.0 / root)",
               "v = math.floor(min(1.0, float(t) / total) ** (1.0 / root)"),),
             (f"{LTD}/test_random_ltd_schedule.py", f"{CURRICULUM}/test_curriculum_scheduler.py"),
             "t / T clamped at 1: a maximum that is no multiple of the step is never reached"),
    Mutation("curriculum-step-origin", "megatron/data_efficiency/step_plan.py",
             (("    return iteration + 1", "    return iteration"),),
             (CURRICULUM, RUNTIME),
             "the curriculum's steps counted from 0 instead of 1"),
    # -- random-LTD ----------------------------------------------------------------------
    Mutation("ltd-no-length-cap", "megatron/data_efficiency/random_ltd/scheduler.py",
             (("return r if seq_length is None else min(r, seq_length)", "return r"),),
             (LTD, RUNTIME), "the kept length is not capped at the curriculum's length"),
    Mutation("ltd-default-layers", "megatron/data_efficiency/random_ltd/config.py",
             (("        return tuple(range(1, num_layers - 1))",
               "        return tuple(range(1, num_layers))"),),
             (LTD,), "the last layer drops tokens by default"),
    Mutation("ltd-unsorted-kept", "megatron/data_efficiency/random_ltd/plan.py",
             (("    return kept.sort(dim=1).values", "    return kept"),),
             (LTD,), "kept tokens are not put back in their original order"),
    Mutation("ltd-same-draw-on-every-dp-rank", "megatron/data_efficiency/random_ltd/plan.py",
             (('key = struct.pack("<5q", seed, iteration, microbatch, layer_id, dp_rank)',
               'key = struct.pack("<5q", seed, iteration, microbatch, layer_id, 0)'),),
             (LTD,), "every data-parallel rank drops the same positions"),
    Mutation("ltd-rope-positions", "megatron/model/transformer.py",
             (("None if rope is None else gather_tokens(rope, idx))",
               "None if rope is None else rope[:idx.shape[1]])"),),
             (f"{LTD}/test_random_ltd_model.py",),
             "kept tokens get rotary positions 0..r-1 (the reference's bug)"),
    # -- token accounting ----------------------------------------------------------------
    Mutation("tokens-rounded-per-batch", "megatron/data_efficiency/token_accounting.py",
             (("    return rows * (layer_tokens // num_layers)",
               "    return rows * layer_tokens // num_layers"),),
             (RUNTIME, f"{DE}/compat", f"{CURRICULUM}/test_curriculum_transforms.py", GUARDS),
             "layer-weighted tokens rounded over the batch, not per sequence"),
    Mutation("tokens-kept-above-length", "megatron/data_efficiency/token_accounting.py",
             (("if kept_length is None or kept_length >= seq_length or dropping_layers == 0:",
               "if kept_length is None or dropping_layers == 0:"),),
             (RUNTIME, f"{DE}/compat", f"{CURRICULUM}/test_curriculum_transforms.py", GUARDS),
             "a kept length above the (truncated) length is counted as kept"),
    Mutation("lr-on-nominal-tokens", "megatron/training.py",
             (("scheduler.step(1, plan.global_batch_size, plan.consumed_tokens,",
               "scheduler.step(1, plan.global_batch_size,"
               " plan.global_batch_size * config.training.seq_length,"),),
             (GUARDS, PRETRAIN_DE),
             "the LR schedule advances by the nominal GBS x seq, not the consumed tokens"),
    Mutation("seqreo-tokens-max-over-dp", "megatron/data_efficiency/runtime.py",
             (("        dist.all_reduce(tokens, group=par.dp_group)",
               "        dist.all_reduce(tokens, op=dist.ReduceOp.MAX, group=par.dp_group)"),),
             (RUNTIME,), "seqreo's tokens are the maximum over DP ranks, not the sum"),
    Mutation("train-tokens-boundary", "megatron/run_plan.py",
             (("consumed_tokens >= self.stop_tokens",
               "consumed_tokens > self.stop_tokens"),),
             (f"{TRAINING}/test_pretrain.py", GUARDS),
             "--train-tokens runs one step past the step that reaches it exactly"),
    Mutation("checkpoint-consumed-tokens", "megatron/training_state.py",
             (('consumed_tokens=int(extra.get("consumed_tokens", 0))',
               'consumed_tokens=int(extra.get("consumed_samples", 0)) '
               '* config.training.seq_length'),),
             (PRETRAIN_DE, f"{TRAINING}/test_checkpointing.py"),
             "a resume restores the consumed tokens as nominal samples x length"),
    Mutation("scheduler-resume-tokens", "megatron/optimizer_param_scheduler.py",
             (('        self.num_tokens = int(state["num_tokens"])',
               '        self.num_tokens = int(state["num_samples"])'),),
             (f"{TRAINING}/test_scheduler.py", PRETRAIN_DE),
             "the LR schedule's token counter is restored from the sample counter"),
    # -- curriculum sampler and index ----------------------------------------------------
    Mutation("sampler-cluster-edge", "megatron/data_efficiency/curriculum/sampler.py",
             (('slots = np.searchsorted(cum, perm.uniform_ints(key, count, int(cum[-1])), side="right")',
               'slots = np.searchsorted(cum, perm.uniform_ints(key, count, int(cum[-1])), side="left")'),),
             (CURRICULUM,), "a slot on a cluster's first position goes to the cluster before"),
    Mutation("sampler-microbatch-order", "megatron/data_efficiency/curriculum/sampler.py",
             (("return [batch[m * mbs * dp + r * mbs: m * mbs * dp + (r + 1) * mbs].tolist()",
               "return [batch[r * mbs * self.num_micro_batches + m * mbs:"
               " r * mbs * self.num_micro_batches + (m + 1) * mbs].tolist()"),),
             (CURRICULUM,), "a DP rank's micro-batches are a contiguous block, not Megatron's order"),
    Mutation("sampler-state-not-rewound", "megatron/data_efficiency/runtime.py",
             (('state["curriculum_sampler"] = self.sampler.state_dict(steps_consumed=iteration)',
               'state["curriculum_sampler"] = self.sampler.state_dict()'),),
             (PRETRAIN_DE,),
             "the checkpoint keeps the prefetching loader's sampler position, not the loop's"),
    Mutation("boundary-tie-break", "megatron/data_efficiency/curriculum/clusters.py",
             (("return (values < self.value) | ((values == self.value) & (ids < self.sample))",
               "return (values < self.value) | ((values == self.value) & (ids <= self.sample))"),),
             (CURRICULUM,), "the sample at a prefix's end is admitted by the other metric's test"),
    Mutation("value-end-strict", "megatron/data_efficiency/analyzer/index_io.py",
             (('return int(offsets[np.searchsorted(values, value, side="right")])',
               'return int(offsets[np.searchsorted(values, value, side="left")])'),),
             (CURRICULUM, f"{DE}/analyzer"), "a value difficulty admits values < d, not <= d"),
    Mutation("percentile-no-floor", "megatron/data_efficiency/analyzer/index_io.py",
             (("per_step = Fraction(n) // Fraction(repr(float(max_difficulty)))",
               "per_step = Fraction(n) / Fraction(repr(float(max_difficulty)))"),),
             (CURRICULUM, "tests/tools/test_prune_data.py"),
             "a percentile admits p% of N exactly, not DeepSpeed's (N // max) * p"),
    Mutation("voc-rarity-sign", "megatron/data_efficiency/analyzer/kernels.py",
             (("rarity = math.log(total) - np.log(counts[seen].astype(np.float64))",
               "rarity = np.log(counts[seen].astype(np.float64)) - math.log(total)"),),
             (f"{DE}/analyzer",), "voc sums ln p instead of -ln p (easy and hard swapped)"),
    # -- batch transforms ----------------------------------------------------------------
    Mutation("seqtru-label-cut", "megatron/data_efficiency/curriculum/transforms.py",
             (("return _cut(batch, {s + 1: d + 1, s: d}), BatchShape(batch[\"text\"].shape[0], d)",
               "return _cut(batch, {s + 1: d, s: d}), BatchShape(batch[\"text\"].shape[0], d)"),),
             (f"{CURRICULUM}/test_curriculum_transforms.py", RUNTIME),
             "seqtru keeps d tokens of text: d-1 inputs and labels"),
    Mutation("seqres-no-overlap", "megatron/data_efficiency/curriculum/transforms.py",
             (("win = torch.arange(k).unsqueeze(1) * d + torch.arange(d + 1).unsqueeze(0)",
               "win = torch.arange(k).unsqueeze(1) * (d + 1) + torch.arange(d + 1).unsqueeze(0)"),),
             (f"{CURRICULUM}/test_curriculum_transforms.py",),
             "seqres chunks do not share their boundary token (pairs lost at every chunk)"),
    Mutation("bert-seqtru-round-down", "megatron/data_efficiency/curriculum/transforms.py",
             (("    return -(-int(difficulty) // multiple) * multiple",
               "    return int(difficulty) // multiple * multiple"),),
             (f"{CURRICULUM}/test_curriculum_transforms.py", "tests/bert"),
             "BERT's seqtru length rounded down to 8, not up"),
    # -- evaluation, losses, LR schedule -------------------------------------------------
    Mutation("eval-uses-step-plan", "megatron/training.py",
             (("            state.last_validation = evaluate(forward_step_func, "
               "make_valid_iterator, model, config,\n"
               "                                             iteration=it)",
               "            state.last_validation = evaluate(forward_step_func, "
               "make_valid_iterator, model, config,\n"
               "                                             iteration=it, runtime=runtime)"),
              ("             config: RunConfig, iteration: int | None = None) -> dict[str, float]:",
               "             config: RunConfig, iteration: int | None = None,\n"
               "             runtime=None) -> dict[str, float]:"),
              ("        feeds = microbatch_feeds(iterator, None, None, train.seq_length, "
               "train.micro_batch_size,",
               "        feeds = microbatch_feeds(iterator, runtime, None if runtime is None else "
               "runtime.plan_step(iteration - 1), train.seq_length, train.micro_batch_size,")),
             (GUARDS,), "evaluation runs the training step's plan: truncated, tokens dropped"),
    Mutation("loss-mask-denominator", "pretrain_gpt.py",
             (("    loss = torch.sum(losses * mask) / mask.sum().clamp(min=1.0)",
               "    loss = torch.sum(losses * mask) / mask.numel()"),),
             ("tests/model/test_gpt_model.py", "tests/study/test_eval_full.py",
              f"{TRAINING}/test_pretrain.py"), "the loss averages over masked tokens too"),
    Mutation("eod-mask-on-labels", "megatron/utils.py",
             (("    is_eod = data == eod_token\n    loss_mask = torch.ones(b, s, dtype=torch.float, device=device)\n"
               "    if eod_mask_loss:\n        loss_mask[is_eod] = 0.0",
               "    is_eod = data == eod_token\n    loss_mask = torch.ones(b, s, dtype=torch.float, device=device)\n"
               "    if eod_mask_loss:\n        loss_mask[:, :-1][is_eod[:, 1:]] = 0.0"),),
             ("tests/model/test_gpt_model.py",),
             "--eod-mask-loss masks where the label is EOD, not the input"),
    Mutation("dp-loss-sum", "megatron/training.py",
             (("        means = means / parallel_state.get_data_parallel_world_size()\n",
               "\n"),),
             (f"{TRAINING}/test_distributed_training.py",),
             "the logged loss is summed over data-parallel ranks, not averaged"),
    Mutation("decay-from-zero", "megatron/optimizer_param_scheduler.py",
             (("ratio = min(1.0, max(0.0, (progress - begin) / span)) if span > 0 else 1.0",
               "ratio = min(1.0, max(0.0, progress / cfg.decay)) if span > 0 else 1.0"),),
             (f"{TRAINING}/test_scheduler.py",), "the decay starts at 0, not after the warmup"),
    Mutation("warmup-fraction-of-decay", "megatron/optimizer_param_scheduler.py",
             (("        wvalue, wunit = wvalue * decay_value, unit",
               "        wvalue, wunit = wvalue * decay_value, \"steps\""),),
             (f"{TRAINING}/test_scheduler.py",),
             "a warmup fraction is taken in steps under token decay (the reference's bug)"),
    Mutation("clip-coefficient", "megatron/optimizer/clip_grads.py",
             (("        if coeff < 1.0:", "        if coeff < 1.0 or coeff > 1.0:"),),
             (f"{TRAINING}/test_optimizer.py",),
             "gradients below the threshold are scaled up to it"),
    Mutation("ltd-step-origin", "megatron/data_efficiency/step_plan.py",
             (("kept = None if self.random_ltd is None else self.random_ltd.kept_length(iteration)",
               "kept = None if self.random_ltd is None else "
               "self.random_ltd.kept_length(iteration + 1)"),),
             (RUNTIME, LTD, f"{DE}/compat"),
             "random-LTD's MSLG counted from 1 instead of 0 (the curriculum's origin)"),
    Mutation("index-fingerprint-unchecked", "megatron/data_efficiency/runtime.py",
             (("    return MetricIndex.open(path, expected_fingerprint)",
               "    return MetricIndex.open(path, None)"),),
             (PRETRAIN_DE,), "an analyzer index of other data or sample maps is accepted"),
    Mutation("seqres-rows", "megatron/data_efficiency/curriculum/transforms.py",
             (("return BatchShape(global_batch_size * (seq_length // d), d)",
               "return BatchShape(global_batch_size * -(-seq_length // d), d)"),),
             (RUNTIME, f"{CURRICULUM}/test_curriculum_transforms.py"),
             "the planned seqres rows count a partial last chunk the transform drops"),
    Mutation("checkpoint-consumed-samples", "megatron/training_state.py",
             (('consumed_samples=int(extra.get("consumed_samples", 0))',
               'consumed_samples=int(extra.get("iteration", 0)) '
               '* config.training.micro_batch_size'),),
             (f"{TRAINING}/test_checkpointing.py", PRETRAIN_DE),
             "a resume restores consumed samples as steps x micro-batch (the sampler restarts "
             "elsewhere)"),
    Mutation("window-low-edge", "megatron/data_efficiency/curriculum/clusters.py",
             (("    return percentile_prefix(int(index.num_samples), window_low, max_difficulty)",
               "    return percentile_prefix(int(index.num_samples), window_low, max_difficulty)"
               " + 1"),),
             (f"{CURRICULUM}/test_curriculum_window.py", "tests/tools/test_prune_data.py"),
             "a difficulty window starts one sample after its low percentile"),
    Mutation("split-rounding", "megatron/data/dataset_utils.py",
             (("        index.append(index[-1] + int(round(s * float(size))))",
               "        index.append(index[-1] + int(s * float(size)))"),),
             ("tests/data",), "--split boundaries truncated instead of rounded (Megatron rounds)"),
]
