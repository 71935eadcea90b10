// Bulletins: the list (each row a link), and one bulletin with its proof per village (or per
// commune for the province), the CSV, listening, and cancel after a confirmation.
import {useState} from "preact/hooks";
import {audioUrl, call, download} from "../api.js";
import {dateTime, lang, state, t} from "../i18n.js";
import {Act, Badge, Loading, Notice, Refusal, html, useData} from "../ui.js";

const TOPICS = ["broadcasts", "*"];
const ENDED = ["completed", "cancelled", "expired", "rejected", "declined"];

export function repeatText(rec) {
  if (!rec || !rec.rrule) return null;
  const days = new Set(), times = [];
  for (const r of rec.rrule) {
    const f = Object.fromEntries(r.split(";").map((kv) => kv.split("=")));
    if (f.FREQ !== "WEEKLY" || !f.BYDAY) return t("recurrence.other");
    f.BYDAY.split(",").forEach((d) => days.add(d));
    for (const h of (f.BYHOUR || "0").split(","))
      for (const m of (f.BYMINUTE || "0").split(","))
        times.push(`${h.padStart(2, "0")}:${m.padStart(2, "0")}`);
  }
  const order = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"].filter((d) => days.has(d));
  return t("recurrence.weekly", {days: order.map((d) => t("day." + d)).join(", "),
                                 times: times.sort().join(", ")});
}

function playedText(b) {
  const s = (b.occurrence && b.occurrence.summary) || {};
  const targeted = Object.values(s).reduce((a, x) => a + x, 0);
  if (!b.occurrence || !targeted) return null;
  if (new Date(b.occurrence.start_at) > new Date() && !s.played) return t("bulletin.not_started");
  return t("bulletin.played_of", {played: s.played || 0, targeted});
}

/** one row per bulletin: a commune sees its own copy of one handed down, the issuer the original */
export function oneEach(list, me, areas) {
  const home = me.area_id ? areas.byId[me.area_id] : null;
  const local = home && ["commune", "village"].includes(home.kind);
  const ids = new Set(list.map((b) => b.id));
  const parents = new Set(list.filter((b) => b.parent_id).map((b) => b.parent_id));
  return list.filter((b) => (local ? !parents.has(b.id) : !(b.parent_id && ids.has(b.parent_id))));
}

export function Bulletins({me, areas}) {
  const {data: raw, err} = useData("/broadcasts?limit=50", TOPICS);
  const data = raw && oneEach(raw, me, areas);
  const [filter, setFilter] = useState("");
  if (!data) return html`<section class="screen"><h1>${t("bulletins.title")}</h1><${Loading} err=${err} /></section>`;
  const statuses = [...new Set(data.map((b) => b.status))];
  const shown = data.filter((b) => !filter || b.status === filter);
  return html`<section class="screen">
    <h1>${t("bulletins.title")}</h1>
    ${statuses.length > 1 && html`<div class="chips" role="group" aria-label=${t("bulletins.filter")}>
      ${["", ...statuses].map((s) => html`<button type="button" class=${"chip" + (filter === s ? " on" : "")}
        aria-pressed=${filter === s ? "true" : "false"} onClick=${() => setFilter(s)}>
        ${s ? state(s) : t("bulletins.all")}</button>`)}</div>`}
    ${shown.length === 0 ? html`<p class="muted">${t("bulletins.empty")}</p>` : html`
    <ul class="rows" id="bulletinList">${shown.map((b) => html`<li>
      <a class="row-link" href=${"#/bulletins/" + b.id}>
        <span class="row-main"><strong>${b.title || "–"}</strong>
          <span class="muted">${repeatText(b.recurrence) || dateTime(b.start_at || b.created_at)}</span></span>
        <span class="row-side"><${Badge} s=${b.status} />
          ${b.priority !== "normal" && html`<${Badge} s=${"p-" + b.priority} label=${t("priority." + b.priority)} />`}
          <span class="muted small">${playedText(b) || ""}</span></span>
      </a></li>`)}</ul>`}
  </section>`;
}

