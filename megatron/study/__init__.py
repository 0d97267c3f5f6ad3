"""The data-efficiency study (tools/data_efficiency_study.py) and the low-cost tuner
(tools/tune_data_efficiency.py): arms and presets as data, runs as ordinary
``pretrain_gpt.py`` / ``pretrain_bert.py`` command lines, results read back from each
run's TensorBoard events."""
