"""A :class:`~service.charts.data.Chart` drawn by matplotlib as SVG or PNG.

Only the object-oriented API: a ``Figure`` of its own per chart on the Agg canvas,
never pyplot, whose global current-figure state is not for a server's threads.
matplotlib still shares caches between figures (fonts, text layout) and says it is
not thread-safe, so one chart is drawn at a time per process (``_DRAWING``): a chart
costs tens of milliseconds, and the routes that draw run in the thread pool.

Imported on the first chart only (``service.routes.charts``): importing matplotlib
takes about a second, which neither the service's start nor ``lrkeeper``'s should pay.

The SVG is made to be read by programs too: every artist a test or a script looks
for has an ``id`` (``lr-group-0``, ``momentum-group-0``, ``metric-loss``,
``superseded-0-group-0``, ``event-plateau_reduction-120``, ``legend``, ``lr-axes``,
``metric-axes``, ``momentum-axes``), text stays text, and the same chart is the same
bytes (no date, ids salted with a constant).
"""

import io
import math
import threading
from collections.abc import Callable
from typing import Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from service.charts.data import Chart, Scale, Series

ImageFormat = Literal["svg", "png"]

# Set once, when this module is first imported: the service is its process's only
# matplotlib user, and these are read at draw time, with no per-figure equivalent.
matplotlib.rcParams.update(
    {
        "svg.fonttype": "none",  # <text> elements, not glyph paths: labels can be found
        "svg.hashsalt": "lrkeeper",  # ids from a constant salt: the same chart, the same bytes
        # Every point we hand over is drawn: the data are thinned already (data.py), and a
        # path simplified by the renderer would drop the corners of steps-post lines.
        "path.simplify": False,
    }
)

_DRAWING = threading.Lock()
WIDTH_INCHES, HEIGHT_INCHES, MOMENTUM_INCHES, PNG_DPI = 9.0, 5.0, 2.0, 100
GROUP_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
METRIC_COLOURS = ("#555555", "#bcbd22", "#e377c2", "#7f7f7f")
EVENT_STYLES = {
    "plateau_reduction": ("#d62728", "--"),
    "warm_restart": ("#2ca02c", "--"),
    "lr_set": ("#9467bd", "-."),
    "rewind": ("#ff7f0e", ":"),
    "range_test_stop": ("#000000", "-"),
}
OTHER_EVENT_STYLE = ("#7f7f7f", ":")
# With more events than this their kinds are named in the legend only, not beside each line.
EVENTS_LABELLED = 12
SUPERSEDED_ALPHA = 0.35


def render(chart: Chart, image_format: ImageFormat, scale: Scale) -> bytes:
    """The chart as an SVG document or a PNG image."""
    return drawn(lambda: _figure(chart, scale), image_format)


def drawn(build: Callable[[], Figure], image_format: ImageFormat) -> bytes:
    """The figure ``build`` makes, saved as SVG or PNG; built and saved under the one lock
    (module docstring), so every chart module draws through here."""
    with _DRAWING:
        figure = build()
        output = io.BytesIO()
        if image_format == "svg":
            figure.savefig(output, format="svg", metadata={"Date": None})
        else:
            figure.savefig(output, format="png", dpi=PNG_DPI)
    return output.getvalue()


def _figure(chart: Chart, scale: Scale) -> Figure:
    height = HEIGHT_INCHES + (MOMENTUM_INCHES if chart.momentum is not None else 0.0)
    figure = Figure(figsize=(WIDTH_INCHES, height))
    FigureCanvasAgg(figure)
    # Fixed margins (room for both y axes' labels): a constrained layout measured half of a
    # small chart's time, about 0.2 s, for margins that hardly move.
    figure.subplots_adjust(
        left=0.1, right=0.9, top=1 - 0.4 / height, bottom=0.5 / height, hspace=0.12
    )
    if chart.momentum is not None:
        lr_axes, momentum_axes = figure.subplots(
            2, 1, sharex=True, height_ratios=[HEIGHT_INCHES, MOMENTUM_INCHES]
        )
        _draw_momentum(momentum_axes, chart.momentum)
    else:
        lr_axes = figure.subplots()
    lr_axes.set_gid("lr-axes")
    lr_axes.set_title(chart.title)
    if chart.momentum is None:  # else the momentum panel below says it
        lr_axes.set_xlabel("step")
    lr_axes.grid(True, alpha=0.3)
    for group, series in enumerate(chart.lr):
        _steps_line(lr_axes, series, f"lr-group-{group}", f"lr group {group}", _colour(group))
    for stretch_index, stretch in enumerate(chart.superseded):
        for group, series in enumerate(stretch):
            line = _steps_line(
                lr_axes,
                series,
                f"superseded-{stretch_index}-group-{group}",
                "superseded history" if stretch_index == 0 and group == 0 else "_nolegend_",
                _colour(group),
            )
            line.set_alpha(SUPERSEDED_ALPHA)
            line.set_linestyle("--")
    lr_axes.set_ylabel(_apply_scale(lr_axes, chart, scale))
    handles = [*lr_axes.get_lines()]
    if chart.metrics:
        handles += _draw_metrics(lr_axes, chart.metrics)
    handles += _draw_events(lr_axes, chart)
    labelled = [handle for handle in handles if not handle.get_label().startswith("_")]
    legend = lr_axes.legend(handles=labelled, loc="upper right", fontsize="small", framealpha=0.8)
    legend.set_gid("legend")
    return figure


