// The webhook card of the push page: where delivery events are POSTed, which ones, the endpoint's
// health, and the signing secret, shown once right after the save that generated it (never again).

import { api, get } from "./api.js";
import { badge, busy, clear, describe, field, h, kv, setError, uid, when } from "./dom.js";

const EVENTS = [
  ["delivery.dead_token", "A device's token died (which device of which user; never the token)"],
  ["delivery.failed", "A delivery failed for good (with the reason)"],
  ["send.completed", "Every delivery of a send reached a final state (counts by state)"],
];

function statusView(hook) {
  const pairs = [
    ["URL", hook.url],
    ["Events", hook.events.join(", ")],
    ["State", badge(hook.state === "enabled", hook.state)],
  ];
  if (hook.state === "disabled") pairs.push(["Disabled", `${when(hook.disabled_at)}: ${hook.disabled_reason || ""}`]);
  pairs.push(["Last success", when(hook.last_success_at) || "never"],
    ["Last failure", hook.last_failure_at ? `${when(hook.last_failure_at)} (${hook.last_error || "failed"})` : "never"],
    ["Failures since the last success", String(hook.failures)]);
  return kv(pairs);
}

export function webhookCard() {
  const card = h("section", { class: "card", "aria-labelledby": "webhook-h", "data-card": "webhook" });
  const load = async (notice, secret) => {
    clear(card);
    let hook = null;
    try {
      hook = await get("/v1/namespace/webhook");
    } catch (err) {
      if (err.status !== 404) {
        card.append(h("h2", { id: "webhook-h" }, "Webhook"), h("p", { class: "error", role: "alert" }, describe(err)));
        return;
      }
    }
    const out = h("div", { "aria-live": "polite" });
    if (notice) out.append(h("p", { class: "notice", role: "status" }, notice));
    if (secret) {
      out.append(h("p", { class: "notice" }, "Signing secret: it is shown only now; copy it to your receiver."),
        h("p", { class: "secret", "data-secret": "" }, secret));
    }
    const url = field("Endpoint URL (https)", { type: "text", autocomplete: "off", name: "url" });
    if (hook) url.input.value = hook.url;
    const boxes = EVENTS.map(([name, about]) => {
      const id = uid("event");
      const input = h("input", { type: "checkbox", id, name: "events", value: name });
      input.checked = hook ? hook.events.includes(name) : true;
      return { input, row: h("div", { class: "check" }, input, h("label", { for: id }, name, " ", h("span", { class: "hint" }, about))) };
    });
    const rotateId = uid("rotate");
    const rotate = h("input", { type: "checkbox", id: rotateId, name: "rotate_secret" });
    const formError = h("div", { class: "field-error", role: "alert" });
    const save = h("button", { type: "submit" }, hook ? "Save webhook" : "Add webhook");
    const remove = h("button", { type: "button", class: "danger", onclick: async () => {
      await busy(remove, out, async () => { await api("DELETE", "/v1/namespace/webhook"); await load("Webhook removed."); });
    } }, "Remove webhook");
    const form = h("form", { onsubmit: async (event) => {
      event.preventDefault();
      formError.textContent = "";
      setError(url, "");
      save.disabled = true;
      try {
        const events = boxes.filter((b) => b.input.checked).map((b) => b.input.value);
        const { data } = await api("PUT", "/v1/namespace/webhook", { json: { url: url.input.value.trim(), events, rotate_secret: rotate.checked } });
        await load("Webhook saved.", data.secret);
      } catch (err) {
        if (err.status === 400 && /^url\b/.test(err.message)) { setError(url, err.message); url.input.focus(); } else formError.textContent = describe(err);
      } finally {
        save.disabled = false;
      }
    } }, url.row,
    h("fieldset", {}, h("legend", {}, "Events"), boxes.map((b) => b.row)),
    hook ? h("div", { class: "check" }, rotate, h("label", { for: rotateId }, "Generate a new signing secret")) : null,
    formError, h("div", { class: "actions" }, save, hook ? remove : null));
    card.append(
      h("h2", { id: "webhook-h" }, "Webhook ", badge(hook ? hook.state === "enabled" : null, hook ? hook.state : "not set")),
      h("p", { class: "hint" }, "Signed events (Standard Webhooks) about this namespace's sends, POSTed to your endpoint."),
      hook ? statusView(hook) : h("p", { class: "empty" }, "No webhook."),
      h("h3", {}, hook ? "Change" : "Add"), form, out);
  };
  load();
  return card;
}
