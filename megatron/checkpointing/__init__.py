"""The one home of the checkpoint format: every reader and writer of checkpoints
(training, ``tools/checkpoint_util.py``, the evaluation and finetuning tasks, the analyzer
tool, the study) goes through this package.

    files.py        the on-disk names (iteration and rank folders, files, the tracker),
                    reading a file (a damaged one named), atomic writes and publication
    folder.py       what a folder holds: the tracker, complete iterations, who may save
                    into it, the temporary folders of killed saves
    lock.py         one run per --save folder (flock on SAVE/run.lock)
    run_record.py   what a run trained with, stored in every checkpoint, checked on resume
    save_load.py    a training run's collective save and load (exact resume, the
                    architecture check, --ckpt-fallback)
    model_split.py  how a whole model's tensors split over TP ranks and PP stages
    whole_model.py  any checkpoint of any TP / PP / EP layout -> one model (or this
                    rank's part of it)
    convert.py      one model -> a checkpoint of any layout
    dist_format.py  the torch_dist format (torch.distributed.checkpoint): save, load
                    under any layout, the asynchronous saver
    dist_state.py   the model and optimizer as global tensors (names, placement)
    global_tensors.py  a rank's pieces of global tensors, DCP's planners over them
    dist_files.py   a torch_dist folder's files and their completeness check
"""
from megatron.checkpointing.files import (CKPT_NAME, TRACKER, checkpoint_dir,  # noqa: F401
                                          read_checkpoint_file)
from megatron.checkpointing.folder import (describe_folder, describe_iterations,  # noqa: F401
                                           iteration_folders, loadable_iterations, read_tracker,
                                           remove_stale_temp_dirs, save_dir_conflict)
from megatron.checkpointing.save_load import (SaveError, checkpoint_file,  # noqa: F401
                                              load_checkpoint, save_checkpoint, unwrap_model)
