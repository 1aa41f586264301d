"""`python -m stream_kpis` runs the CLI."""

from stream_kpis.cli import main

main()
