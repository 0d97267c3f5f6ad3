"""The study's tables, as data: the paper's arms (Tables 2 and 3), the pruning arms, its
Table 1 hyper-parameters (as fractions, scaled to each run) and the presets (model size,
token budget, corpus, the pruning arms' reference model). Nothing here runs anything."""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Window:
    """A static percentile window over an analyzer index: the half of the training samples
    a pruning arm keeps (``metric`` is the index it is taken on)."""
    metric: str
    low: int
    high: int


@dataclass(frozen=True)
class Arm:
    """One row of the study's tables.

    Attributes:
        name: as in the paper (``CL_seqtru_voc+random-LTD``), or a pruning arm's
            (``prune_ppl_middle50``).
        curriculum: curriculum metrics, in flag order (``seqtru``, ``voc``, ...).
        random_ltd: whether random-LTD is on.
        window: a pruning arm's kept band (such arms have no curriculum of their own).
        same_steps: the same-steps control: the baseline at the preset's
            ``same_steps_batch`` (fewer tokens a step, so as many steps as the composed
            arm takes for the same tokens).
    """
    name: str
    curriculum: tuple[str, ...] = ()
    random_ltd: bool = False
    window: Window | None = None
    same_steps: bool = False

    def __post_init__(self) -> None:
        if self.window is not None and self.curriculum:
            raise ValueError(f"arm {self.name}: a pruning window is not combined with a "
                             "curriculum here")


def _arm(name: str) -> Arm:
    """``CL_a_b+random-LTD`` -> Arm(curriculum of a, b; random-LTD). The BERT ``seqreo``
    metrics are single analyzer metrics (``seqreo``, ``seqreo_voc``)."""
    parts = name.split("+")
    ltd = "random-LTD" in parts
    cl = next((p[3:] for p in parts if p.startswith("CL_")), "")
    if cl.startswith("seqreo"):
        metrics = (cl,)
    else:
        metrics = tuple(m for m in cl.split("_") if m)
    return Arm(name, metrics, ltd)


GPT_ARMS = {a.name: a for a in map(_arm, [
    "baseline", "CL_seqtru", "CL_seqres", "CL_voc", "CL_seqtru_voc", "CL_seqres_voc",
    "random-LTD", "CL_seqtru_voc+random-LTD"])}
BERT_ARMS = {a.name: a for a in map(_arm, [
    "baseline", "CL_seqtru", "CL_seqreo", "CL_voc", "CL_seqtru_voc", "CL_seqreo_voc",
    "random-LTD", "CL_seqtru_voc+random-LTD"])}
# Data pruning at equal tokens (issue 14): keep half of the training samples, by their
# perplexity under a small reference model (``ppl`` index) or at random (``random`` index:
# a hash of each sample's tokens), and train on it for the baseline's whole budget.
PRUNE_ARMS = {a.name: a for a in [
    Arm("prune_ppl_middle50", window=Window("ppl", 25, 75)),
    Arm("prune_ppl_easy50", window=Window("ppl", 0, 50)),
    Arm("prune_random50", window=Window("random", 0, 50))]}
PRUNE_PLAN = tuple((a, 1.0) for a in PRUNE_ARMS)
# The scaling study (issue 24): the composed arm against the baseline at several budgets,
# and the same-steps control that separates "more, cheaper steps" from order and routing.
COMPOSED = "CL_seqtru_voc+random-LTD"
SAME_STEPS = Arm("baseline-same-steps", same_steps=True)
REDUCED_ARMS = ("baseline", "CL_seqtru_voc", "random-LTD", "CL_seqtru_voc+random-LTD")


def paper_plan(arms: dict[str, Arm]) -> tuple[tuple[str, float], ...]:
    """(arm, budget fraction) pairs of Tables 2 / 3: every arm at 100% of the token budget,
    the four main arms at 67% and 50%."""
    return (tuple((a, 1.0) for a in arms)
            + tuple((a, f) for f in (0.67, 0.5) for a in REDUCED_ARMS))


