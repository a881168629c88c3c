"""Benchmarks (one module per subject; the ``qkv bench`` subcommands call these).

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

__all__ = [
    "AttentionBenchConfig",
    "AttentionBenchResult",
    "Measurement",
    "format_table",
    "run_attention_bench",
]
