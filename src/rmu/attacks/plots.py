"""Figures of the attacks' JSON results (matplotlib, Agg backend), one ``plot_*`` per attack."""

from __future__ import annotations

from matplotlib.figure import Figure

from rmu.plots import plt, save_figure

__all__ = ["save_figure", "plot_gcg", "plot_relearn", "plot_ablate", "plot_probe", "plot_keywords"]


def _bars(ax, groups: list[str], series: dict[str, list[float]], chance: float | None = None):
    width = 0.8 / max(len(series), 1)
    for index, (label, values) in enumerate(series.items()):
        positions = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(positions, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)


def plot_gcg(data: dict) -> Figure:
    """Mean loss against the step (left) and accuracy before / with the suffix (right)."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, entry in data["models"].items():
        axes[0].plot(range(len(entry["mean_loss_curve"])), entry["mean_loss_curve"], marker=".", label=name)
    axes[0].set_xlabel("GCG step")
    target = "answer letter" if data["settings"].get("scoring", "letter") == "letter" else "answer"
    axes[0].set_ylabel(f"mean loss of the {target} (nats)")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    names = list(data["models"])
    bars = {"no suffix": [data["models"][n]["accuracy_before"] for n in names],
            "with its GCG suffix": [data["models"][n]["accuracy_after"] for n in names]}
    if all(data["models"][n].get("accuracy_with_other_suffix") is not None for n in names):
        bars["with another question's suffix"] = [data["models"][n]["accuracy_with_other_suffix"] for n in names]
    _bars(axes[1], names, bars, 0.25)
    b = data["budget"]
    figure.suptitle(f"GCG: {data['settings']['count']} questions, {b['steps']} steps x "
                    f"{b['candidates_per_step']} candidates, suffix {data['settings']['n_tokens']} tokens")
    figure.tight_layout()
    return figure


def plot_relearn(data: dict) -> Figure:
    figure, ax = plt.subplots(figsize=(7, 4))
    styles = {"forget": "-", "unrelated": "--"}
    for index, (name, entry) in enumerate(data["models"].items()):
        for corpus, curve in entry.items():
            points = curve["points"]
            ax.plot([p["step"] for p in points], [p["accuracy"] for p in points], styles.get(corpus, ":"),
                    marker="o", color=f"C{index}", label=f"{name}, trained on {corpus} text")
    s = data["settings"]
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("forget accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    params = s["params"] if isinstance(s["params"], str) else ", ".join(s["params"])
    ax.set_title(f"Relearning: {s['k']} documents, lr {s['lr']}, params {params}")
    return figure


def plot_ablate(data: dict) -> Figure:
    names = list(data["models"])
    kinds = sorted({k for e in data["models"].values() for k in e["directions"]})
    series = {"no ablation": [data["models"][n]["none"]["forget"] for n in names]}
    for kind in kinds:
        series[f"{kind} projected out"] = [data["models"][n]["directions"].get(kind, {}).get("forget", float("nan"))
                                           for n in names]
    figure, ax = plt.subplots(figsize=(7, 4))
    groups = list(names)
    if "base" in data:
        groups = ["base"] + groups
        series = {k: ([data["base"]["forget"]] if i == 0 else [float("nan")]) + v
                  for i, (k, v) in enumerate(series.items())}
    _bars(ax, groups, series, 0.25)
    ax.set_title(f"Forget accuracy with the steering direction removed (layer {data['settings']['project_layers']})")
    return figure


def plot_probe(data: dict) -> Figure:
    figure, ax = plt.subplots(figsize=(7, 4))
    for name, entry in data["models"].items():
        ax.plot(entry["layers"], entry["accuracy"], marker="o", label=name)
    ax.axhline(data["majority_class"], color="grey", linestyle="--", label="majority class")
    ax.set_xlabel("layer (output of decoder layer)")
    ax.set_ylabel("held-out probe accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Linear probe for the answer index ({data['settings']['count']} questions, "
                 f"{data['settings']['splits']} splits)")
    return figure


def plot_keywords(data: dict) -> Figure:
    names = list(data["models"])
    figure, ax = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    _bars(ax, names, {"retain": [data["models"][n]["retain"] for n in names],
                      "retain + forget keyword": [data["models"][n]["retain_with_keyword"] for n in names]}, 0.25)
    variants = len(data["settings"].get("templates", [None])) * len(data["settings"].get("positions", [None]))
    ax.set_title("Retain questions with a forget keyword inserted"
                 + (f" (mean of {variants} templates x positions)" if variants > 1 else ""))
    return figure