def scaling_plan(levels: tuple[float, ...]) -> tuple[tuple[str, float], ...]:
    """(arm, budget fraction) pairs of the scaling study: at each level ``L`` (a multiple
    of the preset's budget) the baseline and the composed arm at ``L`` and ``L / 2``, and
    the same-steps control at ``L``. A run two levels share (``L / 2`` of ``2L`` is ``L``:
    the same run, warmup being the same tokens at every budget) is listed once. Largest
    budgets first, so two side-by-side jobs end together."""
    pairs = []
    for level in map(float, levels):
        pairs += [("baseline", level), (COMPOSED, level), (SAME_STEPS.name, level),
                  ("baseline", level / 2), (COMPOSED, level / 2)]
    unique = list(dict.fromkeys(pairs))
    return tuple(sorted(unique, key=lambda p: -p[1]))


@dataclass(frozen=True)
class HyperParams:
    """Paper Table 1, as fractions of the run so they scale to any length and budget.

    Attributes:
        d_s_seqlen: seqtru / seqres start length, as a fraction of the sequence length.
        d_s_percentile: voc / seqreo start, the easiest percent of the samples.
        t_c: curriculum duration, a fraction of the run's (baseline) steps.
        r_s: random-LTD start kept length, a fraction of the sequence length.
        t_r: random-LTD duration, a fraction of the run's (baseline) steps.
    """
    d_s_seqlen: float
    d_s_percentile: float
    t_c: float
    r_s: float
    t_r: float


TABLE1 = {"gpt": HyperParams(d_s_seqlen=80 / 2048, d_s_percentile=1, t_c=0.4,
                             r_s=128 / 2048, t_r=0.7),
          "bert": HyperParams(d_s_seqlen=128 / 512, d_s_percentile=5, t_c=0.5,
                              r_s=128 / 512, t_r=1.0)}
TABLE1["llama"] = TABLE1["gpt"]      # a GPT of another layer: the paper's GPT settings


@dataclass(frozen=True)
class Reference:
    """The pruning arms' reference model: a small GPT trained first on data disjoint from
    the study's training data (on the default corpus: the ``corpus_bytes`` of documents
    that follow the study's), then used by the analyzer to score every training sample.

    Attributes:
        train_iters: its training steps (at the preset's batch and sequence length).
        corpus_bytes: size of its slice of the default corpus (None: the preset trains on
            the user's data, and the reference model on ``--reference-data-path``).
    """
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    train_iters: int
    corpus_bytes: int | None


@dataclass(frozen=True)
class Preset:
    """A study size: model, batch, token budget, data, evaluation.

    Attributes:
        name, model: the preset's key (``model`` is ``gpt``, ``bert`` or ``llama``: a GPT
            whose ``extra`` flags give it the Llama layer).
        train_tokens: the 100% budget (layer-weighted consumed tokens, as the LR schedule
            counts them).
        warmup_fraction: LR warmup, in tokens, a fraction of the 100% budget (the same
            warmup at every budget; the decay spans each run's own budget).
        eval_interval / log_interval: iterations.
        corpus_bytes: size of the default corpus to build (None: the user's
            ``--data-path`` is required).
        vocab_size: the tokenizer trained on the default corpus.
        plan: the (arm, budget fraction) pairs run by default.
        extra: more ``pretrain_*.py`` flags, appended as given.
        reference: the pruning arms' reference model (None: no pruning arms; GPT only).
        levels: a scaling study's budgets, as multiples of ``train_tokens`` (empty: not
            one); ``study`` then writes the scaling analysis (``megatron.study.scaling``).
        evaluations: evaluations per run: each run evaluates every
            ``baseline steps at its budget // evaluations`` steps (None: every
            ``eval_interval``).
        same_steps_batch: the same-steps control's global (and micro) batch.
    """
    name: str
    model: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    seq_length: int
    micro_batch_size: int
    global_batch_size: int
    train_tokens: int
    lr: float
    min_lr: float
    warmup_fraction: float
    eval_interval: int
    log_interval: int
    seeds: int
    corpus_bytes: int | None
    vocab_size: int
    split: str
    plan: tuple[tuple[str, float], ...]
    extra: tuple[str, ...] = ()
    hyper: HyperParams = field(default=None)   # None: TABLE1[model]
    reference: Reference | None = None
    levels: tuple[float, ...] = ()
    evaluations: int | None = None
    same_steps_batch: int | None = None

    def __post_init__(self) -> None:
        if self.hyper is None:
            object.__setattr__(self, "hyper", TABLE1[self.model])

    @property
    def script(self) -> str:
        """The pretraining script its runs use."""
        return "pretrain_bert.py" if self.model == "bert" else "pretrain_gpt.py"

    @property
    def arms(self) -> dict[str, Arm]:
        if self.model == "bert":
            return BERT_ARMS
        arms = {**GPT_ARMS, **PRUNE_ARMS} if self.reference is not None else GPT_ARMS
        return {**arms, SAME_STEPS.name: SAME_STEPS} if self.same_steps_batch else arms


