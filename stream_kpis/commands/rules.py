"""`stream-kpis rules`: Prometheus recording rules for the KPI targets of a targets file."""

from __future__ import annotations

from pathlib import Path

import click

from stream_kpis.commands.params import check_extra_windows, check_windows, open_output
from stream_kpis.configure import engine_config
from stream_kpis.settings import load_settings
from stream_kpis.targets import load_targets, render_rules_yaml


@click.command("rules")
@click.argument("targets_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    show_default=True,
    help="Rules file to write; '-' prints to stdout.",
)
@click.option(
    "--window",
    "windows",
    multiple=True,
    metavar="NAME=DURATION[/BUCKET]",
    callback=check_windows,
    help="A window the workers have beyond the STREAM_KPIS_WINDOWS seen here (repeatable), "
    "so targets may use it.",
)
def rules_command(targets_file: Path, output: Path, windows: tuple[str, ...]) -> None:
    """Write the Prometheus recording rules for the targets in TARGETS_FILE (TOML).

    Each target becomes `stream_kpis:target_met:global` (1 met, 0 missed, absent without data),
    plus the success-rate rules. Put the output in deploy/prometheus/rules/ next to kpis.yml,
    whose global KPI values the target rules compare.
    """
    settings = load_settings()
    check_extra_windows(settings.windows, windows)
    config = engine_config(settings, extra_windows=windows)
    names = [spec.name for spec in config.windows]
    targets = load_targets(targets_file, windows=names)
    text = render_rules_yaml(targets, source=str(targets_file))

    with open_output(output) as out:
        out.write(text)
    if output != Path("-"):
        click.echo(f"wrote {len(targets)} target rules to {output}", err=True)
