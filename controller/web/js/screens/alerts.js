// Alerts open and past, each said in Vietnamese from its code; acknowledge the open ones.
import {useState} from "preact/hooks";
import {call} from "../api.js";
import {ago, cause, dateTime, t} from "../i18n.js";
import {Act, Badge, Loading, Refusal, html, useData} from "../ui.js";

export function Alerts({me, areas}) {
  const [tab, setTab] = useState("open");
  const status = tab === "open" ? "open" : "resolved";
  const {data, err, reload} = useData(`/alerts?status=${status}&limit=100`, ["alerts", "*"]);
  const [actErr, setActErr] = useState(null);
  const mayAck = ["admin", "leader", "technician"].includes(me.role);
  return html`<section class="screen">
    <h1>${t("alerts.title")}</h1>
    <div class="chips" role="tablist">
      ${["open", "past"].map((k) => html`<button type="button" role="tab" class=${"chip" + (tab === k ? " on" : "")}
        aria-selected=${tab === k ? "true" : "false"} onClick=${() => setTab(k)}>${t("alerts." + k)}</button>`)}
    </div>
    <${Refusal} err=${actErr} />
    ${!data ? html`<${Loading} err=${err} />` : data.length === 0 ? html`<p class="muted">${t("alerts.empty")}</p>`
      : html`<ul class="rows" id="alertList">${data.map((a) => html`<li key=${a.id} class="alert-row">
        <div class="row-main">
          <strong>${cause(a)}</strong>
          <span class="muted">${a.cluster_id && html`<a href=${"#/fleet/" + encodeURIComponent(a.cluster_id)}>${a.cluster_id}</a>`}${
            [a.area_id && ((areas.byId[a.area_id] || {}).name || a.area_id),
             `${t("alerts.since")} ${dateTime(a.opened_at)} (${ago(a.opened_at)})`]
              .filter(Boolean).map((x) => " · " + x).join("")}</span>
          ${a.acknowledged_by && html`<span class="muted small">${t("alerts.acked", {by: a.acknowledged_by})}</span>`}
        </div>
        <div class="row-side"><${Badge} s=${"sev-" + a.severity} label=${t("severity." + a.severity)} />
          ${mayAck && a.status === "open" && html`<${Act} kind="secondary small" onError=${setActErr}
            action=${async () => { await call(`/alerts/${a.id}/ack`, {method: "POST"}); reload(); }}>${t("alerts.ack")}<//>`}
        </div></li>`)}</ul>`}
  </section>`;
}
