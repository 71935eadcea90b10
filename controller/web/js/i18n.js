// Rendering the catalog: t(key, params), times in the area's zone with Vietnamese formats,
// and a refusal (ApiError) explained from its code, params and problems.
import {vi, en} from "./messages.js";

const catalogs = {vi, en};
export const ZONE = "Asia/Ho_Chi_Minh";
export let lang = localStorage.getItem("loa-lang") === "en" ? "en" : "vi";

export function setLang(l) {
  lang = l === "en" ? "en" : "vi";
  localStorage.setItem("loa-lang", lang);
  document.documentElement.lang = lang;
}
document.documentElement.lang = lang;

export function has(key) { return key in catalogs[lang] || key in vi; }

/** the text of `key` in the current language (Vietnamese where English has none) */
export function t(key, params = {}) {
  const entry = key in catalogs[lang] ? catalogs[lang][key] : vi[key];
  if (entry === undefined) return key;
  if (typeof entry === "function") return entry(params);
  return entry.replace(/\{(\w+)\}/g, (_, k) => (params[k] ?? ""));
}

const locale = () => (lang === "vi" ? "vi-VN" : "en-GB");

export function dateTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString(locale(), {timeZone: ZONE, hour: "2-digit", minute: "2-digit",
    day: "2-digit", month: "2-digit", year: "numeric"});
}
export function day(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleDateString(locale(), {timeZone: ZONE, weekday: "short", day: "2-digit",
                                                     month: "2-digit"});
}
export function month(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleDateString(locale(), {timeZone: ZONE, month: "2-digit", year: "numeric"});
}
export function time(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleTimeString(locale(), {timeZone: ZONE, hour: "2-digit", minute: "2-digit"});
}
export function ago(iso) {
  if (!iso) return t("time.never");
  const s = Math.max(0, Math.round((Date.now() - new Date(iso)) / 1000));
  if (s < 60) return t("time.ago_s", {n: s});
  if (s < 3600) return t("time.ago_m", {n: Math.round(s / 60)});
  if (s < 86400) return t("time.ago_h", {n: Math.round(s / 3600)});
  return t("time.ago_d", {n: Math.round(s / 86400)});
}
export function duration(seconds) {
  const s = Math.round(seconds || 0);
  return lang === "vi" ? (s < 60 ? `${s} giây` : `${Math.floor(s / 60)} phút ${s % 60} giây`)
                       : (s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`);
}

export function state(s) { return has("state." + s) ? t("state." + s) : s; }

/** one coded reason: {code, params} */
export function reason(code, params = {}) {
  if (has("code." + code)) return t("code." + code, params);
  if (has("cause." + code)) return t("cause." + code, params);
  return t("code.unknown", {code});
}

/** a refusal, as lines a person reads: the reason, then each problem's */
export function explain(err) {
  if (err.local) return [err.local];
  if (lang === "en" && err.message && err.code !== "network_down") return [err.message];
  const lines = [reason(err.code, err.params)];
  for (const p of err.problems || []) {
    if (err.code === "invalid_request") continue;  // shown by the fields themselves
    lines.push(reason(p.code, p.params));
  }
  return lines;
}

/** a cluster's cause or an alert: {code, subject} */
export function cause(c) {
  return has("cause." + c.code) ? t("cause." + c.code, c) : t("code.unknown", {code: c.code});
}
