"""The report's charts: Bokeh figures for our numbers, Splink's own Vega-Lite charts for the model.

Everything a chart needs travels inside the page, so it reads offline: BokehJS once (only
its core bundle: these figures use no widget, table, WebGL or MathJax), the Vega libraries
Splink ships once, whatever the number of charts. The data of a chart is small by
construction (bins, categories, comparison levels), never one mark per person: the page's
size does not grow with the job's.

Every chart sits in a ``<div class="chart" data-chart="NAME">`` of a fixed size; the browser
test finds them there and checks that each one draws.
"""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["Charts"]

COLOR = "#4a78b5"
PALETTE = ("#4a78b5", "#e1812c", "#3a923a", "#c03d3e", "#9372b2", "#845b53")


def _figure(title: str, *, width: int, height: int, **kw: Any):
    from bokeh.plotting import figure

    fig = figure(title=title, width=width, height=height, toolbar_location=None, tools="", **kw)
    fig.title.text_font_size = "11pt"
    fig.grid.grid_line_alpha = 0.4
    fig.outline_line_color = None
    return fig


def _hover(fig, tooltips: list[tuple[str, str]]) -> None:
    from bokeh.models import HoverTool

    fig.add_tools(HoverTool(tooltips=tooltips))


def _counts_axis(axis) -> None:
    from bokeh.models import NumeralTickFormatter

    axis.formatter = NumeralTickFormatter(format="0,0")