def _steps_line(axes: Axes, series: Series, gid: str, label: str, colour: str) -> Line2D:
    """The values held from each step to the next: a reduction is a vertical drop."""
    (line,) = axes.plot(
        series.steps,
        series.values,
        drawstyle="steps-post",
        color=colour,
        label=label,
        # One point (a run at step 0) is a marker, not an empty frame.
        marker="o" if len(series.steps) == 1 else None,
    )
    line.set_gid(gid)
    return line


def _apply_scale(axes: Axes, chart: Chart, scale: Scale) -> str:
    """Log scale when asked and there is a positive lr to draw on it; the axis label."""
    if scale == "linear":
        return "lr"
    drawn = [value for series in chart.lr for value in series.values]
    if not any(value > 0 for value in drawn if math.isfinite(value)):
        return "lr (linear: no positive lr to draw on a log scale)"
    axes.set_yscale("log", nonpositive="mask")
    return "lr (log scale)"


def _draw_momentum(axes: Axes, momentum: list[Series]) -> None:
    axes.set_gid("momentum-axes")
    axes.set_ylabel("momentum")
    axes.set_xlabel("step")
    axes.grid(True, alpha=0.3)
    for group, series in enumerate(momentum):
        _steps_line(
            axes, series, f"momentum-group-{group}", f"momentum group {group}", _colour(group)
        )
    axes.legend(loc="upper right", fontsize="small").set_gid("momentum-legend")


def _draw_metrics(lr_axes: Axes, metrics: dict[str, Series]) -> list[Line2D]:
    """Metrics on a second y axis, sharing the steps: their scale is not the lr's."""
    metric_axes = lr_axes.twinx()
    metric_axes.set_gid("metric-axes")
    metric_axes.set_ylabel(", ".join(metrics))
    lines = []
    for index, (name, series) in enumerate(metrics.items()):
        (line,) = metric_axes.plot(
            series.steps,
            series.values,
            color=METRIC_COLOURS[index % len(METRIC_COLOURS)],
            linestyle=":",
            marker="." if len(series.steps) <= 200 else None,
            label=name,
        )
        line.set_gid(f"metric-{name}")
        lines.append(line)
    return lines


def _draw_events(axes: Axes, chart: Chart) -> list[Line2D]:
    """A vertical line at each event's step, its kind in the legend (and beside it when few)."""
    lines = []
    seen_kinds: set[str] = set()
    seen_ids: set[str] = set()
    for event in chart.events:
        colour, style = EVENT_STYLES.get(event.kind, OTHER_EVENT_STYLE)
        line = axes.axvline(
            event.step,
            color=colour,
            linestyle=style,
            linewidth=1,
            label="_nolegend_" if event.kind in seen_kinds else event.kind,
        )
        seen_kinds.add(event.kind)
        gid = f"event-{event.kind}-{event.step}"
        suffix = 1
        while gid in seen_ids:
            gid = f"event-{event.kind}-{event.step}-{suffix}"
            suffix += 1
        seen_ids.add(gid)
        line.set_gid(gid)
        lines.append(line)
        if len(chart.events) <= EVENTS_LABELLED:
            axes.annotate(
                event.kind,
                xy=(event.step, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize="x-small",
                color=colour,
                ha="right",
                va="top",
            )
    return lines


def _colour(group: int) -> str:
    return GROUP_COLOURS[group % len(GROUP_COLOURS)]
