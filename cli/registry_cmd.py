"""`tamor registry list | show | promote`: the model registry's versions and aliases."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tamor.cli.common import console, typer_app
from tamor.platform.defaults import DEFAULT_REGISTRY

app = typer_app("The model registry: list, show and promote versions.")
RegistryOpt = typer.Option(DEFAULT_REGISTRY, "--registry", help="Registry directory or URI.")


@app.command("list")
def registry_list(registry: str = RegistryOpt) -> None:
    """Every version with its metric, source and aliases."""
    from tamor.platform.registry import Registry, RegistryError

    reg = Registry(registry)
    versions = reg.versions(include_corrupt=True)
    if not versions:
        console.print(f"no versions in {registry}")
        return
    labels: dict[str, list[str]] = {}
    for ref in ("latest", "best"):
        try:
            labels.setdefault(reg.resolve(ref).name, []).append(ref)
        except RegistryError:
            pass
    try:
        aliases = reg.aliases()
    except RegistryError as e:  # the versions are still worth listing
        aliases = {}
        console.print(f"[yellow]aliases unreadable: {e}; `tamor registry promote` rewrites them[/yellow]")
    for alias, version in aliases.items():
        labels.setdefault(version, []).append(alias)
    table = Table(title=f"registry {registry}")
    for col in ("version", "created", "model", "metric", "value", "source", "aliases"):
        table.add_column(col)
    for v in versions:
        if v.problem is not None:
            table.add_row(v.name, "", "", "", "", f"[red]CORRUPT: {v.problem}[/red]", "")
            continue
        m = v.meta
        value = f"{m['metric_value']:.4f}" if m["metric_value"] is not None else ""
        source = m["source"].get("sweep") or m["source"].get("run", "")
        table.add_row(v.name, m["created"], m["config"]["name"], m["metric"], value, source, ", ".join(labels.get(v.name, [])))
    console.print(table)
    for path in reg.stale_incoming():
        console.print(f"[yellow]{path}: an export that did not finish (or one under way); the next export removes it[/yellow]")


@app.command("show")
def registry_show(ref: str = typer.Argument("latest", help="latest | best | an alias | a version"), registry: str = RegistryOpt) -> None:
    """One version's metadata (metrics, config, source) as JSON."""
    from tamor.platform.registry import Registry

    version = Registry(registry).resolve(ref)
    console.print_json(json.dumps({k: v for k, v in version.meta.items() if k != "feature_spec"}, default=str))


@app.command("promote")
def registry_promote(ref: str = typer.Argument(..., help="The version (or latest / best) to promote."),
                     alias: str = typer.Option("production", help="The alias to point at it."), registry: str = RegistryOpt) -> None:
    """Point an alias (default: production) at a version; serving can follow the alias."""
    from tamor.platform.registry import Registry

    version = Registry(registry).promote(ref, alias)
    console.print(f"{alias} → {version.name}")
