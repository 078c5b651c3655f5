"""The `tamor` command line: the one module that reaches into every subpackage.

Every command has ``--help`` and defaults that run on the synthetic world. Ray is joined through
``--address`` / ``RAY_ADDRESS`` (e.g. under ``ray job submit``) or started locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Tier-Aware Multi-Objective Recommendation on Ray.", no_args_is_help=True, add_completion=False)
console = Console()

AddressOpt = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS or a new local Ray).")


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


@app.command()
def generate(
    out: Path = typer.Option(Path("runs/synthetic"), help="Output directory (logs/ and world.json)."),
    rows: int = typer.Option(200_000, min=1, help="Impressions to generate (50_000_000 works: it is a Ray Data job)."),
    users: Optional[int] = typer.Option(None, min=1, help="Users in the world (default rows/20)."),
    items: int = typer.Option(240, min=6, help="Items (mission cards), spread over six scenarios."),
    days: int = typer.Option(14, min=1, help="Days the impressions span."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same rows."),
    rows_per_block: int = typer.Option(100_000, min=1, help="Rows drawn by one Ray task."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Generate the synthetic world's tiered impression logs (Parquet shards)."""
    from tamor.platform.generate import generate as run
    from tamor.platform.ray_env import init_ray
    from tamor.platform.world import WorldConfig

    init_ray(address)
    cfg = WorldConfig(rows=rows, n_users=users, n_items=items, days=days, seed=seed, rows_per_block=rows_per_block)
    try:
        n = run(cfg, out)
    except FileExistsError as e:
        _fail(str(e))
    console.print(f"wrote {n:,} impressions of {cfg.users:,} users and {items} items to {out / 'logs'}")


@app.command()
def preprocess(
    source: str = typer.Option("runs/synthetic/logs", help="Raw logs: a file, directory or URI (CSV, Parquet or JSON)."),
    schema: str = typer.Option("synthetic", help="Schema YAML path, or a shipped schema name (synthetic, census_income)."),
    out: Path = typer.Option(Path("runs/synthetic/data"), help="Output directory (must be new or empty)."),
    max_reject_fraction: Optional[float] = typer.Option(None, min=0, max=1, help="Override the schema's limit."),
    address: Optional[str] = AddressOpt,
) -> None:
    """Validate, split, encode and snapshot raw logs with Ray Data; quarantine bad rows."""
    from tamor.platform.preprocess import PreprocessError
    from tamor.platform.preprocess import preprocess as run
    from tamor.platform.ray_env import init_ray
    from tamor.platform.schema import SchemaError, load_schema

    try:
        log_schema = load_schema(schema)
    except SchemaError as e:
        _fail(str(e))
    if max_reject_fraction is not None:
        log_schema.preprocess.max_reject_fraction = max_reject_fraction
    init_ray(address)
    try:
        report = run(source, log_schema, out)
    except (PreprocessError, KeyError) as e:
        _fail(str(e))
    table = Table(title=f"preprocess {log_schema.name} → {out}")
    table.add_column("rows")
    table.add_column("count", justify="right")
    table.add_row("in", f"{report.rows_in:,}")
    for split, n in report.rows_out.items():
        table.add_row(split, f"{n:,}")
    table.add_row("quarantined", f"{report.rows_quarantined:,}")
    for reason, n in sorted(report.reasons.items()):
        table.add_row(f"  {reason}", f"{n:,}")
    console.print(table)


if __name__ == "__main__":
    app()
