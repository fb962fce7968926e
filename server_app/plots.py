"""Plots of a run: accuracy and loss per round, bytes per round, label distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_rounds(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One plot per test metric (accuracy.png, loss.png; PRISM: fd.png, kid.png, ...),
    bytes.png and, for PRISM, dynamics.png from metrics.jsonl rows."""
    if not rows:
        return []
    plt = _pyplot()
    rounds = [r["round"] for r in rows]
    paths = []
    per_model = rows[-1].get("per-model", {})
    # Per-class entries ("class-accuracy/3") stay in metrics.jsonl, not one plot each.
    keys = sorted({k for m in per_model.values() for k in m if "/" not in k}) or ["accuracy"]
    for key in keys:
        label = f"test {key}"
        fig, ax = plt.subplots(figsize=(6, 4))
        mean = [
            float(
                np.mean([m.get(key, np.nan) for m in r.get("per-model", {}).values()] or [np.nan])
            )
            for r in rows
        ]
        ax.plot(rounds, mean, marker="o", label="mean over models")
        for arch in sorted(per_model):
            series = [r["per-model"].get(arch, {}).get(key, np.nan) for r in rows]
            ax.plot(rounds, series, linestyle="--", alpha=0.7, label=arch)
        ax.set(xlabel="round", ylabel=label, title=f"{label} per round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out_dir / f"{key}.png", plt))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        rounds,
        [r["bytes-down"] / 1e6 for r in rows],
        marker="o",
        label="server → nodes",
    )
    ax.plot(rounds, [r["bytes-up"] / 1e6 for r in rows], marker="s", label="nodes → server")
    ax.set(
        xlabel="round",
        ylabel="MB (serialised records)",
        title="communication per round",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out_dir / "bytes.png", plt))
    dynamics = [k for k in TRAINING_DYNAMICS if any(k in r.get("train", {}) for r in rows)]
    if dynamics:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in dynamics:
            ax.plot(rounds, [r.get("train", {}).get(key, np.nan) for r in rows], label=key)
        ax.set(xlabel="round", ylabel="share / bits per weight", title="mask dynamics per round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_save(fig, out_dir / "dynamics.png", plt))
    return paths


# PRISM's per-round training dynamics (strategies/prism.py), all in [0, 1].
TRAINING_DYNAMICS = (
    "theta-mean",
    "global-theta-mean",
    "theta-low-share",
    "theta-high-share",
    "mada-hamming",
    "theta-drift",
    "uplink-bits-per-weight",
)


def plot_label_distribution(counts: dict[int, list[int]], out_path: Path) -> Path | None:
    """Stacked bars: examples per class for every client (by partition id)."""
    if not counts:
        return None
    plt = _pyplot()
    parts = sorted(counts)
    mat = np.array([counts[p] for p in parts], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(parts)), 4))
    bottom = np.zeros(len(parts))
    cmap = plt.get_cmap("tab20" if mat.shape[1] > 10 else "tab10")
    for c in range(mat.shape[1]):
        ax.bar(
            [str(p) for p in parts],
            mat[:, c],
            bottom=bottom,
            color=cmap(c % 20),
            label=str(c),
        )
        bottom += mat[:, c]
    ax.set(xlabel="partition id", ylabel="examples", title="label distribution per client")
    if mat.shape[1] <= 20:
        ax.legend(
            title="class",
            fontsize=7,
            ncol=2,
            bbox_to_anchor=(1.01, 1),
            loc="upper left",
        )
    return _save(fig, out_path, plt)


def save_image_grid(images: np.ndarray, out_path: Path, columns: int = 8) -> Path:
    """uint8 images (N, C, H, W) as one PNG grid, without axes."""
    plt = _pyplot()
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = img.transpose(1, 2, 0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(out_path, grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None)
    return out_path


def _save(fig, path: Path, plt) -> Path:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
