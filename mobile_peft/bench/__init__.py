"""Benchmarks that ship with the SDK (``mobile-peft bench``)."""

from .ranks import BenchConfig, markdown_table, run_rank_bench, smoke_config, summarise, write_results

__all__ = ["BenchConfig", "markdown_table", "run_rank_bench", "smoke_config", "summarise", "write_results"]
