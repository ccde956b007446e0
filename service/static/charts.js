// The pages' interactive chart: one or several runs' history, drawn with plotly.js (served by
// the service from the plotly package; no CDN, no build step).
//
// What it draws, per run: the lr of every param group as steps (a plateau cut is a vertical
// drop), momentum when the schedule cycles it, the reported metrics on a second axis (the
// monitored one shown, the others a legend click away), superseded history faded, and the
// run's events as markers named on hover. Long runs come thinned by the service
// (`history?points=`, every bucket's lowest and highest values kept); zooming into a range of
// steps fetches that range again, finer.
"use strict";

(function () {
  const POINTS = 1000;
  const EVENT_PAGES = 10;
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
  const EVENT_SYMBOLS = {
    plateau_reduction: "triangle-down",
    warm_restart: "circle-open",
    lr_set: "diamond",
    rewind: "x",
    range_test_stop: "square",
    reopened: "star",
    schedule_failed: "x-thin",
  };

  // The service writes non-finite floats as "NaN" / "Infinity"; plotly leaves a gap for null.
  function finite(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (error) { /* not JSON */ }
      throw new Error(`GET ${url}: ${response.status} ${detail}`);
    }
    return response.json();
  }

  function runPath(runId) {
    return `/v1/runs/${encodeURIComponent(runId)}`;
  }

  async function fetchRun(runId, range) {
    const query = new URLSearchParams({ points: String(POINTS), include_superseded: "true" });
    if (range) {
      query.set("start", String(Math.max(0, Math.floor(range[0]))));
      query.set("end", String(Math.max(0, Math.ceil(range[1]))));
    }
    const [run, history, events] = await Promise.all([
      getJson(runPath(runId)),
      getJson(`${runPath(runId)}/history?${query}`),
      fetchEvents(runId),
    ]);
    return { runId, run, history, events };
  }

  async function fetchEvents(runId) {
    const events = [];
    let cursor = null;
    for (let page = 0; page < EVENT_PAGES; page += 1) {
      const query = new URLSearchParams({ limit: "1000" });
      if (cursor) query.set("cursor", cursor);
      const answer = await getJson(`${runPath(runId)}/events?${query}`);
      events.push(...answer.items);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    return events;
  }

  // -- traces -------------------------------------------------------------------------------

  function groupCount(rows) {
    return rows.reduce((most, row) => Math.max(most, row.lr.length), 0);
  }

  function lrTraces(rows, prefix, colourOffset) {
    const traces = [];
    for (let group = 0; group < groupCount(rows); group += 1) {
      traces.push({
        type: "scatter", mode: "lines", name: `${prefix}lr group ${group}`,
        x: rows.map((row) => row.step), y: rows.map((row) => finite(row.lr[group])),
        line: { shape: "hv", width: 2, color: COLOURS[(colourOffset + group) % COLOURS.length] },
        hovertemplate: "step %{x}<br>lr %{y:.6g}<extra>%{fullData.name}</extra>",
        meta: { series: "lr", group },
      });
    }
    return traces;
  }

  function supersededTraces(rows, prefix, colourOffset) {
    if (!rows.length) return [];
    const traces = [];
    for (let group = 0; group < groupCount(rows); group += 1) {
      traces.push({
        type: "scatter", mode: "markers", name: `${prefix}superseded lr group ${group}`,
        x: rows.map((row) => row.step), y: rows.map((row) => finite(row.lr[group])),
        opacity: 0.4, marker: { size: 6, color: COLOURS[(colourOffset + group) % COLOURS.length] },
        hovertemplate: "step %{x}<br>lr %{y:.6g} (superseded by a rewind)<extra>%{fullData.name}</extra>",
        meta: { series: "superseded", group },
      });
    }
    return traces;
  }

  function momentumTraces(rows, prefix, colourOffset) {
    const withMomentum = rows.filter((row) => Array.isArray(row.momentum));
    if (!withMomentum.length) return [];
    const traces = [];
    for (let group = 0; group < withMomentum[0].momentum.length; group += 1) {
      traces.push({
        type: "scatter", mode: "lines", name: `${prefix}momentum group ${group}`, yaxis: "y3",
        x: withMomentum.map((row) => row.step), y: withMomentum.map((row) => finite(row.momentum[group])),
        line: { shape: "hv", dash: "dash", width: 1.5, color: COLOURS[(colourOffset + group) % COLOURS.length] },
        hovertemplate: "step %{x}<br>momentum %{y:.6g}<extra>%{fullData.name}</extra>",
        meta: { series: "momentum", group },
      });
    }
    return traces;
  }

  function metricTraces(rows, prefix, monitor) {
    const names = [...new Set(rows.flatMap((row) => Object.keys(row.metrics || {})))].sort();
    return names.map((name) => {
      const measured = rows.filter((row) => row.metrics && name in row.metrics);
      return {
        type: "scatter", mode: "lines+markers", name: `${prefix}${name}`, yaxis: "y2",
        x: measured.map((row) => row.step), y: measured.map((row) => finite(row.metrics[name])),
        marker: { size: 5 }, line: { width: 1, color: "#555" },
        visible: name === monitor || names.length === 1 ? true : "legendonly",
        hovertemplate: `step %{x}<br>${name} %{y:.6g}<extra>%{fullData.name}</extra>`,
        meta: { series: "metric", name },
      };
    });
  }

  function lrAtStep(rows, step) {
    let found = null;
    for (const row of rows) {
      if (row.step > step) break;
      found = row;
    }
    return found ? finite(found.lr[0]) : null;
  }

  function eventTrace(events, rows, prefix, range) {
    const shown = events.filter((event) => !range || (event.step >= range[0] && event.step <= range[1]));
    if (!shown.length) return [];
    return [{
      type: "scatter", mode: "markers", name: `${prefix}events`,
      x: shown.map((event) => event.step),
      y: shown.map((event) => lrAtStep(rows, event.step)),
      text: shown.map((event) => `${event.kind} at step ${event.step}<br>${JSON.stringify(event.detail)}`),
      hovertemplate: "%{text}<extra></extra>",
      marker: {
        size: 11, color: "#000", line: { width: 1, color: "#fff" },
        symbol: shown.map((event) => EVENT_SYMBOLS[event.kind] || "circle"),
      },
      meta: { series: "events", kinds: shown.map((event) => event.kind) },
    }];
  }

  function eventLines(events, range) {
    return events
      .filter((event) => !range || (event.step >= range[0] && event.step <= range[1]))
      .map((event) => ({
        type: "line", xref: "x", yref: "paper", x0: event.step, x1: event.step, y0: 0, y1: 1,
        line: { color: "#999", width: 1, dash: "dot" }, layer: "below",
      }));
  }

  function runTraces(loaded, index, several) {
    const prefix = several ? `${loaded.runId} · ` : "";
    const rows = loaded.history.items;
    const current = rows.filter((row) => !row.superseded);
    const superseded = rows.filter((row) => row.superseded);
    const colourOffset = several ? index : 0;
    const monitor = loaded.run.scheduler && loaded.run.scheduler.monitor;
    return [
      ...lrTraces(current, prefix, colourOffset),
      ...supersededTraces(superseded, prefix, colourOffset),
      ...momentumTraces(current, prefix, colourOffset),
      ...metricTraces(current, prefix, monitor),
      ...eventTrace(loaded.events, current, prefix, loaded.range),
    ];
  }

  function layoutFor(traces, scale, range, shapes) {
    const hasMomentum = traces.some((trace) => trace.yaxis === "y3");
    const metrics = [...new Set(traces.filter((trace) => trace.yaxis === "y2").map((trace) => trace.meta.name))];
    const hasMetric = metrics.length > 0;
    return {
      margin: { l: 70, r: hasMomentum ? 110 : 60, t: 20, b: 50 },
      hovermode: "closest",
      legend: { orientation: "h", y: -0.18 },
      xaxis: {
        title: { text: "step" }, domain: [0, hasMomentum ? 0.9 : 1],
        ...(range ? { range, autorange: false } : { autorange: true }),
      },
      yaxis: { title: { text: "lr" }, type: scale, exponentformat: "e" },
      yaxis2: { title: { text: metrics.length === 1 ? metrics[0] : "metric" }, overlaying: "y", side: "right", showgrid: false, visible: hasMetric },
      yaxis3: {
        title: { text: "momentum" }, overlaying: "y", side: "right", anchor: "free", position: 1,
        showgrid: false, visible: hasMomentum,
      },
      shapes,
    };
  }

  // -- the chart element ----------------------------------------------------------------------

  function setUp(element) {
    const panel = element.closest(".chart-panel");
    const status = panel.querySelector(".chart-status");
    const scaleInputs = panel.querySelectorAll("input[name=scale]");
    const scale = () => [...scaleInputs].find((input) => input.checked).value;
    const runIds = element.dataset.runs ? JSON.parse(element.dataset.runs) : [];
    let loads = 0;
    let drawnRange = null;

    function finished(traces, note) {
      loads += 1;
      element.dataset.loaded = String(loads);
      element.dataset.points = String(traces.reduce((sum, trace) => sum + trace.x.length, 0));
      status.textContent = note;
    }

    async function drawRuns(range) {
      status.textContent = "loading…";
      try {
        const loaded = await Promise.all(runIds.map((runId) => fetchRun(runId, range)));
        loaded.forEach((entry) => { entry.range = range; });
        const several = loaded.length > 1;
        const traces = loaded.flatMap((entry, index) => runTraces(entry, index, several));
        const shapes = several ? [] : eventLines(loaded[0].events, range);
        drawnRange = range;
        await Plotly.react(element, traces, layoutFor(traces, scale(), range, shapes), { responsive: true });
        const rows = loaded.reduce((sum, entry) => sum + entry.history.items.length, 0);
        const thinned = loaded.some((entry) => entry.history.thinned && entry.history.thinned.bucket_steps > 1);
        finished(traces, `${rows} rows${range ? ` of steps ${Math.floor(range[0])}–${Math.ceil(range[1])}` : ""}` +
          `${thinned ? " (thinned: every bucket's lowest and highest values kept)" : ""}`);
      } catch (error) {
        status.textContent = String(error.message || error);
        element.dataset.error = status.textContent;
      }
    }

    async function drawPreview(source) {
      const values = JSON.parse(document.getElementById(source).textContent);
      const rows = values.lr.map((lr, step) => ({
        step, lr, momentum: values.momentum ? values.momentum[step] : undefined, metrics: {},
      }));
      const traces = [...lrTraces(rows, "", 0), ...momentumTraces(rows, "", 0)];
      await Plotly.react(element, traces, layoutFor(traces, scale(), null, []), { responsive: true });
      finished(traces, `${rows.length} steps, nothing stored`);
    }

    const draw = element.dataset.source ? () => drawPreview(element.dataset.source) : drawRuns;
    draw(null);

    scaleInputs.forEach((input) => input.addEventListener("change", () => {
      Plotly.relayout(element, { "yaxis.type": scale() });
    }));
    panel.querySelector(".reset-zoom").addEventListener("click", () => draw(null));
    if (!element.dataset.source) {
      element.on("plotly_relayout", (change) => {
        if (change["xaxis.autorange"]) {
          if (drawnRange) drawRuns(null);
          return;
        }
        const start = change["xaxis.range[0]"];
        const end = change["xaxis.range[1]"];
        if (start !== undefined && end !== undefined) drawRuns([Math.max(0, start), Math.max(0, end)]);
      });
    }
  }

  // -- a range test's loss against lr ------------------------------------------------------
  // The curve of GET /lr-suggestion on a log lr axis, each method's suggestion a vertical line
  // named on hover (the method the answer chose drawn solid).

  const SUGGESTION_COLOURS = { steepest: "#d62728", minimum: "#2ca02c", valley: "#9467bd" };

  async function drawSuggestion(element) {
    const status = element.closest(".suggestion-panel").querySelector(".suggestion-status");
    const runId = JSON.parse(element.dataset.run);
    const method = element.dataset.method || "steepest";
    try {
      const query = new URLSearchParams({ method });
      const answer = await getJson(`${runPath(runId)}/lr-suggestion?${query}`);
      const losses = answer.curve.map((point) => finite(point[1]));
      const shown = losses.filter((loss) => loss !== null);
      const low = Math.min(...shown);
      const high = Math.max(...shown.slice(0, shown.indexOf(low) + 1));
      const span = high - low || Math.abs(low) || 1;
      const bottom = low - 0.05 * span;
      const top = high + 0.25 * span;
      const traces = [{
        x: answer.curve.map((point) => finite(point[0])), y: losses, mode: "lines",
        name: "smoothed loss", line: { color: "#1f77b4" },
        hovertemplate: "lr %{x:.3g}<br>loss %{y:.4g}<extra></extra>",
      }];
      Object.entries(answer.suggestions).forEach(([name, lr]) => {
        traces.push({
          x: [lr, lr], y: [bottom, top], mode: "lines", name: `${name}: ${lr.toPrecision(3)}`,
          line: { color: SUGGESTION_COLOURS[name] || "#7f7f7f", dash: name === answer.method ? "solid" : "dash" },
          hovertemplate: `${name}<br>lr %{x:.3g}<extra></extra>`,
        });
      });
      await Plotly.react(element, traces, {
        margin: { t: 20, r: 20, b: 50, l: 60 }, height: 360,
        xaxis: { type: "log", title: { text: "lr (log scale)" } },
        yaxis: { title: { text: "smoothed loss" }, range: [bottom, top] },
      }, { responsive: true });
      element.dataset.loaded = "1";
      status.textContent = `${answer.curve.length} steps; ${answer.method}: ${answer.lr.toPrecision(3)}`;
    } catch (error) {
      status.textContent = String(error.message || error);
      element.dataset.error = status.textContent;
    }
  }

  function start() {
    document.querySelectorAll(".suggestion-chart").forEach(drawSuggestion);
    document.querySelectorAll(".chart").forEach((element) => {
      // plotly's own handler registration exists only once a plot is made: make an empty one.
      Plotly.newPlot(element, [], {}, { responsive: true }).then(() => setUp(element));
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
