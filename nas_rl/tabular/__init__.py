"""The tabular benchmark: a small space whose every architecture was evaluated once, looked up in memory.

:mod:`nas_rl.tabular.table` (the packed file and its checks), :mod:`nas_rl.tabular.build` (building and packing),
:mod:`nas_rl.tabular.evaluator` (the env's fast path), :mod:`nas_rl.tabular.env` (the Tabular env from a table).
"""

from nas_rl.tabular.table import Table, load_table, shipped_tables, table_space

__all__ = ["Table", "load_table", "shipped_tables", "table_space"]
