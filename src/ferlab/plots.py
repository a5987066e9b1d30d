"""Figures for the reports (matplotlib, headless)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ferlab.contract import EMOTIONS  # noqa: E402
from ferlab.fileio import atomic_path  # noqa: E402


def save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def class_distribution(counts: dict[str, dict[str, int]], path) -> None:
    """Bar chart of images per emotion, one panel per split (the paper's Figures 12 and 13)."""
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.6), squeeze=False)
    for ax, (split, per_class) in zip(axes[0], counts.items()):
        values = [per_class[e] for e in EMOTIONS]
        bars = ax.bar(EMOTIONS, values, color="tab:blue")
        ax.bar_label(bars, fontsize=7)
        ax.set_title(f"{split} ({sum(values):,} images)")
        ax.tick_params(axis="x", rotation=45)
    axes[0][0].set_ylabel("images")
    fig.tight_layout()
    save(fig, path)


def face_grid(rows: list[tuple[str, list[np.ndarray]]], path, column_titles: list[str] | None = None) -> None:
    """A grid of 48x48 faces: one row per (title, faces)."""
    n_cols = max(len(faces) for _, faces in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.2 * n_cols, 1.3 * len(rows)), squeeze=False)
    for r, (title, faces) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(faces):
                ax.imshow(np.squeeze(faces[c]), cmap="gray", vmin=0, vmax=255)
            if r == 0 and column_titles and c < len(column_titles):
                ax.set_title(column_titles[c], fontsize=7)
        axes[r][0].text(-4, 24, title, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    save(fig, path)


def learning_curves(history: list[dict], path) -> None:
    """Accuracy and loss, training vs PublicTest (the paper's Figures 14 and 15)."""
    epochs = [int(r["epoch"]) for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.plot(epochs, [float(r[metric]) for r in history], label="train")
        ax.plot(epochs, [float(r[f"val_{metric}"]) for r in history], label="validation (PublicTest)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"model {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save(fig, path)


def _confusion_panel(ax, matrix, title: str, emotions):
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    shown = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(emotions)):
        for j in range(len(emotions)):
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}\n{counts[i, j]}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(emotions)), emotions, rotation=45)
    ax.set_yticks(range(len(emotions)), emotions)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return shown


def confusion(matrix, path, title: str, emotions=EMOTIONS) -> None:
    """Row-normalised confusion matrix with the counts written in each cell."""
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    shown = _confusion_panel(ax, matrix, title, emotions)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    save(fig, path)


def confusion_pair(before, after, path, titles: tuple[str, str], emotions=EMOTIONS, suptitle: str = "") -> None:
    """Two row-normalised confusion matrices side by side (before and after, say)."""
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.2))
    for ax, matrix, title in zip(axes, (before, after), titles):
        shown = _confusion_panel(ax, matrix, title, emotions)
    axes[1].set_ylabel("")
    fig.colorbar(shown, ax=axes, fraction=0.025)
    if suptitle:
        fig.suptitle(suptitle)
    save(fig, path)


def recall_pair(before: dict[str, float], after: dict[str, float], path, labels: tuple[str, str], title: str) -> None:
    """Per-emotion recall, two bars per emotion (before and after)."""
    names = list(before)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 3.8))
    for offset, values, label, colour in ((-0.2, before, labels[0], "tab:grey"), (0.2, after, labels[1], "tab:blue")):
        bars = ax.bar(x + offset, [values[n] for n in names], width=0.4, label=label, color=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, names, rotation=45)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def per_class_f1(per_class: dict, path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    bars = ax.bar(EMOTIONS, [per_class[e]["f1-score"] for e in EMOTIONS], color="tab:green")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    fig.tight_layout()
    save(fig, path)


def labelled_faces(
    faces,
    true: list[str],
    predicted: list[str],
    path,
    per_row: int = 8,
    title: str = "PrivateTest faces: true -> predicted (mistakes in red)",
) -> None:
    """Faces titled `true -> predicted`; mistakes in red, so a person sees what gets confused."""
    rows = int(np.ceil(len(faces) / per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(1.5 * per_row, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, face, t, p in zip(axes.flat, faces, true, predicted):
        ax.imshow(face, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{t}\n-> {p}", fontsize=7, color="black" if t == p.split()[0] else "red")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, path)


def emotion_timeline(times: list[float], probabilities: np.ndarray, dominant: str | None, path, emotions=EMOTIONS) -> None:
    """The mean probability of each emotion over the faces of each analysed video frame."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for k, emotion in enumerate(emotions):
        ax.plot(times, probabilities[:, k] if len(times) else [], label=emotion, linewidth=1.5)
    ax.set(
        xlabel="time (s)",
        ylabel="probability (mean over faces)",
        ylim=(0, 1),
        title=f"dominant emotion: {dominant}" if dominant else "no face found",
    )
    ax.legend(loc="upper right", ncol=len(emotions), fontsize=8)
    save(fig, path)
