"""Saving a figure: one PNG written atomically, then the figure released."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from mnist_models.atomic_files import atomic_path

SAVE_DPI = 110


def save_figure(figure: Figure, path: str | os.PathLike[str]) -> Path:
    """Write `figure` as a PNG at `path` (dpi 110) atomically, then clear it to release memory."""
    final = Path(path)
    if final.suffix.lower() != ".png":
        raise ValueError(f"figure path {str(final)!r} must end in .png; save_figure only writes PNG files")
    try:
        with atomic_path(final) as temporary:
            figure.savefig(temporary, format="png", dpi=SAVE_DPI, bbox_inches="tight", facecolor="white")
    finally:
        # Figures built here are not registered with pyplot, so clearing them drops every artist.
        figure.clear()
    return final
