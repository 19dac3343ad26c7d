// Rendering what the API answers about invocations and sends (all of it as text).

import { badge, h, kv, table } from "./dom.js";

/** The per-device report of one send (POST /v1/push/send or a guest's send). */
export function sendReport(report) {
  const err = report.error;
  return h("div", { class: "send-report" },
    h("p", {},
      badge(report.ok && !err, report.ok && !err ? "delivered" : "not all delivered"), " ",
      report.user_id !== undefined ? `to user ${report.user_id}: ` : "",
      `${report.devices_succeeded ?? 0} of ${report.devices_attempted ?? 0} devices`),
    err ? h("p", { class: "error" }, `${err.kind}: ${err.message}`) : null,
    (report.results || []).length
      ? table([
        { label: "Device", value: (r) => r.device_id },
        { label: "Provider", value: (r) => r.provider },
        { label: "Result", value: (r) => badge(r.success, r.success ? "delivered" : "failed") },
        { label: "Status", value: (r) => String(r.status ?? "") },
        { label: "Reason", value: (r) => [r.reason || "", r.message ? ` ${r.message}` : ""] },
        { label: "Attempts", value: (r) => String(r.attempts ?? "") },
      ], report.results)
      : h("p", { class: "empty" }, "No devices were attempted."));
}

export function logList(logs, dropped = 0) {
  if (!logs.length) return h("p", { class: "empty" }, "No log lines.");
  return h("ul", { class: "logs", "aria-label": "Logs" },
    logs.map((l) => h("li", {}, h("span", { class: "level" }, l.level), l.message)),
    dropped ? h("li", { class: "hint" }, `${dropped} more line(s) not kept`) : null);
}

/** One invocation result (the invoke answer or a recent-invocations entry). */
export function invocation(result) {
  const outcome = result.outcome || (result.ok ? "ok" : result.error ? result.error.kind : "guest_error");
  return h("div", { class: "invocation" },
    kv([
      ["Outcome", badge(result.ok, outcome)],
      ["Return code", result.code === null ? "none (stopped)" : String(result.code)],
      ["Duration", `${result.duration_ms} ms`],
      ["Fuel used", String(result.fuel_used)],
    ]),
    result.error ? h("p", { class: "error" }, `${result.error.kind}: ${result.error.message}`) : null,
    h("h3", {}, "Output"),
    result.output ? h("pre", { class: "output" }, result.output) : h("p", { class: "empty" }, "No output."),
    result.output_base64 ? h("p", { class: "hint" }, "The output is not UTF-8; base64: ", result.output_base64) : null,
    h("h3", {}, "Logs"),
    logList(result.logs || [], result.logs_dropped || 0),
    h("h3", {}, "Sends"),
    (result.sends || []).length
      ? (result.sends || []).map((s) => sendReport(s))
      : h("p", { class: "empty" }, "No sends."));
}
