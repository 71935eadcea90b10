// Commune: bulletins handed down from the district or province; accept (at the suggested
// time, to the villages the issuer chose) or decline with a reason.
import {useState} from "preact/hooks";
import {audioUrl, call} from "../api.js";
import {dateTime, duration, t} from "../i18n.js";
import {Act, Badge, Loading, Notice, Refusal, html, useData, useId} from "../ui.js";

export function Inbox() {
  const {data, err, reload} = useData("/inbox?status=all", ["broadcasts", "*"]);
  const [note, setNote] = useState(null);
  if (!data) return html`<section class="screen"><h1>${t("inbox.title")}</h1><${Loading} err=${err} /></section>`;
  return html`<section class="screen">
    <h1>${t("inbox.title")}</h1>
    <${Notice} text=${note} />
    ${data.length === 0 ? html`<p class="muted">${t("inbox.empty")}</p>`
      : html`<ul class="cards">${data.map((it) => html`<li key=${it.id}>
          <${Item} it=${it} done=${(n) => { setNote(n); reload(); }} /></li>`)}</ul>`}
  </section>`;
}

function Item({it, done}) {
  const [src, setSrc] = useState(null);
  const [why, setWhy] = useState("");
  const [err, setErr] = useState(null);
  const whyId = useId("decline");
  const open = it.status === "inbox";
  return html`<article class="card">
    <h2>${it.title || "–"} <${Badge} s=${it.status} /></h2>
    <p class="muted">${[`${t("inbox.from")}: ${it.from_name || it.origin_area_id || t("area.country")}`,
      t("priority." + it.priority), dateTime(it.suggested_start_at), duration(it.duration_s)].join(" · ")}</p>
    ${it.decision_note && html`<p>${it.decision_note}</p>`}
    ${src ? html`<audio controls autoplay src=${src}></audio>`
      : html`<${Act} kind="secondary" action=${async () => setSrc(await audioUrl(it.content_id))} onError=${setErr}>${t("bulletin.listen")}<//>`}
    ${open && html`
      <label for=${whyId}>${t("inbox.reason")}</label>
      <input id=${whyId} value=${why} onInput=${(e) => setWhy(e.target.value)} />
      <${Refusal} err=${err} />
      <div class="row">
        <${Act} kind="primary" onError=${setErr}
          action=${async () => { await call(`/inbox/${it.id}/accept`, {method: "POST", json: {}}); done(t("inbox.accepted")); }}>${t("inbox.accept")}<//>
        <${Act} kind="secondary" disabled=${why.trim().length < 3} onError=${setErr}
          action=${async () => { await call(`/inbox/${it.id}/decline`, {method: "POST", json: {reason: why.trim()}}); done(t("inbox.declined")); }}>${t("inbox.decline")}<//>
      </div>`}
  </article>`;
}
