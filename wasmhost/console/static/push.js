// Push setup: each provider's status and redacted credentials, a form per provider (the server's
// validation error shown next to the field it names), and a test send with its report.

import { api, enc, get } from "./api.js";
import { append, badge, busy, clear, describe, field, h, kv, setError } from "./dom.js";
import { sendReport } from "./report.js";
import { webhookCard } from "./webhooks.js";

// What each provider's credentials document holds. Secrets are never prefilled: the server shows only
// `has_<field>`, and saving replaces the whole document, so a secret is typed again to keep it.
const PROVIDERS = {
  outbox: { about: "Records deliveries in the gateway (no network); read them with GET /v1/push/outbox.", fields: [] },
  ntfy: { about: "An ntfy server (self-hosted or ntfy.sh).", fields: [
    ["base_url", "Server URL", "url"], ["auth_token", "Access token", "secret"],
    ["username", "User name", "text"], ["password", "Password", "secret"], ["ca_bundle", "CA bundle (PEM)", "pem"]] },
  apns: { about: "Apple Push Notification service, token-based (.p8) authentication.", fields: [
    ["team_id", "Team ID", "text"], ["key_id", "Key ID", "text"], ["bundle_id", "Bundle ID", "text"],
    ["p8_key", "Private key (.p8 PEM)", "secret-pem"], ["environment", "Environment (production or sandbox)", "text"],
    ["endpoint", "Endpoint override", "url"], ["ca_bundle", "CA bundle (PEM)", "pem"]] },
  fcm: { about: "Firebase Cloud Messaging (HTTP v1) with a service account.", fields: [
    ["service_account", "Service account JSON", "secret-json"], ["endpoint", "Endpoint override", "url"],
    ["ca_bundle", "CA bundle (PEM)", "pem"]] },
  expo: { about: "Expo push service.", fields: [
    ["access_token", "Access token", "secret"], ["endpoint", "Endpoint override", "url"], ["ca_bundle", "CA bundle (PEM)", "pem"]] },
  webpush: { about: "Web Push with VAPID.", fields: [
    ["vapid_private_key", "VAPID private key", "secret-pem"], ["vapid_subject", "VAPID subject (mailto: or https:)", "text"],
    ["ca_bundle", "CA bundle (PEM)", "pem"]] },
};

function redactedView(redacted) {
  if (!redacted) return h("p", { class: "empty" }, "Not configured.");
  const pairs = Object.entries(redacted).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]);
  return pairs.length ? kv(pairs) : h("p", { class: "hint" }, "Configured (no settings).");
}

/** The field a server error names ("credential validation failed: base_url must be https …"). */
function fieldFor(message, fields) {
  const text = message.replace(/^credential validation failed:\s*/, "");
  let best = null;
  let at = Infinity;
  for (const [key] of fields) {
    const m = new RegExp(`(^|[^a-z_])${key}([^a-z_]|$)`).exec(text);
    if (m && m.index < at) { best = key; at = m.index; }
  }
  return best;
}

