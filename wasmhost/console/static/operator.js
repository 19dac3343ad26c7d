// Operator pages: namespaces and their API keys (a new key is shown once), and gateway health.

import { api, enc, get } from "./api.js";
import { badge, busy, clear, describe, field, h, table, when } from "./dom.js";

function shownOnce(created) {
  return h("div", { class: "card new-key", role: "status" },
    h("p", { class: "notice" }, `New API key for ${created.namespace} (${created.key_id}). It is shown only now: copy it.`),
    h("p", { class: "secret" }, created.api_key));
}

function keysPanel(namespace, slot) {
  const box = h("section", { class: "card", "aria-labelledby": "keys-h" });
  const out = h("div", { "aria-live": "polite" });
  const list = h("div");
  const load = async () => {
    try {
      const { keys } = await get(`/v1/namespaces/${enc(namespace)}/keys`);
      clear(list).append(keys.length ? table([
        { label: "Key id", value: (k) => k.key_id },
        { label: "Created", value: (k) => when(k.created_at) },
        { label: "", value: (k) => {
          const b = h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.key_id}`, onclick: async () => {
            if (!confirm(`Revoke ${k.key_id}? Clients using it stop working at once.`)) return;
            await busy(b, out, async () => { await api("DELETE", `/v1/namespaces/${enc(namespace)}/keys/${enc(k.key_id)}`); clear(out); await load(); });
          } }, "Revoke");
          return b;
        } },
      ], keys) : h("p", { class: "empty" }, "No keys: this namespace's admin cannot sign in until you create one."));
    } catch (err) {
      clear(list).append(h("p", { class: "error" }, describe(err)));
    }
  };
  const add = h("button", { type: "button", onclick: async () => {
    await busy(add, out, async () => {
      const { data } = await api("POST", `/v1/namespaces/${enc(namespace)}/keys`);
      out.append(shownOnce(data));
      await load();
    });
  } }, "Create key");
  box.append(h("h2", { id: "keys-h" }, `Keys of ${namespace}`), list, h("div", { class: "actions" }, add), out);
  clear(slot).append(box);
  load();
}

export function namespacesPage(root) {
  const list = h("section", { class: "card", "aria-labelledby": "ns-h" });
  const keys = h("div");
  const name = field("Namespace name", { required: true, autocomplete: "off" }, "Lower-case letters, digits and '-'.");
  const out = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Create namespace");
  const load = async () => {
    clear(list).append(h("h2", { id: "ns-h" }, "Namespaces"));
    try {
      const { namespaces } = await get("/v1/namespaces");
      list.append(namespaces.length ? table([
        { label: "Name", value: (n) => n },
        { label: "", value: (n) => h("button", { type: "button", class: "secondary", "aria-label": `Keys of ${n}`, onclick: () => keysPanel(n, keys) }, "Keys") },
      ], namespaces) : h("p", { class: "empty" }, "No namespaces yet."));
    } catch (err) {
      list.append(h("p", { class: "error", role: "alert" }, describe(err)));
    }
  };
  root.append(h("h1", {}, "Namespaces"), list, keys,
    h("section", { class: "card" }, h("h2", {}, "Create a namespace"),
      h("form", { onsubmit: async (event) => {
        event.preventDefault();
        await busy(button, out, async () => {
          const { data } = await api("POST", "/v1/namespaces", { json: { name: name.input.value.trim() } });
          name.input.value = "";
          out.append(shownOnce(data));
          await load();
        });
      } }, name.row, h("div", { class: "actions" }, button), out)));
  load();
}

function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m) out.set(m[1] + (m[2] || ""), Number(m[3]));
  }
  return out;
}

export function healthPage(root) {
  const box = h("section", { class: "card", "aria-live": "polite" });
  const load = async () => {
    clear(box).append(h("h2", {}, "Gateway health"));
    try {
      let store = "reachable";
      try {
        await api("GET", "/healthz");
      } catch (err) {
        store = `unreachable (${describe(err)})`;
      }
      box.append(h("p", {}, "Store: ", badge(store === "reachable", store)));
      const metrics = parseMetrics((await api("GET", "/metrics")).data);
      const pick = (prefix) => [...metrics.entries()].filter(([k]) => k.startsWith(prefix));
      const rows = [
        ...pick("wasmhost_invocations_in_flight"), ...pick("wasmhost_invocations_total"),
        ...pick("wasmhost_sends_total"), ...pick("wasmhost_push_deliveries_total"), ...pick("wasmhost_rate_limited_total"),
        ...pick("wasmhost_change_listener_connected"),
      ];
      box.append(h("h3", {}, "This gateway process (from /metrics)"),
        rows.length ? table([{ label: "Metric", value: (r) => r[0] }, { label: "Value", value: (r) => String(r[1]) }], rows)
          : h("p", { class: "empty" }, "Nothing counted yet."));
    } catch (err) {
      box.append(h("p", { class: "error", role: "alert" }, describe(err)));
    }
  };
  const again = h("button", { type: "button", class: "secondary", onclick: load }, "Refresh");
  root.append(h("h1", {}, "Gateway health"), box, h("div", { class: "actions" }, again));
  load();
}
