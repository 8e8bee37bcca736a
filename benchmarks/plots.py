"""Charts for benchmark reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

STAGE, STEP, ALONE = (
    "pipeline stage (own thread)",
    "restore sub-step",
    "alone (decode p50/p95, networks median/p90)",
)
COLOURS = {STAGE: "tab:blue", STEP: "tab:orange", ALONE: "tab:green"}


def _rows(report: Mapping[str, Any]) -> list[tuple[str, float, float, str]]:
    """(label, p50, p95, group) per bar: pipeline stages, restore steps, then decoding and networks alone."""
    rows = []
    for name, d in report["stage_ms"].items():
        if d["p50"] is not None:
            rows.append((f"{name} (stage)", d["p50"], d["p95"], STAGE))
    for name, d in report["restore_steps_ms"].items():
        if d["p50"] is not None:
            rows.append((f"restore.{name} (n={d['n']})", d["p50"], d["p95"], STEP))
    alone = report.get("decode_alone_ms")
    if alone and alone["p50"] is not None:
        rows.append(("decode alone", alone["p50"], alone["p95"], ALONE))
    for name, d in report.get("network_only_ms", {}).items():
        rows.append((f"{name} network alone (batch 1)", d["median_ms"], d["p90_ms"], ALONE))
    return rows


def plot_latency(report: Mapping[str, Any], path: Path) -> None:
    """Horizontal bars of p50 (solid) over p95 (light) per stage / sub-step / network; fps in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(report)
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.8))
    y = list(range(len(rows)))[::-1]
    for yi, (_, p50, p95, group) in zip(y, rows, strict=True):
        ax.barh(yi, p95, color=COLOURS[group], alpha=0.35)
        ax.barh(yi, p50, color=COLOURS[group])
        ax.text(p95, yi, f" {p50:.1f} / {p95:.1f}", va="center", fontsize=8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.set_xlabel("ms per frame (solid: p50, light: p95)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    ax.legend(handles, list(COLOURS), fontsize=7, loc="lower right")
    fps = report["fps"]["steady"]
    dev = report["device"]
    title = (
        f"{fps:.1f} fps" if fps else "fps n/a"
    ) + f" | {report['resolution']} | {report['backend']} on {dev['name']}"
    if dev["kind"] == "cpu":
        title += f" ({dev['cpu_cores_usable']} cores)"
    sub = f"models {report['models']['profile']} ({report['models']['crop_size']} px)"
    if report.get("force_restore"):
        sub += ", --force-restore"
    sub += f" | bound by {report['bound_by']['verdict']}"
    ax.set_title(f"{title}\n{sub}", fontsize=9)
    ax.set_xlim(0, max(r[2] for r in rows) * 1.25 if rows else 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
