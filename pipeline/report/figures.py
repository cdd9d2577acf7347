"""The report's figures as PNG bytes (matplotlib, Agg canvas; no display, no pyplot global state)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.report.eval_files import DEVEL_METRICS, History, Trace
from pipeline.report.robust import Curve
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


def kept_epoch(h: History) -> tuple[int | None, str]:
    """(index of the epoch training kept, how it was chosen): the lowest devel loss where history.csv's
    early_stop says so, else the first highest devel selection metric (pipeline.train.loop keeps a strictly
    better epoch only)."""
    if h.early_stop.endswith("loss") and h.early_stop in h.columns:
        y, pick, how = np.asarray(h.columns[h.early_stop], dtype=np.float64), np.nanargmin, f"lowest {h.early_stop}"
    else:
        col = next(c for c in DEVEL_METRICS if c in h.columns)
        y, pick, how = np.asarray(h.columns[col], dtype=np.float64), np.nanargmax, f"highest {col}"
    return (int(pick(y)) if np.any(np.isfinite(y)) else None), how


def training_titles(histories: dict[int, History]) -> tuple[str, str | None]:
    """The panel titles, named from the columns actually plotted: the devel selection metric, and the
    losses (None when no loss is logged). The run names the figure."""
    plotted = sorted({next(c for c in DEVEL_METRICS if c in h.columns) for h in histories.values()})
    label = " / ".join(f"{metric_label(c[len('devel_'):])} ({c})" for c in plotted)
    losses = [c for c in ("train_loss", "devel_loss") if any(c in h.columns for h in histories.values())]
    styles = {"train_loss": "dashed", "devel_loss": "solid"}
    loss = f"loss per epoch ({', '.join(f'{styles[c]}: {c}' for c in losses)})" if losses else None
    how = sorted({kept_epoch(h)[1] for h in histories.values()})
    return f"devel {label} per epoch; dot = epoch kept ({' / '.join(how)})", loss


def training_curves(run: str, histories: dict[int, History]) -> bytes:
    """One run's training: the devel selection metric per epoch (one line per seed, best epoch marked)
    and, where logged, train and devel loss. Every panel is titled and labelled by the column it plots
    (`training_titles`)."""
    sel_title, loss_title = training_titles(histories)
    ncols = 2 if loss_title else 1
    fig = Figure(figsize=(4.8 * ncols, 3.2), layout="constrained")
    fig.suptitle(f"{run}: training", fontsize=10)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ax_sel = axes[0]
    plotted: set[str] = set()
    for j, (seed, h) in enumerate(sorted(histories.items())):
        color = f"C{j % 10}"
        sel = next(c for c in DEVEL_METRICS if c in h.columns)
        plotted.add(sel)
        y = np.asarray(h.columns[sel], dtype=np.float64)
        ax_sel.plot(h.epoch, y, color=color, lw=1.4, label=f"seed {seed}")
        kept, _ = kept_epoch(h)
        if kept is not None:
            ax_sel.plot(h.epoch[kept], y[kept], "o", color=color, ms=5)
        if loss_title:
            for loss_col, style in (("train_loss", "--"), ("devel_loss", "-")):
                if loss_col in h.columns:
                    axes[1].plot(h.epoch, h.columns[loss_col], style, color=color, lw=1.2)
    ax_sel.set_title(sel_title, fontsize=9)
    ax_sel.set_ylabel(" / ".join(sorted(plotted)))
    ax_sel.legend(fontsize=7)
    if loss_title:
        axes[1].set_title(loss_title, fontsize=9)
        axes[1].set_ylabel("loss")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _png(fig)


def confusion_matrices(run: str, matrices: dict[str, np.ndarray], classes: Sequence[str]) -> bytes:
    """One panel per condition: counts summed over seeds (rows = true class), shaded by row share."""
    n = len(matrices)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(3.4 * ncols, 3.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, (cond, cm) in enumerate(matrices.items()):
        ax = axes[i // ncols][i % ncols]
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=8,
                    color="white" if share[r, c] > 0.6 else "black")
        ax.set_xticks(range(len(classes)), list(classes), rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), list(classes), fontsize=7)
        ax.set_title(condition_label(cond), fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    fig.suptitle(f"{run}: test confusion matrices, counts summed over replicates", fontsize=10)
    return _png(fig)


def _run_colors(runs: Sequence[str]) -> dict[str, str]:
    return {r: f"C{i % 10}" for i, r in enumerate(runs)}


def robustness_curves(family: str, by_mod: dict[str, dict[str, Curve]], runs: Sequence[str], metric: str,
                      level_label: str, blind: dict[str, list[str]] | None = None) -> bytes:
    """One figure per condition family, one panel per affected modality: metric vs level, one line per
    run (same colour for a run in every figure), band = ± std over seeds. A run that does not take a
    panel's modality (`blind`: {modality: [run]}) has no line there; the panel says so in grey, and a
    panel no run can see is greyed out."""
    blind = blind or {}
    mods = list(by_mod) + [m for m in blind if m not in by_mod]
    ncols = min(3, len(mods))
    nrows = -(-len(mods) // ncols)
    fig = Figure(figsize=(4.0 * ncols, 2.9 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)  # one scale: panels compare at a glance
    colors = _run_colors(runs)
    for i, mod in enumerate(mods):
        ax = axes[i // ncols][i % ncols]
        for run, c in by_mod.get(mod, {}).items():
            x, m = np.asarray(c.levels), np.asarray(c.mean)
            sd = np.nan_to_num(np.asarray(c.std, dtype=np.float64), nan=0.0)
            ax.plot(x, m, "o-", ms=3, lw=1.3, color=colors[run], label=run)
            ax.fill_between(x, m - sd, m + sd, color=colors[run], alpha=0.15, linewidth=0)
        unseen = sorted({r.split("/")[0] for r in blind.get(mod, [])})
        if unseen:
            ax.text(0.5, 0.04, f"omitted: not an input of {', '.join(unseen)}", transform=ax.transAxes,
                    ha="center", va="bottom", fontsize=7, color="0.45")
        if not by_mod.get(mod):
            ax.set_facecolor("0.93")
        ax.set_title(f"{family}: {mod}", fontsize=10)
        ax.set_xlabel(level_label, fontsize=8)
        if i % ncols == 0:
            ax.set_ylabel(metric_label(metric))
        ax.tick_params(labelleft=True)
        ax.grid(alpha=0.3)
    for j in range(len(mods), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    handles, labels = [], []
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h), labels.append(lab)
    if labels:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8)
    return _png(fig)


def importance_bars(drops: dict[str, dict[str, Stat]], modalities: Sequence[str], metric: str) -> bytes:
    """Grouped bars: per modality, one bar per run: all present − modality missing (± std over seeds)."""
    runs = list(drops)
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(modalities))
    fig = Figure(figsize=(max(5.0, 1.4 * len(modalities) + 2.0), 3.6 + 0.15 * len(runs)), layout="constrained")
    ax = fig.add_subplot()
    colors = _run_colors(runs)
    for i, run in enumerate(runs):
        st = [drops[run].get(m) for m in modalities]
        means = np.array([s.mean if s else np.nan for s in st])
        sds = np.array([s.std if s and np.isfinite(s.std) else 0.0 for s in st])
        ax.bar(x - 0.4 + width * (i + 0.5), means, width * 0.9, yerr=sds, capsize=3, color=colors[run],
               alpha=0.8, label=run)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, list(modalities))
    ax.set_ylabel(f"drop in {metric_label(metric)}")
    ax.set_title(f"{metric_label(metric)}(all present) − {metric_label(metric)}(modality missing); "
                 "mean ± std over seeds", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=min(4, len(runs)))
    return _png(fig)


def regression_trace(trace: Trace) -> bytes:
    """True and predicted curve per target over the clip's label steps."""
    n = len(trace.targets)
    fig = Figure(figsize=(7.0, 2.4 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)
    for ax, (target, (steps, true, pred)) in zip(axes[:, 0], trace.targets.items()):
        ax.plot(steps, true, "-", color="black", lw=1.5, label="true")
        ax.plot(steps, pred, "--", color="C3", lw=1.5, label="predicted")
        ax.set_ylabel(target)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("label step")
    axes[0, 0].set_title(f"{trace.model} (seed {trace.seed}), clip {trace.clip_id}, all modalities present",
                         fontsize=10)
    return _png(fig)


def train_test_heatmap(panels: Sequence[tuple[str, list[float], list[float], list[list[float]]]], metric: str) -> bytes:
    """Train-rate × test-rate heat maps (report.scorecard.heat_panels): one panel per (run, test family,
    test modality), rows the training missing rate, columns the test level, colour and number the mean
    over replicates of `metric`; one colour scale for every panel; blank where a cell was not evaluated."""
    n = len(panels)
    ncols = min(2, n)
    nrows = -(-n // ncols)
    widest = max(len(p[2]) for p in panels)
    fig = Figure(figsize=(max(4.2, 0.55 * widest + 1.8) * ncols, (0.45 * max(len(p[1]) for p in panels) + 1.6) * nrows + 0.4),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    values = np.array([v for p in panels for row in p[3] for v in row], dtype=np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1e-9
    image = None
    for i, (title, train, test, grid) in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        data = np.asarray(grid, dtype=np.float64)
        image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=lo, vmax=hi, aspect="auto", origin="lower")
        for a in range(data.shape[0]):
            for b in range(data.shape[1]):
                if np.isfinite(data[a, b]):
                    light = (data[a, b] - lo) / (hi - lo) > 0.6
                    ax.text(b, a, f"{data[a, b]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if light else "white")
        ax.set_xticks(range(len(test)), [f"{r:g}" for r in test], fontsize=7)
        ax.set_yticks(range(len(train)), [f"{r:g}" for r in train], fontsize=7)
        ax.set_xlabel("test level of the matching condition family (0 = all present)", fontsize=8)
        ax.set_ylabel("training rate", fontsize=8)
        ax.set_title(title, fontsize=9)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label=f"{metric_label(metric)} ({metric})")
    return _png(fig)