export function Bulletin({id, me, areas}) {
  const {data: b, err, reload} = useData(`/broadcasts/${encodeURIComponent(id)}?deliveries_limit=0`, TOPICS);
  const byProvince = me.area_id && areas.byId[me.area_id] && !["commune", "village"].includes(areas.byId[me.area_id].kind);
  const by = byProvince ? "commune" : "village";
  const {data: report} = useData(`/broadcasts/${encodeURIComponent(id)}/report?by=${by}`, TOPICS);
  const [src, setSrc] = useState(null);
  const [actErr, setActErr] = useState(null);
  const [note, setNote] = useState(null);
  if (!b) return html`<section class="screen"><a href="#/bulletins" class="back">${t("common.back")}</a><${Loading} err=${err} /></section>`;
  const rows = report ? report[by + "s"] || [] : [];
  const cancel = async () => {
    await call(`/broadcasts/${encodeURIComponent(b.id)}/cancel`, {method: "POST"});
    setNote(t("bulletin.cancelled"));
    reload();
  };
  const spread = b.occurrence && b.occurrence.start_spread_ms;
  return html`<section class="screen">
    <a href="#/bulletins" class="back">${t("common.back")}</a>
    <h1>${b.title || t("bulletin.detail")}</h1>
    <div class="card">
      <dl class="facts">
        <dt>${t("cluster.state")}</dt><dd><${Badge} s=${b.status} /></dd>
        <dt>${t("bulletin.priority")}</dt><dd>${t("priority." + b.priority)}</dd>
        <dt>${repeatText(b.recurrence) ? t("bulletin.repeat") : t("bulletin.start")}</dt>
        <dd>${repeatText(b.recurrence) || dateTime(b.occurrence ? b.occurrence.start_at : b.start_at)}</dd>
        <dt>${t("bulletin.by")}</dt><dd>${b.created_by || "–"}</dd>
        <dt>${t("bulletin.targets")}</dt>
        <dd>${(b.targets.areas || []).map((a) => (areas.byId[a] || {}).name || a).join(", ")}</dd>
        ${b.decision_note && html`<dt>${t("bulletin.note")}</dt><dd>${b.decision_note}</dd>`}
      </dl>
      ${src ? html`<audio controls autoplay src=${src}></audio>`
        : html`<${Act} kind="secondary" action=${async () => setSrc(await audioUrl(b.content_id))}
            onError=${setActErr}>${t("bulletin.listen")}<//>`}
    </div>
    <div class="card">
      <h2>${t("bulletin.proof")}</h2>
      ${spread != null && html`<p class="muted">${t("bulletin.spread", {ms: Math.round(spread)})}</p>`}
      ${rows.length === 0 ? html`<p class="muted">${t("bulletin.proof_none")}</p>` : html`
      <table class="proof" id="proof">
        <thead><tr><th scope="col">${by === "commune" ? t("inbox.from") : t("bulletin.village")}</th>
          <th scope="col">${t("bulletin.col_played")}</th><th scope="col">${t("bulletin.col_failed")}</th></tr></thead>
        <tbody>${rows.map((r) => html`<tr class=${r.played >= r.targeted && r.targeted ? "ok" : (r.failed || r.unreachable) ? "bad" : ""}>
          <th scope="row">${r.name}</th>
          <td>${r.played}/${r.targeted}${r.playing ? ` (+${r.playing} ${state("playing")})` : ""}</td>
          <td>${(r.failed || 0) + (r.unreachable || 0)}</td></tr>`)}</tbody>
      </table>`}
      <${Act} kind="secondary" action=${() => download(
        `/broadcasts/${encodeURIComponent(b.id)}/report?by=${by}&format=csv&lang=${lang}`,
        `ban-tin-${b.id}.csv`)} onError=${setActErr}>${t("bulletin.csv")}<//>
    </div>
    <${Refusal} err=${actErr} />
    <${Notice} text=${note} />
    ${!ENDED.includes(b.status) && me.role !== "technician" && html`<div class="row">
      <${Act} kind="danger" confirm=${t("bulletin.cancel_confirm")} action=${cancel}
        onError=${setActErr}>${t("bulletin.cancel")}<//></div>`}
  </section>`;
}
