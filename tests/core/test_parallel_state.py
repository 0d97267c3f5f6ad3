"""parallel_state: layout validation (no process group) and group membership on 4 ranks."""
import pytest
import torch.distributed as dist

from megatron.core import parallel_state as ps


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(world_size=6, tensor_model_parallel_size=4, pipeline_model_parallel_size=1),
     ["world size 6", "--tensor-model-parallel-size 4"]),
    (dict(world_size=8, tensor_model_parallel_size=2, pipeline_model_parallel_size=2,
          num_layers=3), ["--num-layers 3", "--pipeline-model-parallel-size 2"]),
    (dict(world_size=8, tensor_model_parallel_size=4, pipeline_model_parallel_size=1,
          num_attention_heads=6), ["--num-attention-heads 6"]),
    (dict(world_size=8, tensor_model_parallel_size=2, pipeline_model_parallel_size=1,
          global_batch_size=12, micro_batch_size=2), ["--global-batch-size 12", "= 8"]),
    (dict(world_size=0, tensor_model_parallel_size=1, pipeline_model_parallel_size=1),
     ["world size must be a positive integer"]),
])
def test_validation_errors(kwargs, fragments):
    with pytest.raises(ValueError) as err:
        ps.validate_parallel_layout(**kwargs)
    for frag in fragments:
        assert frag in str(err.value)


def test_validation_names_every_problem():
    with pytest.raises(ValueError) as err:
        ps.validate_parallel_layout(12, 2, 2, num_layers=5, num_attention_heads=3,
                                    global_batch_size=10, micro_batch_size=2)
    msg = str(err.value)
    for frag in ("--num-layers 5", "--num-attention-heads 3", "--global-batch-size 10"):
        assert frag in msg


def test_validation_ok():
    layout = ps.validate_parallel_layout(16, 2, 2, num_layers=4, num_attention_heads=4,
                                         global_batch_size=32, micro_batch_size=2)
    assert layout == ps.ParallelLayout(16, 2, 2, 4)


def test_no_process_group_defaults():
    assert not dist.is_initialized()
    assert ps.get_tensor_model_parallel_world_size() == 1
    assert ps.get_pipeline_model_parallel_world_size() == 1
    assert ps.get_data_parallel_world_size() == 1
    assert ps.get_tensor_model_parallel_rank() == 0
    assert ps.get_data_parallel_rank() == 0
    assert ps.is_pipeline_first_stage() and ps.is_pipeline_last_stage()


def _members(group):
    if group is None:
        return None
    return sorted(dist.get_process_group_ranks(group))


def _groups_worker(rank, world_size, layouts):
    out = []
    for tp, pp in layouts:
        ps.initialize_model_parallel(tp, pp)
        out.append(dict(
            tp=_members(ps.get_tensor_model_parallel_group()),
            dp=_members(ps.get_data_parallel_group()),
            pp=_members(ps.get_pipeline_model_parallel_group()),
            mp=_members(ps.get_model_parallel_group()),
            emb=_members(ps.get_embedding_group()),
            ranks=(ps.get_tensor_model_parallel_rank(), ps.get_data_parallel_rank(),
                   ps.get_pipeline_model_parallel_rank()),
            first=ps.is_pipeline_first_stage(), last=ps.is_pipeline_last_stage(),
            nxt=ps.get_pipeline_model_parallel_next_rank(),
            prev=ps.get_pipeline_model_parallel_prev_rank()))
        # a second call must be refused rather than silently re-creating groups
        try:
            ps.initialize_model_parallel(tp, pp)
            out[-1]["reinit"] = "accepted"
        except RuntimeError:
            out[-1]["reinit"] = "refused"
        ps.destroy_model_parallel()
    # invalid layout: every rank raises the same ValueError before any collective
    try:
        ps.initialize_model_parallel(3, 1)
        out.append("no error")
    except ValueError as exc:
        out.append(str(exc))
    return out


def four_rank_jobs(tmp_path_factory) -> dict:
    """This module's job in the session's shared 4-rank spawn (tests/conftest.py)."""
    return {"groups": (_groups_worker, [(2, 2), (2, 1)])}


def test_groups_on_four_ranks(four_rank_spawn):
    res = four_rank_spawn["groups"]
    for rank, (tp2pp2, dp2tp2, bad) in enumerate(res):
        # TP2 x PP2: rank = pp*2 + tp, DP size 1
        assert tp2pp2["tp"] == [rank - rank % 2, rank - rank % 2 + 1]
        assert tp2pp2["dp"] == [rank]
        assert tp2pp2["pp"] == [rank % 2, rank % 2 + 2]
        assert tp2pp2["mp"] == [0, 1, 2, 3]
        assert tp2pp2["emb"] == [rank % 2, rank % 2 + 2]
        assert tp2pp2["ranks"] == (rank % 2, 0, rank // 2)
        assert tp2pp2["first"] == (rank < 2) and tp2pp2["last"] == (rank >= 2)
        assert tp2pp2["nxt"] == (rank + 2) % 4 and tp2pp2["prev"] == (rank + 2) % 4
        assert tp2pp2["reinit"] == "refused"
        # DP2 x TP2: rank = dp*2 + tp
        assert dp2tp2["tp"] == [rank - rank % 2, rank - rank % 2 + 1]
        assert dp2tp2["dp"] == [rank % 2, rank % 2 + 2]
        assert dp2tp2["pp"] == [rank]
        assert dp2tp2["mp"] == [rank - rank % 2, rank - rank % 2 + 1]
        assert dp2tp2["ranks"] == (rank % 2, rank // 2, 0)
        assert dp2tp2["first"] and dp2tp2["last"]
        assert "--tensor-model-parallel-size 3" in bad
