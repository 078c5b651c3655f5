"""`tamor demo`'s settings, each default named once (the CLI's options read them). Light: `tamor --help` imports it.

The defaults keep the whole demo, every stage, within about six minutes on two CPUs (docs/benchmarks.md).

Example:
    >>> from pathlib import Path
    >>> DemoConfig(out=Path("runs/demo")).sweep_trials
    2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DemoConfig:
    out: Path
    rows: int = 100_000  # impressions in the synthetic world: enough for every task × tier cell to be judged
    users: int | None = None  # None: the world's default users per row
    epochs: int = 3
    workers: int = 2  # DDP workers per training run: the demo shows data-parallel training (one per CPU here)
    lr: float = 3e-3  # a 3-epoch demo needs a faster schedule than the recipe's 1e-3 with early stopping over 30
    sweep_trials: int = 2  # one wave of two concurrent trials: the sweep shown, not a search (`tamor sweep` searches)
    sweep_epochs: int = 2
    requests: int = 40
    ab_days: int = 3
    seed: int = 0
    model_overrides: dict = field(default_factory=dict)
    verbose: bool = False  # Ray's and the workers' logs on the console too (they always go to <out>/logs)


def default(name: str):
    """A field's default, for the CLI's options."""
    return DemoConfig.__dataclass_fields__[name].default
