// The public HTTP API, with the signed-in credential. The credential lives in sessionStorage (gone when
// the tab closes) and travels only in the Authorization header: never in a URL, never in a cookie.

const KEY = "wasmhost.console.credential";
const ROLE = "wasmhost.console.role";
const NAME = "wasmhost.console.namespace";

export function session() {
  const token = sessionStorage.getItem(KEY);
  if (!token) return null;
  return { token, role: sessionStorage.getItem(ROLE), namespace: sessionStorage.getItem(NAME) || "" };
}

export function signOut() {
  for (const k of [KEY, ROLE, NAME]) sessionStorage.removeItem(k);
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function call(token, method, path, { json, body, contentType } = {}) {
  const headers = new Headers();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  } else if (contentType) {
    headers.set("Content-Type", contentType);
  }
  // Relative to the page (…/console), so a gateway mounted under a prefix works unchanged.
  const response = await fetch(path.replace(/^\//, ""), { method, headers, body, cache: "no-store", credentials: "omit" });
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON (/metrics): keep the text
  }
  if (!response.ok && response.status !== 207) {
    const message = data && typeof data === "object" && typeof data.error === "string" ? data.error : response.statusText;
    throw new ApiError(response.status, message, data);
  }
  return { status: response.status, data };
}

/** Calls the API as the signed-in tenant or operator. A 401 means the credential no longer works
 * (a revoked key): the tab forgets it and the console goes back to sign-in, saying why. */
export async function api(method, path, options) {
  const s = session();
  try {
    return await call(s ? s.token : null, method, path, options);
  } catch (err) {
    if (s && err instanceof ApiError && err.status === 401) {
      signOut();
      window.dispatchEvent(new CustomEvent("wasmhost:signedout", { detail: err.message }));
    }
    throw err;
  }
}

export const get = async (path) => (await api("GET", path)).data;

/** Checks a credential and keeps it: a `whk_` key is a tenant's, anything else is tried as the operator token. */
export async function signIn(token) {
  token = token.trim();
  if (!token) throw new ApiError(0, "enter an API key or the operator token");
  let role;
  let namespace = "";
  if (token.startsWith("whk_")) {
    namespace = (await call(token, "GET", "/v1/namespace")).data.namespace;
    role = "tenant";
  } else {
    await call(token, "GET", "/v1/namespaces");
    role = "operator";
  }
  sessionStorage.setItem(KEY, token);
  sessionStorage.setItem(ROLE, role);
  sessionStorage.setItem(NAME, namespace);
  return session();
}

export const enc = encodeURIComponent;
