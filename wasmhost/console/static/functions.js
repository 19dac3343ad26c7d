// Functions: list, deploy (file chooser or drop, with limits), invoke, recent invocations.

import { api, enc, get } from "./api.js";
import { append, badge, busy, clear, describe, field, h, table, when } from "./dom.js";
import { invocation } from "./report.js";

const LIMITS = [
  ["fuel", "Fuel"], ["timeout_ms", "Timeout (ms)"], ["memory_mb", "Memory (MiB)"],
  ["max_output_bytes", "Max output bytes"], ["max_log_lines", "Max log lines"],
  ["max_log_line_bytes", "Max log line bytes"], ["max_sends", "Max sends"],
];

function deployForm(onDeployed) {
  const name = field("Function name", { required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}", autocomplete: "off" },
    "Letters, digits, '_', '.', '-'. Deploying an existing name replaces it.");
  const file = field("Module file (.wasm or .wat)", { type: "file", accept: ".wasm,.wat,application/wasm,text/plain" });
  let chosen = null;
  const dropNote = h("span", {}, "…or drop a .wasm / .wat file here");
  const drop = h("div", { class: "drop", tabindex: "0", role: "button", "aria-label": "Drop a module file here, or press Enter to choose one" }, dropNote);
  const choose = (f) => {
    chosen = f || null;
    dropNote.textContent = chosen ? `Selected: ${chosen.name} (${chosen.size} bytes)` : "…or drop a .wasm / .wat file here";
    if (chosen && !name.input.value) name.input.value = chosen.name.replace(/\.(wasm|wat)$/i, "").replace(/[^A-Za-z0-9_.-]/g, "-");
  };
  file.input.addEventListener("change", () => choose(file.input.files[0]));
  drop.addEventListener("click", () => file.input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); file.input.click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); choose(e.dataTransfer.files[0]); });
  const limits = LIMITS.map(([key, label]) => [key, field(label, { type: "number", min: "1", inputmode: "numeric" })]);
  const out = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Deploy");
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      await busy(button, out, async () => {
        if (!chosen) throw new Error("choose or drop a module file first");
        const query = new URLSearchParams();
        for (const [key, f] of limits) if (f.input.value) query.set(key, f.input.value);
        const bytes = await chosen.arrayBuffer();
        const isWat = /\.wat$/i.test(chosen.name);
        const qs = query.toString();
        const { data } = await api("PUT", `/v1/functions/${enc(name.input.value)}${qs ? `?${qs}` : ""}`,
          { body: bytes, contentType: isWat ? "text/plain" : "application/wasm" });
        append(out, [h("p", { class: "notice", role: "status" }, `Deployed ${data.name} (${data.size} bytes, sha256 ${data.sha256.slice(0, 12)}…)`)]);
        onDeployed(data.name);
      });
    },
  },
  name.row, file.row, drop,
  h("fieldset", {}, h("legend", {}, "Limits (optional; empty keeps the platform default)"), h("div", { class: "grid" }, limits.map(([, f]) => f.row))),
  h("div", { class: "actions" }, button), out);
  return h("section", { class: "card", "aria-labelledby": "deploy-h" }, h("h2", { id: "deploy-h" }, "Deploy a function"), form);
}

function detail(fn, onDeleted) {
  const box = h("section", { class: "card", "aria-labelledby": "fn-h" });
  const input = field("Input (JSON or text)", { tag: "textarea", spellcheck: "false" }, "Sent as the request body; the guest reads it with input_read.");
  input.input.value = "{}";
  const result = h("div", { "aria-live": "polite", class: "result" });
  const recent = h("div", { class: "recent" });
  const invokeButton = h("button", { type: "submit" }, "Invoke");
  let newest = null; // id of the newest invocation shown
  const loadRecent = async () => {
    try {
      const { invocations } = await get(`/v1/functions/${enc(fn.name)}/invocations`);
      clear(recent);
      newest = invocations.length ? invocations[0].id : null;
      if (!invocations.length) { recent.append(h("p", { class: "empty" }, "No invocations yet.")); return newest; }
      recent.append(...invocations.map((inv) => h("details", { class: "recent-invocation" },
        h("summary", {}, badge(inv.ok, inv.outcome), ` ${when(inv.at)} · ${inv.duration_ms} ms · fuel ${inv.fuel_used}`),
        invocation(inv))));
    } catch (err) {
      clear(recent).append(h("p", { class: "error" }, describe(err)));
    }
    return newest;
  };
  const invokeForm = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      await busy(invokeButton, result, async () => {
        const before = newest;
        const { data } = await api("POST", `/v1/functions/${enc(fn.name)}/invoke`, { body: input.input.value, contentType: "application/json" });
        result.append(h("h3", {}, "Result"), invocation(data));
        // Another gateway process may have run it: its record reaches the store within a second.
        for (let tries = 0; tries < 4 && (await loadRecent()) === before; tries += 1) {
          await new Promise((done) => setTimeout(done, 700));
        }
      });
    },
  }, input.row, h("div", { class: "actions" }, invokeButton));
  const deleteOut = h("div");
  const deleteButton = h("button", { type: "button", class: "danger", onclick: async () => {
    if (!confirm(`Delete function ${fn.name}?`)) return;
    await busy(deleteButton, deleteOut, async () => { await api("DELETE", `/v1/functions/${enc(fn.name)}`); onDeleted(); });
  } }, "Delete function");
  box.append(
    h("h2", { id: "fn-h" }, `Function ${fn.name}`),
    h("p", { class: "hint" }, `sha256 ${fn.sha256} · ${fn.size} bytes · updated ${when(fn.updated_at)}`),
    h("p", { class: "hint" }, `Limits: ${Object.entries(fn.limits).map(([k, v]) => `${k}=${v}`).join(", ")}`),
    invokeForm, result,
    h("h3", {}, "Recent invocations"), recent,
    h("div", { class: "actions" }, deleteButton), deleteOut);
  loadRecent();
  return box;
}

export function functionsPage(root) {
  const list = h("section", { class: "card", "aria-labelledby": "fns-h" });
  const detailSlot = h("div");
  let selected = null;
  const refresh = async (select) => {
    if (select !== undefined) selected = select;
    clear(list).append(h("h2", { id: "fns-h" }, "Functions"));
    try {
      const { functions } = await get("/v1/functions");
      if (!functions.length) list.append(h("p", { class: "empty" }, "No functions yet: deploy one below."));
      else list.append(table([
        { label: "Name", value: (f) => h("button", { type: "button", class: "secondary", "aria-pressed": String(f.name === selected), onclick: () => refresh(f.name) }, f.name) },
        { label: "Size", value: (f) => `${f.size} bytes` },
        { label: "Updated", value: (f) => when(f.updated_at) },
        { label: "Fuel", value: (f) => String(f.limits.fuel) },
      ], functions));
      clear(detailSlot);
      const fn = functions.find((f) => f.name === selected);
      if (fn) detailSlot.append(detail(fn, () => refresh(null)));
    } catch (err) {
      list.append(h("p", { class: "error", role: "alert" }, describe(err)));
    }
  };
  root.append(h("h1", {}, "Functions"), list, detailSlot, deployForm((n) => refresh(n)));
  refresh();
}
