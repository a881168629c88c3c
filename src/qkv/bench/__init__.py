"""Benchmarks (one module per subject; the ``qkv bench`` subcommands call these).

Each module has a config, a run function returning a result (``to_json`` is what ``--json``
writes) and a table formatter: ``attention`` (sparse attention backends, time and memory),
``attention_peers`` (dense attention against its peers), ``train``, ``generate`` and
``record`` (qkv models against ``transformers`` and ``torch.nn`` of the same shape), ``long``
(efficient attention, Transformer-XL's memory and quality vs time at long contexts) and
``approx`` (approximation error of FAVOR+ and Linformer).

>>> from qkv.bench import AttentionBenchConfig
>>> AttentionBenchConfig(lengths=(256,), impls=("sdpa",)).masks
('causal', 'window', 'bigbird')
"""

from qkv.bench.approx import (
    ApproxBenchConfig,
    ApproxBenchResult,
    format_approx_table,
    run_approx_bench,
)
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
from qkv.bench.long import (
    LongBenchConfig,
    LongBenchResult,
    LongRow,
    format_long_table,
    run_long_bench,
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
    "ApproxBenchConfig",
    "ApproxBenchResult",
    "AttentionBenchConfig",
    "AttentionBenchResult",
    "GenerateBenchConfig",
    "GenerateBenchResult",
    "GenerateMeasurement",
    "LongBenchConfig",
    "LongBenchResult",
    "LongRow",
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
    "format_approx_table",
    "format_generate_table",
    "format_long_table",
    "format_peer_table",
    "format_record_table",
    "format_table",
    "format_train_table",
    "run_approx_bench",
    "run_attention_bench",
    "run_generate_bench",
    "run_long_bench",
    "run_peer_attention_bench",
    "run_record_bench",
    "run_train_bench",
]
