"""A range test's smoothed loss against lr, each method's suggestion marked (matplotlib).

The picture fastai's ``lr_find`` and Lightning's tuner show: the curve on a log lr axis,
a vertical line where each method suggests, the chosen one drawn first and solid. Drawn
through :func:`service.charts.draw.drawn` (one chart at a time, the same SVG settings),
and imported on the first such chart only, like that module.

Artists a test or a script looks for carry ids: ``loss-curve``, ``suggestion-steepest``,
``suggestion-minimum``, ``suggestion-valley``, ``legend``, ``loss-axes``.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from service.charts.draw import WIDTH_INCHES, ImageFormat, drawn

HEIGHT_INCHES = 4.5
SUGGESTION_STYLES = {
    "steepest": "#d62728",
    "minimum": "#2ca02c",
    "valley": "#9467bd",
}
CURVE_COLOUR = "#1f77b4"
# Above the highest loss before the minimum, this share of the fall is still shown: the
# blow-up after the minimum would otherwise squash the part worth reading into a line.
HEADROOM = 0.25


def render(run_id: str, suggestion: Mapping[str, Any], image_format: ImageFormat) -> bytes:
    """The chart of ``suggestion`` (``GET /lr-suggestion``'s answer, floats decoded)."""
    return drawn(lambda: _figure(run_id, suggestion), image_format)


def _figure(run_id: str, suggestion: Mapping[str, Any]) -> Figure:
    figure = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES))
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.1, right=0.95, top=0.9, bottom=0.12)
    axes = figure.subplots()
    axes.set_gid("loss-axes")
    axes.set_title(f"{run_id}: LR range test")
    axes.set_xscale("log")
    axes.set_xlabel("lr (log scale)")
    axes.set_ylabel("smoothed loss")
    axes.grid(True, which="both", alpha=0.3)
    lrs = [float(lr) for lr, _ in suggestion["curve"]]
    losses = [float(loss) for _, loss in suggestion["curve"]]
    (curve,) = axes.plot(lrs, losses, color=CURVE_COLOUR, label="smoothed loss")
    curve.set_gid("loss-curve")
    limits = _loss_limits(losses)
    if limits is not None:
        axes.set_ylim(*limits)
    chosen = str(suggestion["method"])
    suggestions: Mapping[str, float] = suggestion["suggestions"]
    for method in sorted(suggestions, key=lambda name: name != chosen):
        lr = float(suggestions[method])
        line = axes.axvline(
            lr,
            color=SUGGESTION_STYLES.get(method, "#7f7f7f"),
            linestyle="-" if method == chosen else "--",
            linewidth=1.5 if method == chosen else 1,
            label=f"{method}: {lr:.3g}" + (" (chosen)" if method == chosen else ""),
        )
        line.set_gid(f"suggestion-{method}")
    axes.legend(loc="upper left", fontsize="small", framealpha=0.8).set_gid("legend")
    return figure


def _loss_limits(losses: Sequence[float]) -> tuple[float, float] | None:
    """The loss axis: from the minimum to a little above the highest loss before it."""
    finite = [loss for loss in losses if math.isfinite(loss)]
    if not finite:
        return None
    lowest = min(finite)
    before = finite[: finite.index(lowest) + 1]
    highest = max(before)
    span = highest - lowest or abs(lowest) or 1.0
    return lowest - 0.05 * span, highest + HEADROOM * span