function providerCard(provider, view, onChange) {
  const spec = PROVIDERS[provider] || { about: "", fields: null };
  const headingId = `prov-${provider}`;
  const card = h("section", { class: "card provider", "aria-labelledby": headingId, "data-provider": provider });
  const out = h("div", { "aria-live": "polite" });
  const redacted = view.redacted || {};
  let inputs = [];
  let raw = null;
  if (spec.fields) {
    inputs = spec.fields.map(([key, label, kind]) => {
      const secret = kind.startsWith("secret");
      const multiline = kind.endsWith("pem") || kind.endsWith("json");
      const attrs = multiline ? { tag: "textarea", spellcheck: "false", name: key } : { type: secret ? "password" : "text", autocomplete: "off", name: key };
      const hint = secret ? (redacted[`has_${key}`] ? "Saved (not shown). Type it again to keep it when saving." : "Secret: never shown again after saving.") : "";
      const f = field(label, attrs, hint);
      if (!secret && typeof redacted[key] === "string") f.input.value = redacted[key];
      return [key, f, kind];
    });
  } else {
    raw = field("Credentials document (JSON)", { tag: "textarea", spellcheck: "false" });
    raw.input.value = "{}";
  }
  const formError = h("div", { class: "field-error", role: "alert" });
  const save = h("button", { type: "submit" }, `Save ${provider}`);
  const remove = h("button", { type: "button", class: "danger", onclick: async () => {
    await busy(remove, out, async () => { await api("DELETE", `/v1/namespace/push-credentials/${enc(provider)}`); onChange(); });
  } }, "Remove");
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      formError.textContent = "";
      for (const [, f] of inputs) setError(f, "");
      save.disabled = true;
      try {
        let doc = {};
        if (raw) doc = JSON.parse(raw.input.value || "{}");
        for (const [key, f, kind] of inputs) {
          const value = f.input.value.trim();
          if (!value) continue;
          doc[key] = kind.endsWith("json") ? JSON.parse(value) : value;
        }
        await api("PUT", `/v1/namespace/push-credentials/${enc(provider)}`, { json: doc });
        onChange(`${provider} saved.`);
      } catch (err) {
        const key = err.status === 400 ? fieldFor(err.message, inputs) : null;
        const target = inputs.find(([k]) => k === key);
        if (target) { setError(target[1], err.message); target[1].input.focus(); } else formError.textContent = describe(err);
      } finally {
        save.disabled = false;
      }
    },
  }, inputs.map(([, f]) => f.row), raw ? raw.row : null, formError,
  h("div", { class: "actions" }, save, view.configured ? remove : null));
  card.append(
    h("h2", { id: headingId }, provider, " ", badge(view.configured ? true : null, view.configured ? "configured" : "not configured")),
    h("p", { class: "hint" }, spec.about),
    h("h3", {}, "Saved settings (redacted)"), redactedView(view.redacted),
    h("h3", {}, view.configured ? "Replace" : "Configure"), form, out);
  return card;
}

function testSend() {
  const user = field("User id", { required: true, autocomplete: "off" });
  const title = field("Title", { autocomplete: "off" });
  const body = field("Body", { autocomplete: "off" });
  title.input.value = "Test from the console";
  body.input.value = "If you can read this, push works.";
  const out = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Send test");
  return h("section", { class: "card", "aria-labelledby": "test-h" },
    h("h2", { id: "test-h" }, "Test send"),
    h("form", { onsubmit: async (event) => {
      event.preventDefault();
      await busy(button, out, async () => {
        const { data } = await api("POST", "/v1/push/send", { json: { user_id: user.input.value, title: title.input.value, body: body.input.value } });
        out.append(sendReport({ ...data, user_id: user.input.value }));
      });
    } }, h("div", { class: "grid" }, user.row, title.row, body.row), h("div", { class: "actions" }, button)), out);
}

export function pushPage(root) {
  const status = h("div", { "aria-live": "polite" });
  const cards = h("div");
  const load = async (notice) => {
    clear(cards);
    clear(status);
    if (notice) status.append(h("p", { class: "notice", role: "status" }, notice));
    try {
      const info = await get("/v1/namespace/push-credentials");
      status.append(h("p", {}, "Push is ", badge(info.push_configured, info.push_configured ? "ready" : "not configured"),
        info.configured.length ? ` · configured: ${info.configured.join(", ")}` : " · no provider configured yet"));
      const views = await Promise.all(info.supported.map((p) => get(`/v1/namespace/push-credentials/${enc(p)}`)));
      views.sort((a, b) => Number(b.configured) - Number(a.configured));
      cards.append(...views.map((v) => providerCard(v.provider, v, load)));
    } catch (err) {
      append(status, [h("p", { class: "error", role: "alert" }, describe(err))]);
    }
  };
  root.append(h("h1", {}, "Push setup"), status, testSend(), webhookCard(), cards);
  load();
}
