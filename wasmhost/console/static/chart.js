// A small SVG line chart (no library): one line per series over a time axis. Series names and values
// are set as text; colours come from the stylesheet's .s0-.s7 classes.

import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const W = 480;
const H = 200;
const PAD = { left: 40, right: 10, top: 10, bottom: 24 };

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function clock(t) {
  const d = new Date(t * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/**
 * lineChart({title, unit, from, to, step, series: [{name, values: Map(t -> y)}]}) -> <figure>.
 * Missing minutes count as 0. The figure also carries a text summary for screen readers.
 */
export function lineChart({ title, unit, from, to, step = 60, series }) {
  const xs = [];
  for (let t = from; t <= to; t += step) xs.push(t);
  const max = niceMax(Math.max(0, ...series.flatMap((s) => xs.map((t) => s.values.get(t) || 0))));
  const x = (i) => PAD.left + (i * (W - PAD.left - PAD.right)) / Math.max(1, xs.length - 1);
  const y = (v) => H - PAD.bottom - (v * (H - PAD.top - PAD.bottom)) / max;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac;
    root.append(svg("line", { class: frac ? "grid" : "axis", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    root.append(svg("text", { class: "tick", x: PAD.left - 4, y: y(v) + 3, "text-anchor": "end" },
      Number.isInteger(v) ? String(v) : v.toFixed(1)));
  }
  const labels = xs.length > 1 ? [0, Math.floor((xs.length - 1) / 2), xs.length - 1] : [0];
  for (const i of labels) {
    const anchor = i === 0 ? "start" : i === xs.length - 1 ? "end" : "middle";
    root.append(svg("text", { class: "tick", x: x(i), y: H - 6, "text-anchor": anchor }, clock(xs[i])));
  }
  series.forEach((s, n) => {
    const points = xs.map((t, i) => `${x(i).toFixed(1)},${y(s.values.get(t) || 0).toFixed(1)}`).join(" ");
    const line = svg("polyline", { class: `line s${n % 8}`, points });
    line.append(svg("title", {}, s.name));
    root.append(line);
    // Marks where something happened, so series that share a value stay visible (offset per series).
    xs.forEach((t, i) => {
      const v = s.values.get(t) || 0;
      if (!v) return;
      const dot = svg("circle", { class: `s${n % 8}`, cx: x(i), cy: y(v) - 3 * n, r: 3 });
      dot.append(svg("title", {}, `${s.name}: ${Math.round(v * 1000) / 1000} at ${clock(t)}`));
      root.append(dot);
    });
  });
  const totals = series.map((s) => [s.name, [...s.values.values()].reduce((a, b) => a + b, 0)]);
  return h("figure", { class: "chart" },
    h("figcaption", {}, title),
    root,
    series.length
      ? h("ul", { class: "legend" }, series.map((s, n) => h("li", {},
        h("span", { class: `swatch s${n % 8}`, "aria-hidden": "true" }), s.name)))
      : h("p", { class: "empty" }, "Nothing in this period."),
    h("p", { class: "hint" }, totals.length
      ? `${unit}: ${totals.map(([name, v]) => `${name} ${Math.round(v * 1000) / 1000}`).join(", ")}`
      : ""));
}