class Charts:
    """Collects a page's charts; ``div(name)`` places one, ``head()`` and ``script()`` run them."""

    def __init__(self) -> None:
        self._bokeh: dict[str, Any] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._vega: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ Bokeh figures
    def bars(self, name: str, labels: list[str], values: list[float], *, title: str, value_label: str,
             seconds: bool = False) -> str:
        """Horizontal bars, one per label (stage durations, rows per reason...)."""
        from bokeh.models import ColumnDataSource, NumeralTickFormatter

        height = 60 + 28 * max(1, len(labels))
        fig = _figure(title, width=720, height=height, y_range=list(reversed(labels)), x_axis_label=value_label)
        src = ColumnDataSource({"label": labels, "value": values})
        fig.hbar(y="label", right="value", height=0.7, source=src, color=COLOR)
        fig.x_range.start = 0
        fig.xaxis.formatter = NumeralTickFormatter(format="0,0.0" if seconds else "0,0")
        _hover(fig, [("", "@label"), (value_label, "@value{0,0.0}" if seconds else "@value{0,0}")])
        return self._add(name, fig)

    def stacked_bars(self, name: str, labels: list[str], stacks: dict[str, list[int]], *, title: str,
                     value_label: str) -> str:
        """Horizontal bars split by category (signatures by NIR status and decision)."""
        from bokeh.models import ColumnDataSource

        keys = list(stacks)
        height = 110 + 28 * max(1, len(labels))
        fig = _figure(title, width=720, height=height, y_range=list(reversed(labels)), x_axis_label=value_label)
        src = ColumnDataSource({"label": labels, **stacks})
        fig.hbar_stack(keys, y="label", height=0.7, source=src, color=list(PALETTE[:len(keys)]),
                       legend_label=keys)
        fig.x_range.start = 0
        fig.legend.orientation = "horizontal"
        fig.add_layout(fig.legend[0], "below")  # beside the bars it would hide the longest
        _counts_axis(fig.xaxis)
        _hover(fig, [("", "@label"), *[(k, f"@{{{k}}}{{0,0}}") for k in keys]])
        return self._add(name, fig)

    def stacked_columns(self, name: str, months: list[str], stacks: dict[str, list[int]], *, title: str,
                        value_label: str) -> str:
        """Vertical bars per month (``YYYY-MM``) on a time axis, split by category (cases per rule)."""
        import datetime as dt

        from bokeh.models import ColumnDataSource

        keys = list(stacks)
        x = [dt.datetime(int(m[:4]), int(m[5:7]), 15) for m in months]
        fig = _figure(title, width=900, height=360, x_axis_type="datetime", y_axis_label=value_label)
        src = ColumnDataSource({"x": x, "month": months, **stacks})
        fig.vbar_stack(keys, x="x", width=25 * 24 * 3600 * 1000, source=src,
                       color=list((PALETTE * (len(keys) // len(PALETTE) + 1))[:len(keys)]), legend_label=keys)
        fig.y_range.start = 0
        fig.legend.orientation = "horizontal"
        fig.legend.label_text_font_size = "8pt"
        fig.add_layout(fig.legend[0], "below")
        _counts_axis(fig.yaxis)
        _hover(fig, [("month", "@month"), *[(k, f"@{{{k}}}{{0,0}}") for k in keys]])
        return self._add(name, fig)

    def histogram(self, name: str, lefts: list[float], counts: list[int], *, bin_width: float, title: str,
                  x_label: str, y_label: str, x_format: str = "0,0") -> str:
        """Bars of ``bin_width`` starting at each left edge, with both axes labelled."""
        from bokeh.models import ColumnDataSource, NumeralTickFormatter

        fig = _figure(title, width=720, height=300, x_axis_label=x_label, y_axis_label=y_label)
        src = ColumnDataSource({"left": lefts, "right": [x + bin_width for x in lefts], "count": counts})
        fig.quad(left="left", right="right", bottom=0, top="count", source=src, color=COLOR,
                 line_color="white")
        fig.y_range.start = 0
        fig.xaxis.formatter = NumeralTickFormatter(format=x_format)
        _counts_axis(fig.yaxis)
        _hover(fig, [("from", f"@left{{{x_format}}}"), ("to", f"@right{{{x_format}}}"), (y_label, "@count{0,0}")])
        return self._add(name, fig)

    def _add(self, name: str, fig) -> str:
        self._bokeh[name] = fig
        self._sizes[name] = (fig.width, fig.height)
        return self.div(name)

    # ------------------------------------------------------------------ Splink's charts
    def vega(self, name: str, spec: dict[str, Any], *, width: int = 1000, height: int = 520) -> str:
        """A Vega-Lite chart (Splink's ``chart_dict``), drawn by the Vega libraries Splink ships."""
        self._vega[name] = spec
        self._sizes[name] = (width, height)
        return self.div(name)

    # ------------------------------------------------------------------ the page
    def div(self, name: str) -> str:
        w, h = self._sizes[name]
        return (f'<div class="chart" data-chart="{html.escape(name)}" id="chart-{html.escape(name)}" '
                f'style="width:{w}px;min-height:{h}px"></div>')

    def head(self) -> str:
        """The libraries, inline: BokehJS core if any Bokeh chart, the Vega trio if any Vega chart."""
        parts = []
        if self._bokeh:
            from bokeh.resources import Resources

            parts.append(Resources(mode="inline", components=["bokeh"]).render_js())
        if self._vega:
            from splink.internals.html_utils import load_chart_libraries

            for src in load_chart_libraries().values():  # vega, vega-lite, vega-embed
                parts.append(f"<script>{src}</script>")
        return "".join(parts)

    def script(self) -> str:
        """What draws every chart into its div."""
        parts = []
        if self._bokeh:
            from bokeh.embed import json_item

            items = {name: json_item(fig, f"chart-{name}") for name, fig in self._bokeh.items()}
            parts.append("<script>(function(){const items=" + _json_for_script(items) + ";"
                         "for (const k in items) { Bokeh.embed.embed_item(items[k]); }})();</script>")
        if self._vega:
            parts.append("<script>(function(){const specs=" + _json_for_script(self._vega) + ";"
                         "for (const k in specs) { vegaEmbed('#chart-' + k, specs[k], {actions: false})"
                         ".catch(function(err){ const d = document.getElementById('chart-' + k);"
                         " d.textContent = 'chart error: ' + (err.message || err); }); }})();</script>")
        return "".join(parts)


def _json_for_script(value: Any) -> str:
    """JSON that cannot close the script element it sits in."""
    return (json.dumps(value, default=float).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))
