"""What every `tamor` command shares: the console, option definitions, choices, the config loader,
and the one error handler (any :class:`TamorError` → one red line, exit code 2)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, TypeVar, get_args

import click
import typer
import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from tamor.models.config import ModelName as ModelNames
from tamor.models.errors import TamorError
from tamor.platform.data_dir import SPLITS
from tamor.platform.defaults import DEFAULT_DATA
from tamor.platform.tracking import WandbMode
from tamor.platform.train_config import TrainConfig

console = Console()
C = TypeVar("C", bound=BaseModel)


class CliError(TamorError):
    """Bad command-line input."""


@dataclass
class Session:
    """One `tamor` invocation: its global options (``--verbose``) and, once Ray is started, where its logs go. It lives
    on click's context (``ctx.obj``), so nothing of it outlives the command."""

    verbose: bool = False
    log: Path | None = None


def session() -> Session:
    """The running command's :class:`Session` (a fresh one outside any command, e.g. called from Python)."""
    ctx = click.get_current_context(silent=True)
    return ctx.ensure_object(Session) if ctx is not None else Session()


class Steps:
    """One line per step: a spinner with the elapsed time while it runs (and, with ``watch``, what it
    is doing: a callable polled every second, e.g. the last epoch), then ``✓ name: key figure (seconds)``.
    Timings go to ``out/timings.json`` when ``out`` is given. A failing step prints ✗ and where the
    full log is, and re-raises."""

    def __init__(self, console: Console, out: Path | None = None, log: Path | None = None):
        self.console, self.out, self.log, self.timings = console, out, log, {}

    @contextmanager
    def __call__(self, name: str, watch: Callable[[], str | None] | None = None) -> Iterator[dict]:
        result: dict = {}  # the step sets result["figure"], the one number a person wants from it
        start = time.perf_counter()
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        try:
            # no live display when the console is a file or a pipe (CI, `| tee`): just the final line
            with Progress(*columns, console=self.console, transient=True, disable=not self.console.is_terminal) as progress:
                task = progress.add_task(f"{name} …")
                stop = threading.Event()
                watcher = threading.Thread(target=self._watch, args=(progress, task, name, watch, stop), daemon=True)
                if watch is not None:
                    watcher.start()
                try:
                    yield result
                finally:
                    stop.set()
        except BaseException:
            self.console.print(f"[red]✗[/] {name} failed after {time.perf_counter() - start:.0f} s"
                               + (f"; full log: {self.log}" if self.log else ""))
            raise
        self.timings[name] = round(time.perf_counter() - start, 1)
        if self.out is not None:
            (self.out / "timings.json").write_text(json.dumps(self.timings, indent=2))
        figure = f": {result['figure']}" if result.get("figure") else ""
        self.console.print(f"[green]✓[/] {name}{figure} ({self.timings[name]:.0f} s)", highlight=False, soft_wrap=True)

    @staticmethod
    def _watch(progress: Progress, task, name: str, watch: Callable[[], str | None], stop: threading.Event) -> None:
        while not stop.wait(1.0):
            try:
                text = watch()
            except Exception:  # noqa: BLE001 - a progress line must never break the step
                text = None
            if text:
                progress.update(task, description=f"{name} … {text}")


def epoch_watch(run_dir: Path, epochs: int, metric: str = "val_auc_mean") -> Callable[[], str | None]:
    """A :class:`Steps` watcher for a training run: its last finished epoch and validation metric."""

    def last_epoch() -> str | None:
        from tamor.platform.run_files import read_epochs

        logged = read_epochs(run_dir)
        if not logged:
            return None
        last = logged[-1]
        return f"epoch {last['epoch'] + 1}/{epochs}, {metric} {last.get(metric, float('nan')):.4f}"

    return last_epoch


def steps() -> Steps:
    """The standalone commands' step printer (logs: where ``start_ray`` sent them)."""
    return Steps(console, log=session().log)


