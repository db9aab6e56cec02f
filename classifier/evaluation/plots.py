"""PNG figures for the staff pages, drawn server-side with matplotlib's Agg canvas.

The object API (Figure + FigureCanvasAgg), not pyplot: no global figure state, so concurrent
requests in threads of one process do not draw into each other's figures. matplotlib is imported
by the first figure, not with the admin: a web process that never draws one does not load it
(what that saves at start: classifier.evaluation.stats).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(**kwargs: Any) -> Figure:
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _empty(ax, text: str = "no data in this window") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def drift_png(drift: dict[str, Any], title: str = "") -> bytes:
    """Three panels per day: PSI of the class mix (and of the confidence histogram) against the
    threshold; mean confidence against the offline mean; the class mix beside the offline mix."""
    days = drift["days"]
    labels = [d["day"].strftime("%m-%d") for d in days]
    x = list(range(len(days)))
    fig = _figure(figsize=(10, 9))
    ax1, ax2, ax3 = fig.subplots(3, 1)
    if title:
        fig.suptitle(title)

    if days:
        ax1.plot(x, [d["psi"] if d["psi"] is not None else float("nan") for d in days], "o-", label="class mix PSI")
        ax1.plot(
            x,
            [d["confidence_psi"] if d["confidence_psi"] is not None else float("nan") for d in days],
            "s--",
            label="confidence PSI",
        )
        ax1.axhline(drift["threshold"], color="tab:red", linestyle=":", label=f"threshold {drift['threshold']:g}")
        flagged = [i for i, d in enumerate(days) if d["drift"]]
        for i in flagged:
            ax1.axvspan(i - 0.4, i + 0.4, color="tab:red", alpha=0.12)
        ax1.set_ylabel("PSI")
        ax1.legend(loc="upper left", fontsize=8)
        ax1.set_xticks(x, labels, rotation=45, fontsize=8)
    else:
        _empty(ax1)
    ax1.set_title("Population stability index per day (against the offline validation set)", fontsize=10)

    if days:
        ax2.plot(x, [d["mean_confidence"] if d["mean_confidence"] is not None else float("nan") for d in days], "o-")
        ref = drift.get("reference_confidence")
        if ref is not None:
            ax2.axhline(ref, color="tab:green", linestyle="--", label=f"offline {ref:.3f}")
            delta = drift["confidence_delta"]
            ax2.axhspan(ref - delta, ref + delta, color="tab:green", alpha=0.08, label=f"±{delta:g}")
            ax2.legend(loc="lower left", fontsize=8)
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("mean top-1 probability")
        ax2.set_xticks(x, labels, rotation=45, fontsize=8)
    else:
        _empty(ax2)
    ax2.set_title("Mean confidence per day", fontsize=10)

    classes = drift["classes"]
    columns = ([("offline", drift["reference"])] if drift.get("reference") else []) + [
        (lab, d["shares"]) for lab, d in zip(labels, days, strict=True)
    ]
    if columns and classes:
        import matplotlib

        cmap = matplotlib.colormaps["tab20"]
        bottoms = [0.0] * len(columns)
        for j, name in enumerate(classes):
            heights = [shares[j] for _, shares in columns]
            ax3.bar(range(len(columns)), heights, bottom=bottoms, label=name, color=cmap(j % 20))
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        ax3.set_xticks(range(len(columns)), [name for name, _ in columns], rotation=45, fontsize=8)
        ax3.set_ylim(0, 1)
        ax3.set_ylabel("share of predictions")
        if len(classes) <= 20:
            ax3.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    else:
        _empty(ax3)
    ax3.set_title("Predicted-class mix per day", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def operations_png(ops: dict[str, Any]) -> bytes:
    """Uploads per day (done / failed / other), queue and inference time percentiles per day, and
    the class mix of the window's predictions."""
    days = ops["days"]
    labels = [d["day"].strftime("%m-%d") for d in days]
    x = list(range(len(days)))
    fig = _figure(figsize=(11, 8))
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)

    if days:
        done = [d["done"] for d in days]
        failed = [d["failed"] for d in days]
        other = [d["uploads"] - d["done"] - d["failed"] for d in days]
        ax1.bar(x, done, label="done", color="tab:green")
        ax1.bar(x, failed, bottom=done, label="failed", color="tab:red")
        ax1.bar(x, other, bottom=[a + b for a, b in zip(done, failed, strict=True)], label="waiting", color="0.7")
        ax1.set_xticks(x, labels, rotation=45, fontsize=8)
        ax1.legend(fontsize=8)
    else:
        _empty(ax1)
    ax1.set_title("Uploads per day", fontsize=10)

    for ax, key, title in ((ax2, "queue", "Time in queue (s)"), (ax3, "inference", "Inference time (s)")):
        if days:
            for q, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
                values = [d[key][q] if d[key][q] is not None else float("nan") for d in days]
                ax.plot(x, values, style, label=q)
            ax.set_xticks(x, labels, rotation=45, fontsize=8)
            ax.legend(fontsize=8)
        else:
            _empty(ax)
        ax.set_title(title + " per day", fontsize=10)

    classes = ops["classes"]
    if classes:
        names = [row["top_label"] for row in classes][:30]
        ax4.barh(range(len(names)), [row["n"] for row in classes][:30], color="tab:blue")
        ax4.set_yticks(range(len(names)), names, fontsize=8)
        ax4.invert_yaxis()
    else:
        _empty(ax4)
    ax4.set_title("Predicted classes", fontsize=10)
    fig.tight_layout()
    return _png(fig)