_CPU_FLAGS = ("--hidden-dropout", "0.0", "--attention-dropout", "0.0", "--weight-decay", "0.01",
              "--clip-grad", "1.0")
_GPT_CPU = _CPU_FLAGS + ("--position-embedding-type", "rope")
# Smoke runs last seconds: one prefetching loader worker instead of two halves the
# worker start-up that dominates them (every evaluation starts its own loader).
_SMOKE_LOADER = ("--num-workers", "1")
# The paper's MoE setting (Table 2, cases 16-17) scaled down: experts in every other layer
# (Megatron-DeepSpeed's --expert-interval 2), top-1, its capacity and loss defaults.
_MOE = ("--num-experts", "4", "--expert-interval", "2", "--moe-router-topk", "1",
        "--moe-aux-loss-coeff", "0.01", "--moe-train-capacity-factor", "1.0",
        "--moe-eval-capacity-factor", "1.0", "--moe-min-capacity", "4")
_MOE_PLAN = (("baseline", 1.0), ("CL_seqtru_voc+random-LTD", 1.0))

PRESETS = {(p.model, p.name): p for p in [
    # Every arm on a tiny model: seconds per run (tests, CI).
    Preset("smoke", "gpt", 3, 32, 2, 32, 4, 4, train_tokens=4 * 32 * 24, lr=3e-3, min_lr=3e-4,
           warmup_fraction=0.05, eval_interval=8, log_interval=1, seeds=1,
           corpus_bytes=300_000, vocab_size=500, split="90,10,0",
           plan=paper_plan(GPT_ARMS) + PRUNE_PLAN, extra=_GPT_CPU + _SMOKE_LOADER,
           reference=Reference(2, 32, 2, train_iters=12, corpus_bytes=100_000)),
    Preset("smoke", "bert", 3, 32, 2, 32, 4, 4, train_tokens=4 * 32 * 24, lr=3e-3, min_lr=3e-4,
           warmup_fraction=0.05, eval_interval=8, log_interval=1, seeds=1,
           corpus_bytes=500_000, vocab_size=800, split="80,20,0", plan=paper_plan(BERT_ARMS),
           extra=_CPU_FLAGS + _SMOKE_LOADER),
    # make demo: the baseline and the composed arm at half its budget.
    Preset("demo", "gpt", 4, 256, 4, 256, 4, 4, train_tokens=250 * 4 * 256, lr=2e-3,
           min_lr=2e-4, warmup_fraction=0.06, eval_interval=50, log_interval=10, seeds=1,
           corpus_bytes=8_000_000, vocab_size=8000, split="98,2,0",
           plan=(("baseline", 1.0), ("CL_seqtru_voc+random-LTD", 0.5)), extra=_GPT_CPU),
    # Table 2 on the default corpus, sized for ~90 minutes on a quiet 2-core machine: 2 seeds
    # x 12.7 budgets' worth of tokens at ~2,300 tokens/s (the demo model's throughput),
    # plus the whole-split evaluations (1% of the documents, ~50k tokens, ~8 s each); then
    # the pruning arms (3 more budgets per seed) and their reference model (2 MB of
    # other documents, 200 steps of a 2-layer model).
    Preset("cpu", "gpt", 4, 256, 4, 256, 8, 8, train_tokens=160 * 8 * 256, lr=2e-3,
           min_lr=2e-4, warmup_fraction=0.05, eval_interval=40, log_interval=10, seeds=2,
           corpus_bytes=8_000_000, vocab_size=8000, split="99,1,0",
           plan=paper_plan(GPT_ARMS) + PRUNE_PLAN, extra=_GPT_CPU,
           reference=Reference(2, 128, 4, train_iters=200, corpus_bytes=2_000_000)),
    # Table 3 on the default corpus (BERT, masked LM + sentence order), the same token sizes.
    Preset("cpu", "bert", 4, 256, 4, 128, 8, 16, train_tokens=160 * 16 * 128, lr=1e-3,
           min_lr=1e-4, warmup_fraction=0.05, eval_interval=40, log_interval=10, seeds=2,
           corpus_bytes=8_000_000, vocab_size=8000, split="99,1,0",
           plan=paper_plan(BERT_ARMS), extra=_CPU_FLAGS),
    # The scaling study (issue 24; pre-registered in docs/preregistration/cpu-scaling.md):
    # the cpu preset's budget B (160 baseline steps) at B, 2B and 4B, the baseline and the
    # composed arm at 100% and 50% of each, the same-steps control at 100%, 3 seeds, 10
    # evaluations per baseline run, 25 validation documents. The cpu model shrunk to
    # hidden 128 to fit ~1.5 hours on two cores. Batch 6 for the control: the composed arm
    # takes 1.275x the baseline's steps (the step planner), 8 / 1.275 rounded down.
    Preset("cpu-scaling", "gpt", 4, 128, 4, 256, 8, 8, train_tokens=160 * 8 * 256, lr=2e-3,
           min_lr=2e-4, warmup_fraction=0.05, eval_interval=16, log_interval=10, seeds=3,
           corpus_bytes=8_000_000, vocab_size=8000, split="95,5,0",
           plan=scaling_plan((1, 2, 4)), extra=_GPT_CPU, levels=(1.0, 2.0, 4.0), evaluations=10,
           same_steps_batch=6),
    # Its machinery on the smoke model (tests): two levels, one seed; at B the smoke
    # preset's runs exactly (3 evaluations: every 8 steps), so a test can reuse them.
    Preset("scaling-smoke", "gpt", 3, 32, 2, 32, 4, 4, train_tokens=4 * 32 * 24, lr=3e-3,
           min_lr=3e-4, warmup_fraction=0.05, eval_interval=8, log_interval=1, seeds=1,
           corpus_bytes=300_000, vocab_size=500, split="90,10,0", plan=scaling_plan((1, 2)),
           extra=_GPT_CPU + _SMOKE_LOADER, levels=(1.0, 2.0), evaluations=3, same_steps_batch=3),
    # MoE: the MoE baseline against CL_seqtru_voc + random-LTD at the same data (paper
    # Table 2, cases 16-17), on the smoke model (tests) and on the demo's model and data.
    Preset("moe-smoke", "gpt", 4, 32, 2, 32, 4, 4, train_tokens=4 * 32 * 24, lr=3e-3,
           min_lr=3e-4, warmup_fraction=0.05, eval_interval=8, log_interval=1, seeds=1,
           corpus_bytes=300_000, vocab_size=500, split="90,10,0", plan=_MOE_PLAN,
           extra=_GPT_CPU + _SMOKE_LOADER + _MOE),
    Preset("moe", "gpt", 4, 256, 4, 256, 4, 4, train_tokens=250 * 4 * 256, lr=2e-3,
           min_lr=2e-4, warmup_fraction=0.06, eval_interval=50, log_interval=10, seeds=1,
           corpus_bytes=8_000_000, vocab_size=8000, split="98,2,0", plan=_MOE_PLAN,
           extra=_GPT_CPU + _MOE),
    # The first GPU's check (benchmarks/gpu_check.sh, part f): a ~23M-parameter GPT
    # (6 layers, hidden 512, seq 512) on 8 MB of the default corpus, baseline at 100% and
    # 50% and the composed arm at 50%, 500 baseline steps at 100%: sized for minutes on
    # one GPU (not yet run on one).
    Preset("gpu-smoke", "gpt", 6, 512, 8, 512, 16, 32, train_tokens=500 * 32 * 512, lr=1e-3,
           min_lr=1e-4, warmup_fraction=0.02, eval_interval=250, log_interval=25, seeds=1,
           corpus_bytes=8_000_000, vocab_size=8000, split="98,2,0",
           plan=(("baseline", 1.0), ("CL_seqtru_voc+random-LTD", 0.5), ("baseline", 0.5)),
           extra=("--bf16", "--position-embedding-type", "rope", "--hidden-dropout", "0.0",
                  "--attention-dropout", "0.0", "--weight-decay", "0.1", "--clip-grad", "1.0",
                  "--adam-beta2", "0.95")),
    # GPT-2 125M at sequence 1024 on the user's token store (GPU). 2.5B tokens at 100%.
    Preset("gpu-125m", "gpt", 12, 768, 12, 1024, 8, 256, train_tokens=2_500_000_000, lr=6e-4,
           min_lr=6e-5, warmup_fraction=0.01, eval_interval=500, log_interval=50, seeds=1,
           corpus_bytes=None, vocab_size=0, split="969,30,1", plan=paper_plan(GPT_ARMS),
           extra=("--bf16", "--hidden-dropout", "0.0", "--attention-dropout", "0.0",
                  "--weight-decay", "0.1", "--clip-grad", "1.0", "--adam-beta2", "0.95"),
           reference=Reference(4, 512, 8, train_iters=2000, corpus_bytes=None)),
]}




