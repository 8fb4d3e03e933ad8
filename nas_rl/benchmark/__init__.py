"""The tabular benchmark: a small space whose every architecture was evaluated once, looked up in memory.

:mod:`nas_rl.benchmark.table` (the packed file and its checks), :mod:`nas_rl.benchmark.estimators` (the table as
an accuracy estimator and a latency model). Building a table is a tool: ``python -m nas_rl.tools.build_table``.
"""

from nas_rl.benchmark.table import Table, load_table, shipped_tables, table_space

__all__ = ["Table", "load_table", "shipped_tables", "table_space"]
