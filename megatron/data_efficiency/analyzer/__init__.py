"""Offline data analyzer: per-sample difficulty metrics and their sorted index (see README.md).

The curriculum reads an index with ``MetricIndex.open(DIR/<metric>, expected_fingerprint)``;
``tools/analyze_data.py`` builds it (``analyzer.run_analyzer``).
"""

from megatron.data_efficiency.analyzer.index_io import (MetricIndex, dataset_fingerprint,  # noqa: F401
                                                         write_metric_index)
