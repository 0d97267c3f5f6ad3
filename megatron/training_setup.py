"""What ``pretrain()`` builds from the validated flags before its loop runs: the model
chunks, the data-efficiency runtime over the run's step planner, the logger (log line,
TensorBoard, metrics file) and the metrics file's summary of the run. The finetuning
loop (``tasks/finetune_utils.py``) builds its parts with the same functions."""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from megatron import metrics_file, telemetry
from megatron.core import parallel_state
from megatron.core.timers import Timers
from megatron.core.devices import accelerator_device
from megatron.core.distributed import fsdp
from megatron.core.enums import ModelType
from megatron.data_efficiency.data_family import DataFamily, TrainingSamples
from megatron.data_efficiency.runtime import DataEfficiencyRuntime, Parallelism
from megatron.data_efficiency.step_plan import StepPlanner
from megatron.run_config import RunConfig
from megatron.run_plan import RunPlan
from megatron.throughput import ModelFlops, device_name, peak_tflops
from megatron.training_log import Telemetry, TrainingLogger


def build_model(model_provider: Callable, config: RunConfig) -> list[torch.nn.Module]:
    """This rank's model chunk(s), on the accelerator, wrapped for bf16/fp16, or sharded
    by FSDP2 (``--use-torch-fsdp2`` / ``--zero-stage 2|3``: each transformer layer a unit).

    Under interleaving (``--num-layers-per-virtual-pipeline-stage``) chunk ``i`` is built
    with virtual pipeline rank ``i``: only chunk 0 of the first stage holds the embedding
    and only the last chunk of the last stage the output layer, as in Megatron.
    """
    num_chunks = config.parallel.virtual_pipeline_model_parallel_size or 1
    model = []
    for i in range(num_chunks):
        if config.parallel.virtual_pipeline_model_parallel_size is not None:
            parallel_state.set_virtual_pipeline_model_parallel_rank(i)
        chunk = model_provider(pre_process=parallel_state.is_pipeline_first_stage(),
                               post_process=parallel_state.is_pipeline_last_stage())
        chunk = chunk.to(accelerator_device())
        if config.parallel.fsdp is not None:   # fp32 shards, bf16 compute by FSDP's policy
            chunk = fsdp.fully_shard_chunk(chunk, _transformer_layers(chunk),
                                           config.parallel.fsdp)
        elif config.optimizer.fp16 or config.optimizer.bf16:
            from megatron.model.module import Float16Module
            chunk = Float16Module(chunk, config.model.params_dtype)
        model.append(chunk)
    if config.parallel.virtual_pipeline_model_parallel_size is not None:
        parallel_state.set_virtual_pipeline_model_parallel_rank(0)
    n = sum(p.numel() for chunk in model for p in chunk.parameters())
    if parallel_state.get_data_parallel_rank() == 0:
        print(f" > number of parameters on (tensor, pipeline) model parallel rank "
              f"({parallel_state.get_tensor_model_parallel_rank()}, "
              f"{parallel_state.get_pipeline_model_parallel_rank()}): {n}", flush=True)
    return model


def _transformer_layers(chunk: torch.nn.Module) -> list[torch.nn.Module]:
    from megatron.model.transformer import ParallelTransformerLayer
    return [m for m in chunk.modules() if isinstance(m, ParallelTransformerLayer)]


def build_data_efficiency_runtime(planner: StepPlanner,
                                  samples: TrainingSamples | None = None,
                                  family: DataFamily | None = None) -> DataEfficiencyRuntime:
    """The data-efficiency runtime of this rank over the run's ``planner`` (``RunPlan.
    planner``; the plain runtime when nothing is configured), with the analyzer index
    check of ``samples`` numbered as ``family`` numbers them (None: not checked)."""
    par = Parallelism(dp_rank=parallel_state.get_data_parallel_rank(),
                      dp_size=parallel_state.get_data_parallel_world_size(),
                      pp_size=parallel_state.get_pipeline_model_parallel_world_size())
    if dist.is_initialized():
        par.dp_group = parallel_state.get_data_parallel_group()
        par.pp_group = parallel_state.get_pipeline_model_parallel_group()
    return DataEfficiencyRuntime(planner, par, samples, family)


