// The API client: one place that knows the token, its refresh, and how a refusal looks.
// Every path it is given is one of /openapi.json's (tests/console/test_api_paths.py checks).

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || `http_${status}`;
    this.params = (body && body.params) || {};
    this.problems = (body && body.problems) || [];
  }
}

const listeners = new Set();
/** called with a reason ("expired", "logout") when the session ends */
export function onSessionEnd(fn) { listeners.add(fn); return () => listeners.delete(fn); }

let access = sessionStorage.getItem("loa-token");

export function loggedIn() { return !!access; }
export function token() { return access; }

function keep(pair) {
  access = pair.access_token;
  sessionStorage.setItem("loa-token", access);
  if (pair.refresh_token) sessionStorage.setItem("loa-refresh", pair.refresh_token);
}

export function forget(reason) {
  access = null;
  sessionStorage.removeItem("loa-token");
  sessionStorage.removeItem("loa-refresh");
  for (const fn of listeners) fn(reason);
}

async function renew() {
  const refresh_token = sessionStorage.getItem("loa-refresh");
  if (!refresh_token) return false;
  const r = await fetch(API + "/auth/refresh", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({refresh_token})});
  if (!r.ok) return false;
  keep(await r.json());
  return true;
}

/** fetch `path` under /api/v1; JSON in and out; throws ApiError on a refusal */
export async function call(path, {method = "GET", json, form, raw = false} = {}, again = true) {
  const headers = access ? {Authorization: "Bearer " + access} : {};
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  let r;
  try {
    r = await fetch(API + path, {method, headers, body});
  } catch (e) {
    throw new ApiError(0, {code: "network_down"});
  }
  if (r.status === 401 && again && access && await renew()) return call(path, {method, json, form, raw}, false);
  if (r.status === 401 && access) { forget("expired"); }
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  if (raw) return r;
  return r.status === 204 ? null : r.json();
}

export async function login(username, password) {
  const r = await fetch(API + "/auth/token", {method: "POST",
    body: new URLSearchParams({username, password})});
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  keep(body);
}

export async function logout() {
  const refresh_token = sessionStorage.getItem("loa-refresh");
  try {
    await fetch(API + "/auth/logout", {method: "POST", headers: {
      "Content-Type": "application/json", Authorization: "Bearer " + access},
      body: JSON.stringify({refresh_token})});
  } finally { forget("logout"); }
}

/** the audio of a content, as an object URL the page can play (the route needs the token) */
export async function audioUrl(contentId) {
  const r = await call(`/contents/${encodeURIComponent(contentId)}/audio`, {raw: true});
  return URL.createObjectURL(await r.blob());
}

/** a file download the route answers (CSV), saved under `name` */
export async function download(path, name) {
  const r = await call(path, {raw: true});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}