def llama_layer(query_groups: int) -> tuple[str, ...]:
    """The Llama layer's flags (Megatron-LM's names): RMSNorm, ``query_groups`` key/value
    heads, SwiGLU at its default width, rotary positions (base 10000) and no position
    table, no biases, an untied output layer (Llama-2's; TinyLlama's too)."""
    return ("--normalization", "RMSNorm", "--group-query-attention", "--num-query-groups",
            str(query_groups), "--swiglu", "--position-embedding-type", "rope",
            "--no-position-embedding", "--rotary-base", "10000", "--disable-bias-linear",
            "--untie-embeddings-and-output-weights")


def _llama(name: str, query_groups: int) -> Preset:
    """The GPT preset ``name`` in the Llama shape: the same sizes, budget, corpus, plan and
    optimizer (the pruning arms' reference model takes the Llama layer too)."""
    gpt = PRESETS[("gpt", name)]
    smoke = _SMOKE_LOADER if _SMOKE_LOADER[0] in gpt.extra else ()
    return replace(gpt, model="llama", extra=_CPU_FLAGS + llama_layer(query_groups) + smoke)


# --model llama: the smoke model's 2 heads share one key/value head; the demo's and the
# cpu preset's 4 heads are in 2 groups.
PRESETS.update({("llama", p.name): p for p in [_llama("smoke", 1), _llama("demo", 2),
                                               _llama("cpu", 2)]})


def get_preset(name: str, model: str = "gpt") -> Preset:
    """The preset ``name`` for ``model``; raises ValueError listing the known ones."""
    try:
        return PRESETS[(model, name)]
    except KeyError:
        known = ", ".join(f"{n} ({m})" for m, n in PRESETS)
        raise ValueError(f"no preset {name!r} for --model {model}; known: {known}") from None


def with_hyper(preset: Preset, **overrides: float | None) -> Preset:
    """The preset with some Table 1 fractions replaced (None values are ignored)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(preset, hyper=replace(preset.hyper, **given)) if given else preset
