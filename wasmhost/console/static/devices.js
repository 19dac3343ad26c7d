// Devices: look a user up, list their devices (tokens are never returned by the API), delete one.

import { api, enc, get } from "./api.js";
import { busy, clear, field, h, table, when } from "./dom.js";

export function devicesPage(root) {
  const user = field("User id", { required: true, autocomplete: "off" }, "The user id your backend puts in the JWT's sub.");
  const out = h("div", { "aria-live": "polite" });
  const problem = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Look up");
  const show = async (userId) => {
    const { devices } = await get(`/v1/namespace/users/${enc(userId)}/devices`);
    clear(out);
    out.append(h("h2", {}, `Devices of ${userId}`));
    if (!devices.length) { out.append(h("p", { class: "empty" }, "This user has no registered devices.")); return; }
    out.append(table([
      { label: "Device id", value: (d) => d.device_id },
      { label: "Provider", value: (d) => d.provider },
      { label: "Platform", value: (d) => d.platform || "—" },
      { label: "App version", value: (d) => d.app_version || "—" },
      { label: "Registered", value: (d) => when(d.created_at) },
      { label: "Updated", value: (d) => when(d.updated_at) },
      { label: "", value: (d) => {
        const del = h("button", { type: "button", class: "danger", "aria-label": `Delete device ${d.device_id}`, onclick: async () => {
          await busy(del, problem, async () => {
            await api("DELETE", `/v1/namespace/users/${enc(userId)}/devices/${enc(d.id)}`);
            await show(userId);
          });
        } }, "Delete");
        return del;
      } },
    ], devices));
  };
  root.append(h("h1", {}, "Devices"),
    h("section", { class: "card" },
      h("form", { onsubmit: async (event) => {
        event.preventDefault();
        await busy(button, out, () => show(user.input.value.trim()));
      } }, user.row, h("div", { class: "actions" }, button))),
    h("section", { class: "card" }, problem, out));
  out.append(h("p", { class: "empty" }, "Look up a user to see their devices."));
}
