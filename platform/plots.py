"""Figures for files, never for a screen: matplotlib's object-oriented ``Figure`` renders PNGs with
no pyplot state and no GUI backend, so plotting works in Ray workers, CI and headless servers alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8), **kw: Any) -> tuple[Figure, Any]:
    """A new figure and its axes (as ``pyplot.subplots`` returns them)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def save(fig: Figure, path: str | Path, dpi: int = 120) -> None:
    """Lay out and write ``fig`` as an image file."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
