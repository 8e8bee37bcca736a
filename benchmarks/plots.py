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


def plot_streams(report: Mapping[str, Any], path: Path) -> None:
    """benchmarks.triton_streams: faces/s (left) and per-stream p50 / p95 latency (right) by stream count,
    one line per transport, the in-process onnxruntime baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["summary"]
    served = [r for r in rows if "stream_p50_ms" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for transport in sorted({r["transport"] for r in served}):
        mine = sorted((r for r in served if r["transport"] == transport), key=lambda r: r["streams"])
        n = [r["streams"] for r in mine]
        left.plot(n, [r["faces_per_s"] for r in mine], marker="o", label=f"Triton, {transport}")
        (line,) = right.plot(n, [r["stream_p50_ms"] for r in mine], marker="o", label=f"{transport} p50")
        right.plot(
            n,
            [r["stream_p95_ms"] for r in mine],
            marker="^",
            ls=":",
            color=line.get_color(),
            label=f"{transport} p95",
        )
    for r in rows:
        if "stream_p50_ms" not in r:
            left.axhline(r["faces_per_s"], ls="--", color="grey", label="onnxruntime in-process, 1 stream")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["streams"] for r in served], [str(r["streams"]) for r in served])
        ax.set_xlabel("concurrent streams (one client process each)")
        ax.legend(fontsize=7)
    left.set_ylim(bottom=0)  # the spread between configurations is mostly this shared machine's noise
    left.set_ylabel("faces/s, all streams")
    right.set_ylabel("ms per request, median stream")
    dev = report["device"]
    fig.suptitle(
        f"generator ({report['model']['crop_size']} px) on one Triton server, dynamic batching | {dev['name']} "
        f"({dev['cpu_cores_usable']} cores, shared with the clients)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
