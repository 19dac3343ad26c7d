// Sends: the durable send history (GET /v1/push/sends), filterable by user and state, each with its
// per-device states; refreshed every few seconds while any shown send is still pending.

import { get } from "./api.js";
import { badge, clear, describe, field, h, table, when } from "./dom.js";

const LIVE_MS = 2000;

function sendCard(send) {
  const counts = Object.entries(send.counts || {}).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ");
  const failed = send.deliveries.some((d) => !["delivered", "queued", "sending", "sent"].includes(d.state));
  return h("details", { class: "send", open: send.state === "pending" ? true : null, "data-send": send.send_id },
    h("summary", {}, badge(send.state === "completed" ? !failed : null, send.state), ` ${send.user_id} · ${when(send.created_at)}`,
      counts ? ` · ${counts}` : ""),
    h("p", { class: "hint" }, `send ${send.send_id} · expires ${when(send.expires_at)}`),
    send.deliveries.length
      ? table([
        { label: "Device", value: (d) => d.device_id },
        { label: "Provider", value: (d) => d.provider },
        { label: "State", value: (d) => badge(d.state === "delivered" ? true : ["queued", "sending", "sent"].includes(d.state) ? null : false, d.state) },
        { label: "Attempts", value: (d) => String(d.attempts) },
        { label: "Next attempt", value: (d) => (d.next_attempt_at ? when(d.next_attempt_at) : "—") },
        { label: "Last error", value: (d) => (d.state === "delivered" ? "—" : [d.status ? `${d.status} ` : "", d.reason || "", d.error ? ` ${d.error}` : ""]) },
      ], send.deliveries)
      : h("p", { class: "empty" }, "The user had no devices."));
}

export function sendsPage(root) {
  const user = field("User id", { autocomplete: "off" }, "Empty: every user.");
  const state = field("State", { tag: "select" });
  for (const [value, label] of [["", "any"], ["pending", "pending"], ["completed", "completed"]]) {
    state.input.append(h("option", { value }, label));
  }
  const list = h("div", { "aria-live": "polite" });
  const status = h("p", { class: "hint" });
  let timer = null;
  const load = async () => {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: "50" });
    if (user.input.value.trim()) query.set("user_id", user.input.value.trim());
    if (state.input.value) query.set("state", state.input.value);
    try {
      const { sends } = await get(`/v1/push/sends?${query}`);
      const open = new Set([...list.querySelectorAll("details[open]")].map((d) => d.dataset.send));
      clear(list).append(...(sends.length ? sends.map(sendCard) : [h("p", { class: "empty" }, "No sends match.")]));
      for (const d of list.querySelectorAll("details")) if (open.has(d.dataset.send)) d.open = true;
      const live = sends.some((s) => s.state === "pending");
      status.textContent = live ? `Deliveries in flight: updating every ${LIVE_MS / 1000} s.` : `Updated ${new Date().toLocaleTimeString()}.`;
      if (live) timer = setTimeout(load, LIVE_MS);
    } catch (err) {
      clear(list).append(h("p", { class: "error", role: "alert" }, describe(err)));
    }
  };
  const button = h("button", { type: "submit" }, "Filter");
  root.append(h("h1", {}, "Sends"),
    h("section", { class: "card" }, h("form", { onsubmit: (e) => { e.preventDefault(); load(); } },
      h("div", { class: "grid" }, user.row, state.row), h("div", { class: "actions" }, button))),
    h("section", { class: "card" }, status, list));
  load();
  return () => clearTimeout(timer);
}
