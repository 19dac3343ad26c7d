// Usage at a glance: this namespace's deliveries per minute by provider and outcome, invocations per
// minute by outcome, and their mean latency. Refreshes every few seconds while the page is open.

import { get } from "./api.js";
import { clear, describe, h, table } from "./dom.js";
import { lineChart } from "./chart.js";

const REFRESH_MS = 5000;

function seriesBy(rows, name, value) {
  const series = new Map();
  for (const row of rows) {
    const key = name(row);
    if (!series.has(key)) series.set(key, { name: key, values: new Map() });
    const values = series.get(key).values;
    values.set(row.minute, (values.get(row.minute) || 0) + value(row));
  }
  return [...series.values()].sort((a, b) => a.name.localeCompare(b.name));
}

export function usagePage(root) {
  const minutes = 30;
  const charts = h("div", { class: "charts" });
  const totals = h("div");
  const status = h("p", { class: "hint", "aria-live": "polite" });
  const load = async () => {
    try {
      const u = await get(`/v1/namespace/usage?minutes=${minutes}`);
      const to = Math.floor(u.now / 60) * 60;
      const from = u.since;
      const meanLatency = seriesBy(u.invocations, () => "mean latency", (r) => r.mean_ms * r.count);
      const counts = seriesBy(u.invocations, () => "mean latency", (r) => r.count);
      for (const s of meanLatency) {
        for (const [t, v] of s.values) s.values.set(t, v / (counts[0].values.get(t) || 1));
      }
      clear(charts).append(
        lineChart({ title: "Deliveries per minute, by provider and outcome", unit: "deliveries", from, to,
          series: seriesBy(u.deliveries, (r) => `${r.provider} ${r.outcome}`, (r) => r.count) }),
        lineChart({ title: "Invocations per minute, by outcome", unit: "invocations", from, to,
          series: seriesBy(u.invocations, (r) => r.outcome, (r) => r.count) }),
        lineChart({ title: "Invocation latency (mean ms per minute)", unit: "ms", from, to, series: meanLatency }));
      const sum = (rows, key) => {
        const m = new Map();
        for (const r of rows) m.set(key(r), (m.get(key(r)) || 0) + r.count);
        return [...m.entries()].sort();
      };
      clear(totals).append(
        h("h2", {}, `Last ${minutes} minutes`),
        h("h3", {}, "Deliveries"),
        u.deliveries.length ? table([{ label: "Provider and outcome", value: (r) => r[0] }, { label: "Count", value: (r) => String(r[1]) }],
          sum(u.deliveries, (r) => `${r.provider} ${r.outcome}`)) : h("p", { class: "empty" }, "No deliveries yet."),
        h("h3", {}, "Invocations"),
        u.invocations.length ? table([{ label: "Outcome", value: (r) => r[0] }, { label: "Count", value: (r) => String(r[1]) }],
          sum(u.invocations, (r) => r.outcome)) : h("p", { class: "empty" }, "No invocations yet."));
      status.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} s.`;
    } catch (err) {
      status.textContent = describe(err);
    }
  };
  root.append(h("h1", {}, "Usage"), status, h("section", { class: "card" }, charts), h("section", { class: "card" }, totals));
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => clearInterval(timer);
}
