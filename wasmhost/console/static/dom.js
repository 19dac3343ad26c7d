// Building DOM nodes. Every string becomes a text node (never markup), so whatever a tenant or a
// guest wrote is shown as text. Event handlers are functions, never attribute strings.

let ids = 0;

/** A fresh id for label/field pairs. */
export function uid(prefix = "f") {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** h("tag", {attr: value, onclick: fn}, ...children): strings and numbers become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${name} must be a function`);
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A labelled input or textarea: returns {row, input, error}; the error element describes the input. */
export function field(label, attrs = {}, hint = "") {
  const id = uid("field");
  const tag = attrs.tag || "input";
  const input = h(tag, { ...attrs, tag: null, id, "aria-describedby": `${id}-error${hint ? ` ${id}-hint` : ""}` });
  const error = h("div", { class: "field-error", id: `${id}-error`, role: "alert" });
  const row = h("div", { class: "row" },
    h("label", { for: id }, label),
    hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null,
    input, error);
  return { row, input, error };
}

export function setError(f, message) {
  f.error.textContent = message || "";
  if (message) f.input.setAttribute("aria-invalid", "true");
  else f.input.removeAttribute("aria-invalid");
}

export function badge(ok, text) {
  return h("span", { class: `badge ${ok === null ? "idle" : ok ? "ok" : "bad"}` }, text);
}

export function when(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString();
}

/** A table from rows; `columns` is [{label, value(row) -> node|string}]. */
export function table(columns, rows, caption) {
  return h("table", { class: "wide" },
    caption ? h("caption", { class: "hint" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { "data-label": c.label }, c.value(row)))))));
}

/** A definition list from [[key, value], ...]. */
export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** Runs `work` with the button disabled; shows a thrown error's text in `out`. */
export async function busy(button, out, work) {
  button.disabled = true;
  if (out) clear(out);
  try {
    return await work();
  } catch (err) {
    if (out) append(out, [h("p", { class: "error", role: "alert" }, describe(err))]);
    return undefined;
  } finally {
    button.disabled = false;
  }
}

export function describe(err) {
  if (err && err.status) return `${err.status}: ${err.message}`;
  return String((err && err.message) || err);
}
