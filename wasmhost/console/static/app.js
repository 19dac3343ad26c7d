// The console's shell: sign-in, navigation (hash routes such as #/functions) and page switching.

import { session, signIn, signOut } from "./api.js";
import { busy, clear, field, h } from "./dom.js";
import { devicesPage } from "./devices.js";
import { functionsPage } from "./functions.js";
import { healthPage, namespacesPage } from "./operator.js";
import { pushPage } from "./push.js";
import { sendsPage } from "./sends.js";
import { usagePage } from "./usage.js";

const PAGES = {
  tenant: [
    ["functions", "Functions", functionsPage],
    ["push", "Push setup", pushPage],
    ["sends", "Sends", sendsPage],
    ["devices", "Devices", devicesPage],
    ["usage", "Usage", usagePage],
  ],
  operator: [
    ["namespaces", "Namespaces", namespacesPage],
    ["health", "Gateway health", healthPage],
  ],
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signout = document.getElementById("signout");
let leave = null; // the current page's cleanup (timers)

function signInPage(notice) {
  const secret = field("API key or operator token", { type: "password", autocomplete: "off", required: true },
    "A namespace API key (whk_…) or the gateway's operator token. Kept in this tab only.");
  const out = h("div");
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", {
    class: "card", onsubmit: async (event) => {
      event.preventDefault();
      const s = await busy(button, out, () => signIn(secret.input.value));
      if (s) {
        secret.input.value = "";
        location.hash = `#/${PAGES[s.role][0][0]}`;
        render();
      }
    },
  }, secret.row, h("div", { class: "actions" }, button), out);
  return h("section", { class: "signin card" }, h("h1", {}, "Sign in"),
    notice ? h("p", { class: "error", role: "alert" }, `Signed out: ${notice}`) : null, form);
}

function render(notice) {
  if (leave) leave();
  leave = null;
  clear(main);
  clear(nav);
  const s = session();
  signout.hidden = !s;
  who.textContent = s ? (s.role === "operator" ? "operator" : `namespace ${s.namespace}`) : "";
  if (!s) {
    document.title = "Sign in · wasmhost console";
    main.append(signInPage(notice));
    main.querySelector("input").focus();
    return;
  }
  const pages = PAGES[s.role] || [];
  const wanted = location.hash.replace(/^#\//, "");
  const page = pages.find(([slug]) => slug === wanted) || pages[0];
  for (const [slug, label] of pages) {
    nav.append(h("a", { href: `#/${slug}`, "aria-current": slug === page[0] ? "page" : null }, label));
  }
  document.title = `${page[1]} · wasmhost console`;
  const container = h("div", { "data-page": page[0] });
  main.append(container);
  leave = page[2](container, s) || null;
}

window.addEventListener("wasmhost:signedout", (event) => render(event.detail));
signout.addEventListener("click", () => {
  signOut();
  location.hash = "";
  render();
});
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/") || location.hash === "") {
    render();
    main.focus();
  }
});
render();
