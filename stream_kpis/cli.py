"""The `stream-kpis` command.

Every subcommand hangs off the `main` group. An expected failure is a `StreamKpisError`: the
group prints it as one line, `Error: <message>`, and exits with code 2, so no command shows a
traceback for a bad setting, a missing program or an unreachable service.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from stream_kpis import __version__
from stream_kpis.commands.compute import compute_command
from stream_kpis.commands.demo import demo_command
from stream_kpis.commands.generate import generate_command
from stream_kpis.commands.produce import produce_command, replay_command
from stream_kpis.commands.rules import rules_command
from stream_kpis.commands.worker import worker_command
from stream_kpis.errors import StreamKpisError
from stream_kpis.services.cli import services

EXIT_ERROR = 2

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StreamKpisCliError(click.ClickException):
    """A `StreamKpisError` on its way to the terminal."""

    exit_code = EXIT_ERROR


class StreamKpisGroup(click.Group):
    """A click group that turns `StreamKpisError` into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StreamKpisError as exc:
            raise StreamKpisCliError(str(exc)) from None


@click.group(cls=StreamKpisGroup)
@click.version_option(__version__, prog_name="stream-kpis")
@click.option(
    "--log-level",
    envvar="STREAM_KPIS_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log level (also STREAM_KPIS_LOG_LEVEL).",
)
def main(log_level: str) -> None:
    """Live business KPIs (churn, retention, NDR, NPS, CSAT, conversion) from Kafka events."""
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)


main.add_command(services)
main.add_command(compute_command)
main.add_command(demo_command)
main.add_command(generate_command)
main.add_command(produce_command)
main.add_command(replay_command)
main.add_command(rules_command)
main.add_command(worker_command)
