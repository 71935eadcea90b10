// The programme of a commune for the week ahead: each day's items in the order they will
// play, at the time they start (moved from their slot when others come first).
import {useEffect, useState} from "preact/hooks";
import {call} from "../api.js";
import {ZONE, lang, t, time} from "../i18n.js";
import {Badge, Loading, html, useId} from "../ui.js";

function localDays(n) {  // the next n local dates, YYYY-MM-DD, in the area's zone
  const fmt = new Intl.DateTimeFormat("sv-SE", {timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit"});
  return Array.from({length: n}, (_, i) => fmt.format(new Date(Date.now() + i * 86400e3)));
}

function dayLabel(d) {
  return new Date(d + "T12:00:00+07:00").toLocaleDateString(lang === "vi" ? "vi-VN" : "en-GB",
    {timeZone: ZONE, weekday: "long", day: "2-digit", month: "2-digit"});
}

export function Programme({me, areas}) {
  const communes = areas.list.filter((a) => a.kind === "commune");
  const own = me.area_id && areas.byId[me.area_id];
  const start = own && own.kind === "commune" ? own.id : own && own.kind === "village" ? own.parent_id
    : (communes[0] || {}).id;
  const [commune, setCommune] = useState(start);
  const [week, setWeek] = useState(null);
  const [err, setErr] = useState(null);
  const cid = useId("commune");
  useEffect(() => {
    if (!commune) return;
    setWeek(null);
    const days = localDays(7);
    Promise.all(days.map((d) => call(`/programme?area=${encodeURIComponent(commune)}&day=${d}`)))
      .then((ps) => setWeek(ps)).catch(setErr);
  }, [commune]);
  return html`<section class="screen">
    <h1>${t("programme.title")}</h1>
    ${communes.length > 1 && html`<label for=${cid}>${t("programme.commune")}</label>
      <select id=${cid} value=${commune} onChange=${(e) => setCommune(e.target.value)}>
        ${communes.map((c) => html`<option value=${c.id}>${c.name}</option>`)}</select>`}
    ${!week ? html`<${Loading} err=${err} />` : html`<div class="week" id="week">
      ${week.map((p) => html`<section class="prog-day card" aria-label=${dayLabel(p.day)}>
        <h2>${dayLabel(p.day)}</h2>
        ${p.items.length === 0 ? html`<p class="muted">${t("programme.empty")}</p>` : html`<ol class="plain">
          ${p.items.map((i) => html`<li><a class="row-link" href=${"#/bulletins/" + i.broadcast_id}>
            <span class="row-main"><strong>${time(i.start)} · ${i.title || "–"}</strong>
              ${i.moved_s > 30 && html`<span class="muted small">${t("programme.moved", {slot: time(i.slot)})}</span>`}</span>
            <span class="row-side">${i.priority !== "normal" && html`<${Badge} s=${"p-" + i.priority} label=${t("priority." + i.priority)} />`}</span>
          </a></li>`)}</ol>`}
      </section>`)}</div>`}
  </section>`;
}