def training_samples(config: RunConfig, run: RunPlan) -> TrainingSamples:
    """The flags that decide this run's training samples (an analyzer index of them is
    built with the same)."""
    return TrainingSamples(tuple(config.data.data_path or ()), config.data.split,
                           config.training.seq_length, config.training.seed,
                           run.train_valid_test_num_samples[0])


def training_telemetry(config: RunConfig, is_last_rank: bool) -> Telemetry:
    """The timers, throughput, memory and W&B settings of ``megatron.telemetry``'s flags."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    logging = config.logging
    return Telemetry(timers=Timers(telemetry.timer_config(logging)),
                     world_size=dist.get_world_size() if dist.is_initialized() else 1,
                     peak_tflops=peak_tflops(device_name(), logging.peak_tflops),
                     memory_to_tensorboard=logging.log_memory_to_tensorboard,
                     memory_interval=logging.log_memory_interval,
                     reports_memory=parallel_state.get_data_parallel_rank() == 0, rank=rank,
                     wandb=telemetry.wandb_writer(config, is_last_rank))


def model_flops(config: RunConfig, model: str) -> ModelFlops:
    """The FLOPs count of the ``model`` (``"gpt"`` or ``"bert"``: bidirectional attention)
    the flags build."""
    return ModelFlops.from_config(config.model, causal=model != "bert")


def training_logger(config: RunConfig, train_iters: int) -> TrainingLogger:
    """The log line, TensorBoard writer, metrics file and telemetry of the ``--log-*`` /
    ``--tensorboard-*`` / ``--metrics-file`` / telemetry flags (the last rank prints and
    writes: it holds the loss)."""
    is_last_rank = not dist.is_initialized() or dist.get_rank() == dist.get_world_size() - 1
    logging = config.logging
    return TrainingLogger(train_iters, logging.log_interval, logging.tensorboard_dir,
                          logging.tensorboard_log_interval,
                          metrics_file=metrics_file.default_path(logging.metrics_file,
                                                                 logging.tensorboard_dir),
                          is_logging_rank=is_last_rank,
                          queue_size=logging.tensorboard_queue_size,
                          log_batch_size=logging.log_batch_size_to_tensorboard,
                          log_validation_ppl=logging.log_validation_ppl_to_tensorboard,
                          log_timers=logging.log_timers_to_tensorboard,
                          telemetry=training_telemetry(config, is_last_rank))


def run_summary(config: RunConfig, run: RunPlan, model_type: ModelType,
                record: dict) -> dict:
    """The metrics file's ``config``: model, layout, batch, stop conditions, precision,
    LR, and the checkpoint's record of schedules, data and tokenizer."""
    model, train, par, opt = config.model, config.training, config.parallel, config.optimizer
    return {"model": model_type.data_model, "num_layers": model.num_layers,
            "hidden_size": model.hidden_size, "num_attention_heads": model.num_attention_heads,
            "seq_length": train.seq_length, "micro_batch_size": train.micro_batch_size,
            "global_batch_size": train.global_batch_size, "world_size": par.world_size,
            "tensor_model_parallel_size": par.tensor_model_parallel_size,
            "pipeline_model_parallel_size": par.pipeline_model_parallel_size,
            "data_parallel_size": par.data_parallel_size,
            "precision": "bf16" if opt.bf16 else "fp16" if opt.fp16 else "fp32",
            "lr": opt.lr, "min_lr": opt.min_lr,
            "stop": {"iterations": run.stop_iters, "samples": run.stop_samples,
                     "tokens": run.stop_tokens}, "record": record}
