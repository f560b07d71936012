"""The page's plots as inline SVG, drawn from the report's numbers in milliseconds (matplotlib takes
seconds, too slow for the end of every `factory run`): sample lengths with the filter-long line,
candidate-pair margins with the delta line, and judge scores of valid, chosen and rejected samples.
The same histograms as report/*.png (factory.commands.report), not the same pixels."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 30, 44
COLORS = ("#4c78c8", "#e8833a", "#3a9a5b", "#c44e52")


def _ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering lo..hi."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.0e}"


def histogram(
    title: str,
    series: list[tuple[str, Any]],
    bins: np.ndarray,
    xlabel: str,
    ylabel: str,
    lines: list[tuple[float, str]] = (),  # type: ignore[assignment]
    stacked: bool = False,
    outline: tuple[str, ...] = (),
) -> str:
    """One SVG histogram: `series` as bars (stacked or overlaid; names in `outline` as step lines),
    vertical `lines` (x, label) in red dashes."""
    arrays = [(name, np.asarray(values, dtype=float)) for name, values in series]  # None -> NaN
    clean = [(name, values[np.isfinite(values)]) for name, values in arrays]
    counts = [np.histogram(values, bins=bins)[0] for _, values in clean]
    top = max((np.sum(counts, axis=0).max() if stacked else max(c.max() for c in counts)) if counts else 0, 1)
    x0, x1 = float(bins[0]), float(bins[-1])
    for x, _ in lines:
        x0, x1 = min(x0, x), max(x1, x)
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1.0) * width

    def sy(y: float) -> float:
        return TOP + height - y / top * height

    out = [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg" font-size="11" '
        'font-family="sans-serif">',
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="600">{html.escape(title)}</text>',
    ]
    for tick in _ticks(0, top, 5):
        y = sy(tick)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7ec"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    for tick in _ticks(x0, x1, 6):
        x = sx(tick)
        out.append(f'<text x="{x:.1f}" y="{TOP + height + 14}" text-anchor="middle">{_label(tick)}</text>')
    base = np.zeros(len(bins) - 1)
    for i, ((name, _), count) in enumerate(zip(clean, counts)):
        color = COLORS[i % len(COLORS)]
        if name in outline:
            points = [f"{sx(bins[0]):.1f},{sy(0):.1f}"]
            for j, c in enumerate(count):
                points += [f"{sx(bins[j]):.1f},{sy(c):.1f}", f"{sx(bins[j + 1]):.1f},{sy(c):.1f}"]
            points.append(f"{sx(bins[-1]):.1f},{sy(0):.1f}")
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{" ".join(points)}"/>')
            continue
        opacity = "0.85" if stacked or len(clean) == 1 else "0.35"
        for j, c in enumerate(count):
            if c:
                low = base[j] if stacked else 0
                x, w = sx(bins[j]), max(sx(bins[j + 1]) - sx(bins[j]) - 0.5, 0.8)
                out.append(
                    f'<rect x="{x:.1f}" y="{sy(low + c):.1f}" width="{w:.1f}" height="{sy(low) - sy(low + c):.1f}" '
                    f'fill="{color}" fill-opacity="{opacity}"/>'
                )
        if stacked:
            base = base + count
    for x, _ in lines:
        out.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{TOP + height}" stroke="#d62728" '
            'stroke-dasharray="5,3"/>'
        )
    legend = [(name, COLORS[i % len(COLORS)], "") for i, (name, _) in enumerate(clean) if len(clean) > 1]
    legend += [(label, "#d62728", "5,3") for _, label in lines]
    for i, (name, color, dash) in enumerate(legend):
        y = TOP + 8 + 14 * i
        x = LEFT + width - 230
        out.append(
            f'<line x1="{x}" x2="{x + 16}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="3" '
            f'stroke-dasharray="{dash}"/>'
        )
        out.append(f'<text x="{x + 20}" y="{y + 4}">{html.escape(name)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT + width}" y1="{TOP + height}" y2="{TOP + height}" stroke="#555"/>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + height}" stroke="#555"/>')
    out.append(f'<text x="{LEFT + width / 2}" y="{HEIGHT - 8}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(
        f'<text transform="translate(13 {TOP + height / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>'
    )
    out.append("</svg>")
    return "".join(out)


def report_plots(report: dict[str, Any], cfg: Any) -> dict[str, str]:
    """The three plots of factory report, as SVG, from its numbers."""
    valid, excluded = report["lengths"]["valid"], report["lengths"]["excluded"]
    limit = cfg.pairs.sft_max_tokens
    everything = np.concatenate([np.asarray(valid, dtype=float), np.asarray(excluded, dtype=float)])
    everything = everything[np.isfinite(everything)] if len(everything) else np.array([0.0, 1.0])
    lengths = histogram(
        "Sample lengths",
        [("valid", valid), ("excluded (any reason)", excluded)],
        np.histogram_bin_edges(everything, bins=40),
        "decoded tokens per sample (reasoning + answer)",
        "samples",
        [(limit, f"{limit} tokens (filter-long)")],
        stacked=True,
    )
    pairs = report["pairs"]
    margins_values = np.asarray(report["margins"], dtype=float)
    margins_values = margins_values[np.isfinite(margins_values)]
    delta = pairs["delta"]
    margins = histogram(
        f"Margins ({report['strategy']}, {pairs['pairing']}, w_len {cfg.pairs.w_len:g}, drop_ratio "
        f"{cfg.pairs.drop_ratio:g})",
        [("candidate pairs", margins_values)],
        np.histogram_bin_edges(margins_values if len(margins_values) else [0.0, 1.0], bins=40),
        "candidate pair margin S_chosen - S_rejected",
        "candidate pairs",
        [] if delta is None else [(delta, f"delta = {delta:.3f} ({pairs['delta_rule']})")],
    )
    scale = cfg.judge.scale_max
    quality = histogram(
        "Quality",
        [(name, np.asarray(report["quality"][name], dtype=float) * scale) for name in ("valid", "chosen", "rejected")],
        np.linspace(0, scale, 21),
        f"judge score (0..{scale:g})",
        "samples",
        outline=("chosen", "rejected"),
    )
    return {"sample lengths": lengths, "margins": margins, "quality": quality}
