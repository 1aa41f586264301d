"""Click commands of the `stream-kpis` CLI, one module per command family."""
