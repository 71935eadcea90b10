// Leader: the approval queue. Listen first (the approval is bound to what was heard), then
// approve, or return it with a reason.
import {useState} from "preact/hooks";
import {audioUrl, call} from "../api.js";
import {dateTime, t} from "../i18n.js";
import {Act, Loading, Notice, Refusal, html, useData, useId} from "../ui.js";
import {repeatText} from "./bulletins.js";

export function Approvals({areas}) {
  const {data, err, reload} = useData("/broadcasts?limit=200", ["broadcasts", "*"]);
  const [note, setNote] = useState(null);
  if (!data) return html`<section class="screen"><h1>${t("approvals.title")}</h1><${Loading} err=${err} /></section>`;
  const waiting = data.filter((b) => b.status === "pending_approval");
  return html`<section class="screen">
    <h1>${t("approvals.title")}</h1>
    <${Notice} text=${note} />
    ${waiting.length === 0 ? html`<p class="muted">${t("approvals.empty")}</p>`
      : html`<ul class="cards">${waiting.map((b) => html`<li key=${b.id}>
          <${Pending} b=${b} areas=${areas} done=${(n) => { setNote(n); reload(); }} /></li>`)}</ul>`}
  </section>`;
}

function Pending({b, areas, done}) {
  const [src, setSrc] = useState(null);
  const [heard, setHeard] = useState(null);
  const [why, setWhy] = useState("");
  const [err, setErr] = useState(null);
  const whyId = useId("why");
  const listen = async () => { setSrc(await audioUrl(b.content_id)); setHeard(b.content_id); };
  return html`<article class="card">
    <h2>${b.title || "–"}</h2>
    <p class="muted">${[b.created_by, repeatText(b.recurrence) || dateTime(b.start_at),
      (b.targets.areas || []).map((a) => (areas.byId[a] || {}).name || a).join(", ")].join(" · ")}</p>
    ${src ? html`<audio controls autoplay src=${src}></audio>`
      : html`<${Act} kind="secondary" action=${listen} onError=${setErr}>${t("bulletin.listen")}<//>`}
    ${!heard && html`<p class="hint">${t("approvals.listen_first")}</p>`}
    <label for=${whyId}>${t("approvals.reason")}</label>
    <input id=${whyId} value=${why} onInput=${(e) => setWhy(e.target.value)} />
    <${Refusal} err=${err} />
    <div class="row">
      <${Act} kind="primary" disabled=${!heard} onError=${setErr}
        action=${async () => { await call(`/broadcasts/${b.id}/approve`, {method: "POST", json: {content_id: heard}}); done(t("approvals.approved")); }}>
        ${t("approvals.approve")}<//>
      <${Act} kind="secondary" disabled=${why.trim().length < 3} onError=${setErr}
        action=${async () => { await call(`/broadcasts/${b.id}/reject`, {method: "POST", json: {reason: why.trim()}}); done(t("approvals.returned")); }}>
        ${t("approvals.return")}<//>
    </div>
  </article>`;
}

