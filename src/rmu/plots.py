"""Figures of sweeps and analyses (matplotlib, Agg backend: no display needed).

Each ``plot_*`` function takes the data a sweep or analysis saved as JSON and returns a Figure, so
the numbers drawn are exactly the saved ones (tests read them back from the figure's lines).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

METHOD_LABELS = {"rmu": "RMU", "adaptive": "Adaptive RMU"}


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path


def _errors(points: list[dict], which: str) -> list[float] | None:
    """Error bars: the std over seeds of a sweep run with --seeds (None: one seed, no bars)."""
    stds = [p.get(f"{which}_std") for p in points]
    return None if all(s is None for s in stds) else [s or 0.0 for s in stds]


def plot_layer_sweep(data: dict) -> Figure:
    """Forget and retain accuracy against the steered layer, one line per method."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    base = data.get("baseline") or {}
    for ax, which, title in ((axes[0], "forget_accuracy", "forget accuracy"),
                             (axes[1], "retain_accuracy", "retain accuracy")):
        for method in data["settings"]["methods"]:
            points = sorted((p for p in data["points"] if p["method"] == method and p.get(which) is not None),
                            key=lambda p: p["layer"])
            ax.errorbar([p["layer"] for p in points], [p[which] for p in points], yerr=_errors(points, which),
                        marker="o", capsize=3, label=METHOD_LABELS.get(method, method))
        if base.get(which) is not None:
            ax.axhline(base[which], color="grey", linestyle="--", label="base model")
        ax.set_xlabel("steered layer l (updated l-2..l)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend()
    figure.suptitle("Layer sweep")
    return figure


def plot_coeff_sweep(data: dict) -> Figure:
    """Accuracy and cos(h_l, u) against the coefficient (c or beta)."""
    name = "c" if data["settings"]["coefficient"] == "steering_coeff" else "beta"
    points = sorted((p for p in data["points"] if p.get("forget_accuracy") is not None), key=lambda p: p["value"])
    xs = [p["value"] for p in points]
    base = data.get("baseline") or {}
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].errorbar(xs, [p["forget_accuracy"] for p in points], yerr=_errors(points, "forget_accuracy"), marker="o",
                     capsize=3, label="forget")
    axes[0].errorbar(xs, [p["retain_accuracy"] for p in points], yerr=_errors(points, "retain_accuracy"), marker="s",
                     capsize=3, label="retain")
    for which, color in (("forget_accuracy", "C0"), ("retain_accuracy", "C1")):
        if base.get(which) is not None:
            axes[0].axhline(base[which], color=color, linestyle="--", alpha=0.6)
    axes[0].set_ylabel("accuracy (dashed: base model)")
    axes[0].legend()
    axes[1].errorbar(xs, [p["cosine"] for p in points], yerr=_errors(points, "cosine"), marker="o", color="C2",
                     capsize=3, label="unlearned")
    if base.get("cosine") is not None:
        axes[1].axhline(base["cosine"], color="grey", linestyle="--", label="base model")
    axes[1].set_ylabel("mean cos(h_l, u) over forget tokens")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    method = METHOD_LABELS.get(data["settings"]["method"], data["settings"]["method"])
    figure.suptitle(f"{method} at layer {data['settings']['layer']}: sweep of {name}")
    return figure


def plot_confidence(data: dict) -> Figure:
    """Histograms of the max logit per generated token, one per model, each with its fitted normal."""
    figure, ax = plt.subplots(figsize=(7, 4))
    models = data["models"]
    everything = [v for m in models.values() for v in m["max_logits"]]
    low, high = min(everything), max(everything)
    if high == low:
        low, high = low - 0.5, high + 0.5
    bins = [low + (high - low) * i / 40 for i in range(41)]
    for index, (name, entry) in enumerate(models.items()):
        color = f"C{index}"
        ax.hist(entry["max_logits"], bins=bins, density=True, alpha=0.45, color=color,
                label=f"{name}: mean {entry['mean']:.2f}, var {entry['variance']:.2f}")
        std = math.sqrt(entry["variance"]) if entry["variance"] > 0 else 0.0
        if std > 0:
            xs = [low + (high - low) * i / 200 for i in range(201)]
            ys = [math.exp(-0.5 * ((x - entry["mean"]) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for x in xs]
            ax.plot(xs, ys, color=color)
    ax.set_xlabel("max logit of each generated token")
    ax.set_ylabel("density")
    ax.set_title(f"MaxLogit on forget questions ({data['settings']['tokens']} greedy tokens each)")
    ax.legend()
    return figure


def plot_norms(data: dict) -> Figure:
    """One panel per run: layer-l forget norm against the step, coefficient as a line."""
    runs = data["runs"]
    columns = min(3, len(runs))
    rows = math.ceil(len(runs) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.3 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        for index, (topic, series) in enumerate(run["topics"].items()):
            color = f"C{index}"
            ax.plot(series["steps"], series["forget_norm"], color=color, label=f"{topic}: ||h_l||")
            ax.plot(series["steps"], series["coeff"], color=color, linestyle="--", label=f"{topic}: coefficient")
        ax.set_title(run["label"])
        ax.set_xlabel("step")
        ax.set_ylabel("mean token norm")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    figure.suptitle("Forget-representation norm vs. coefficient during unlearning")
    figure.tight_layout()
    return figure


def plot_noise(data: dict) -> Figure:
    """Noise sensitivity of the layers above k against k, one line per model (log scale)."""
    figure, ax = plt.subplots(figsize=(7, 4))
    for name, entry in data["models"].items():
        layers = [r["layer"] for r in entry["layers"]]
        values = [r["sensitivity"] for r in entry["layers"]]
        ax.plot(layers, values, marker="o", label=name)
    if all(r["sensitivity"] > 0 for e in data["models"].values() for r in e["layers"]):
        ax.set_yscale("log")
    settings = data["settings"]
    ax.set_xlabel("layer k where the noise is injected")
    ax.set_ylabel("||g(h+xi)-g(h)||^2 / ||g(h)||^2")
    ax.set_title(f"Noise sensitivity (xi: {settings['scale_mode']} scale {settings['scale']})")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def plot_token_norms(data: dict) -> Figure:
    """Median token norm and the first real token's norm against the layer, per model (log scale)."""
    figure, ax = plt.subplots(figsize=(7, 4))
    for index, (name, entry) in enumerate(data["models"].items()):
        layers = [r["layer"] for r in entry["layers"]]
        color = f"C{index}"
        ax.plot(layers, [r["first_token"] for r in entry["layers"]], marker="o", color=color,
                label=f"{name}: first real token")
        ax.plot(layers, [r["median"] for r in entry["layers"]], marker=".", linestyle="--", color=color,
                label=f"{name}: median token")
    ax.set_yscale("log")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("hidden-state norm")
    ax.set_title("Token norms: the attention sink against the rest")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure
