"""The report's figures as PNG bytes (matplotlib, Agg canvas; no display, no pyplot global state)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.report.inputs import History
from pipeline.report.tables import Key, Stat, condition_label, metric_label

DPI = 110


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # no timestamp or version in the PNG: the same numbers give the same bytes
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def metric_by_condition(
    summary: dict[Key, Stat],
    results: dict[Key, dict[int, float]],
    models: Sequence[str],
    conditions: Sequence[str],
    metric: str,
) -> bytes:
    """Grouped bars: one group per condition, one bar per model, mean ± std over seeds (error bars),
    each seed's value as a dot on its bar."""
    n_models = len(models)
    width = 0.8 / n_models
    x = np.arange(len(conditions))
    fig = Figure(figsize=(max(5.0, 1.3 * len(conditions) + 1.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(n_models)]
    for i, model in enumerate(models):
        pos = x - 0.4 + width * (i + 0.5)
        stats = [summary.get((model, c, metric)) for c in conditions]
        means = np.array([s.mean if s else np.nan for s in stats])
        stds = np.array([s.std if s and s.n > 1 and np.isfinite(s.std) else 0.0 for s in stats])
        ax.bar(pos, means, width * 0.9, yerr=stds, capsize=4, color=colors[i], alpha=0.75,
               label=model, error_kw={"elinewidth": 1.2})
        for p, c in zip(pos, conditions):
            vals = list(results.get((model, c, metric), {}).values())
            if vals:
                jitter = np.linspace(-width * 0.2, width * 0.2, len(vals)) if len(vals) > 1 else [0.0]
                ax.scatter(p + np.asarray(jitter), vals, s=14, color="black", zorder=3, linewidths=0)
    ax.set_xticks(x, [condition_label(c) for c in conditions], rotation=20, ha="right")
    ax.set_ylabel(f"{metric_label(metric)} ({metric})")
    tops = [s.mean + (s.std if np.isfinite(s.std) else 0.0) for k, s in summary.items() if k[2] == metric]
    tops += [v for k, cell in results.items() if k[2] == metric for v in cell.values()]
    top = float(np.nanmax(tops + [0.05]))
    ax.set_ylim(0, min(1.0, top * 1.15) if top <= 1.0 else top * 1.1)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(f"{metric_label(metric)} per condition (bars: mean ± std over seeds; dots: seeds)", fontsize=10)
    if n_models > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def training_curves(histories: dict[str, dict[int, History]]) -> bytes:
    """Per model: devel macro F1 per epoch (one line per seed, best epoch marked) and, where logged,
    train and devel loss."""
    models = list(histories)
    with_loss = any("train_loss" in h.columns or "devel_loss" in h.columns
                    for runs in histories.values() for h in runs.values())
    ncols = 2 if with_loss else 1
    fig = Figure(figsize=(5.0 * ncols, 3.2 * len(models)), layout="constrained")
    axes = fig.subplots(len(models), ncols, squeeze=False)
    for row, model in enumerate(models):
        ax_f1 = axes[row][0]
        for j, (seed, h) in enumerate(sorted(histories[model].items())):
            color = f"C{j % 10}"
            f1 = np.asarray(h.columns["devel_macro_f1"], dtype=np.float64)
            ax_f1.plot(h.epoch, f1, color=color, lw=1.4, label=f"seed {seed}")
            if np.any(np.isfinite(f1)):
                best = int(np.nanargmax(f1))
                ax_f1.plot(h.epoch[best], f1[best], "o", color=color, ms=5)
            if with_loss:
                ax_loss = axes[row][1]
                for col, style in (("train_loss", "--"), ("devel_loss", "-")):
                    if col in h.columns:
                        ax_loss.plot(h.epoch, h.columns[col], style, color=color, lw=1.2,
                                     label=f"seed {seed} {col.split('_')[0]}")
        ax_f1.set_title(f"{model}: devel UF1 (macro F1) per epoch; dot = best epoch", fontsize=10)
        ax_f1.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_f1.set_xlabel("epoch")
        ax_f1.set_ylabel("devel macro F1")
        ax_f1.grid(alpha=0.3)
        ax_f1.legend(fontsize=8)
        if with_loss:
            ax_loss = axes[row][1]
            ax_loss.set_title(f"{model}: loss (dashed: train, solid: devel)", fontsize=10)
            ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax_loss.set_xlabel("epoch")
            ax_loss.set_ylabel("loss")
            ax_loss.grid(alpha=0.3)
    return _png(fig)
