// chart.js: a small SVG line chart for live series (the dashboard's message
// rates and queue depths). No dependency: a time axis, a value axis scaled to
// the data, one polyline per series, and a legend with the latest values.
//
//   const c = new LineChart(element, [{name: "publish", color: "#2a7"}, ...], {unit: "/s"});
//   c.push(timeMs, [v0, v1, ...]);   // one point per series; draws
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

class LineChart {
  constructor(element, series, options = {}) {
    this.element = element;
    this.series = series;
    this.unit = options.unit || "";
    // Points older than the window scroll off: five minutes at a 2 s poll is 150 points a series.
    this.windowMs = options.windowMs || 5 * 60 * 1000;
    // A fresh page shows at least this much time, and widens as points accumulate.
    this.minWindowMs = Math.min(this.windowMs, 60 * 1000);
    this.height = options.height || 180;
    this.points = [];  // [timeMs, [values...]]
    this.element.classList.add("chart");
  }

  push(t, values) {
    this.points.push([t, values]);
    while (this.points.length > 2 && this.points[0][0] < t - this.windowMs) this.points.shift();
    this.draw();
  }

  draw() {
    const width = Math.max(this.element.clientWidth, 300);
    const height = this.height;
    const pad = {left: 48, right: 12, top: 10, bottom: 22};
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);

    const now = this.points.length ? this.points[this.points.length - 1][0] : Date.now();
    const first = this.points.length ? this.points[0][0] : now;
    const span = Math.min(this.windowMs, Math.max(this.minWindowMs, now - first));
    const t0 = now - span;
    let max = 0;
    for (const [, vs] of this.points) for (const v of vs) if (Number.isFinite(v)) max = Math.max(max, v);
    max = niceCeil(max);
    const x = (t) => pad.left + ((t - t0) / span) * (width - pad.left - pad.right);
    const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);

    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      line(svg, pad.left, y(v), width - pad.right, y(v), "grid");
      text(svg, pad.left - 6, y(v) + 4, formatNumber(v), "axis end");
    }
    const step = span <= 2 * 60000 ? 15000 : 60000;  // a label every 15 s, or every minute
    for (let k = 0; k * step <= span; k++) {
      const ago = k * step;
      const label = k === 0 ? "now" : step < 60000 ? `-${ago / 1000}s` : `-${ago / 60000}m`;
      text(svg, x(now - ago), height - 6, label, "axis middle");
    }
    this.series.forEach((s, i) => {
      const pts = this.points.filter(([t]) => t >= t0).map(([t, vs]) => `${x(t).toFixed(1)},${y(vs[i] || 0).toFixed(1)}`);
      if (pts.length < 2) return;
      const pl = document.createElementNS(SVG_NS, "polyline");
      pl.setAttribute("points", pts.join(" "));
      pl.setAttribute("fill", "none");
      pl.setAttribute("stroke", s.color);
      pl.setAttribute("stroke-width", "2");
      svg.appendChild(pl);
    });

    const legend = document.createElement("div");
    legend.className = "legend";
    const last = this.points.length ? this.points[this.points.length - 1][1] : [];
    this.series.forEach((s, i) => {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${s.color}"></i>`;
      item.append(`${s.name} ${formatNumber(last[i] || 0)}${this.unit}`);
      legend.appendChild(item);
    });
    this.element.replaceChildren(svg, legend);
  }
}

// 0, then 1, 2, 5 x 10^n: axis maxima that read well.
function niceCeil(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function formatNumber(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (v >= 100 || Number.isInteger(v)) return v.toFixed(0);
  return v.toFixed(1);
}

function line(svg, x1, y1, x2, y2, cls) {
  const l = document.createElementNS(SVG_NS, "line");
  Object.entries({x1, y1, x2, y2}).forEach(([k, v]) => l.setAttribute(k, v));
  l.setAttribute("class", cls);
  svg.appendChild(l);
}

function text(svg, x, y, content, cls) {
  const t = document.createElementNS(SVG_NS, "text");
  t.setAttribute("x", x);
  t.setAttribute("y", y);
  t.setAttribute("class", cls);
  t.textContent = content;
  svg.appendChild(t);
}