class TamorGroup(TyperGroup):
    """Runs a command; a :class:`TamorError` becomes its message and exit code 2, never a traceback.
    Anything else is a bug: without ``--verbose`` its traceback goes to the log file, and the console
    gets one line saying where."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TamorError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(code=2) from None
        except Exception as e:  # the one catch-all: a bug's traceback belongs in the log, not on a newcomer's screen
            run = ctx.find_object(Session) or Session()
            if run.verbose or run.log is None:
                raise
            logging.getLogger("tamor").exception("command failed")
            console.print(f"[bold red]failed:[/] {type(e).__name__}: {e}\nfull log: {run.log}", highlight=False)
            raise typer.Exit(code=1) from None


def start_ray(address: str | None, command: str, log_dir: Path | None = None) -> None:
    """Start or join Ray for ``command``; Ray's and the workers' logs go to ``log_dir`` (default
    ``runs/logs/<command>-<time>``) and, with ``--verbose``, to the console too."""
    from tamor.platform.ray_env import init_ray

    log_dir = log_dir or Path("runs/logs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = session()
    run.log = init_ray(address, log_dir=log_dir, verbose=run.verbose)
    if not run.verbose:
        console.print(f"[dim]logs: {log_dir}[/]", highlight=False)


def typer_app(help: str) -> typer.Typer:
    return typer.Typer(help=help, cls=TamorGroup, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


# ------------------------------------------------------------------------------------ choices

ModelName = Enum("ModelName", {name: name for name in get_args(ModelNames)}, type=str)
WandbChoice = Enum("WandbChoice", {m: m for m in get_args(WandbMode)}, type=str)
ObjectiveChoice = Enum("ObjectiveChoice", {m: m for m in ("mean_auc", "business")}, type=str)
SplitChoice = Enum("SplitChoice", {s: s for s in SPLITS}, type=str)


def value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


# ------------------------------------------------------------------------------------ shared options

AddressOpt = typer.Option(None, "--address", help="Ray cluster address (default: RAY_ADDRESS or a new local Ray).")
ConfigOpt = typer.Option(None, "--config", help="A config YAML; options and --set override it.")
SetOpt = typer.Option(None, "--set", help="Override any config field: --set model.dropout=0.1 (repeatable; values are YAML).")
def default_of(config: type[BaseModel], path: str) -> Any:
    """The default of a config field (``"model.name"`` reaches into a nested config): what an option left unset gives."""
    *parents, name = path.split(".")
    for part in parents:
        config = config.model_fields[part].annotation
    return config.model_fields[name].get_default(call_default_factory=True)


def field_opt(config: type[BaseModel], path: str, help: str, *decls: str, **kw: Any) -> Any:
    """An option that is None unless given, so a config file and ``--set`` apply beneath it; ``--help`` shows the
    config field's default, read from the config class, where it is named once."""
    return typer.Option(None, *decls, help=help, show_default=str(default_of(config, path)), **kw)


WandbOpt = field_opt(TrainConfig, "wandb", "W&B mode.", "--wandb")
GpuOpt = typer.Option(None, "--gpu/--cpu", help="GPU or CPU workers (default: GPUs if the cluster has them).")


def data_opt(default: Optional[str] = DEFAULT_DATA) -> Any:
    """``--data``; ``None`` as the default lets a config file's ``data_dir`` apply."""
    return typer.Option(default, "--data", help="Preprocessed data directory.", show_default=DEFAULT_DATA)


def load_config(cls: type[C], path: Path | None, overrides: dict[str, Any], sets: list[str] | None, what: str) -> C:
    """``cls`` from a YAML file, then the options that were given, then ``--set a.b=value`` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            raise CliError(f"no {what} file {path}")
        raw = yaml.safe_load(path.read_text()) or {}
    for dotted, v in overrides.items():
        if v is not None:
            _assign(raw, dotted, v)
    for item in sets or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise CliError(f"--set takes key=value, got {item!r}")
        _assign(raw, key.strip(), yaml.safe_load(text))
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        lines = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise CliError(f"invalid {what}: {lines}") from None


def _assign(raw: dict[str, Any], dotted: str, v: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = v


def require_data(data_dir: str | Path) -> None:
    from tamor.platform.data_dir import DataDir

    if not DataDir(data_dir).exists():
        raise CliError(f"no preprocessed data at {data_dir} (run `tamor generate` and `tamor preprocess` first)")


def print_frame(title: str, frame: Any, float_fmt: str = "{:.4f}") -> None:
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "fi" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*[float_fmt.format(v) if isinstance(v, float) else str(v) for v in row])
    console.print(table)
