"""Benchmarks (one module per subject; the ``qkv bench`` subcommands call these).

Each module has a config, a run function returning a result (``to_json`` is what ``--json``
writes) and a table formatter: ``attention`` (sparse attention backends, time and memory),
``attention_peers`` (dense attention against its peers), ``train``, ``generate`` and
``record`` (qkv models against ``transformers`` and ``torch.nn`` of the same shape).

>>> from qkv.bench import AttentionBenchConfig
>>> AttentionBenchConfig(lengths=(256,), impls=("sdpa",)).masks
('causal', 'window', 'bigbird')
"""

from qkv.bench.attention import (
    AttentionBenchConfig,
    AttentionBenchResult,
    Measurement,
    format_table,
    run_attention_bench,
)
from qkv.bench.attention_peers import (
    PeerAttentionConfig,
    PeerAttentionResult,
    PeerMeasurement,
    format_peer_table,
    run_peer_attention_bench,
)
from qkv.bench.generate import (
    GenerateBenchConfig,
    GenerateBenchResult,
    GenerateMeasurement,
    format_generate_table,
    run_generate_bench,
)
from qkv.bench.record import (
    RecordBenchConfig,
    RecordBenchResult,
    RecordMeasurement,
    format_record_table,
    run_record_bench,
)
from qkv.bench.train import (
    TrainBenchConfig,
    TrainBenchResult,
    TrainMeasurement,
    format_train_table,
    run_train_bench,
)

__all__ = [
    "AttentionBenchConfig",
    "AttentionBenchResult",
    "GenerateBenchConfig",
    "GenerateBenchResult",
    "GenerateMeasurement",
    "Measurement",
    "PeerAttentionConfig",
    "PeerAttentionResult",
    "PeerMeasurement",
    "RecordBenchConfig",
    "RecordBenchResult",
    "RecordMeasurement",
    "TrainBenchConfig",
    "TrainBenchResult",
    "TrainMeasurement",
    "format_generate_table",
    "format_peer_table",
    "format_record_table",
    "format_table",
    "format_train_table",
    "run_attention_bench",
    "run_generate_bench",
    "run_peer_attention_bench",
    "run_record_bench",
    "run_train_bench",
]
