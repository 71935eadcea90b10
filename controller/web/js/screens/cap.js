// CAP alerts received from the disaster agencies' systems (or posted by hand), newest first:
// what each one did (aired where, cancelled what, refused why) and the Ack or Error sent back.
import {useState} from "preact/hooks";
import {dateTime, reason, t} from "../i18n.js";
import {Badge, Loading, html, useData} from "../ui.js";

const PAGE = 50;

/** one line a person reads for what the controller did with the document */
function outcome(m) {
  const o = m.outcome || {};
  if (m.code) return {s: "failed", label: t("cap.refused"), text: reason(m.code, o.params || {})};
  if (o.duplicate) return {s: "cancelled", label: t("cap.duplicate"), text: t("cap.duplicate_text")};
  if (m.msg_type === "Cancel") return {s: "cancelled", label: t("cap.cancel"), text: t("cap.cancelled_n", {n: (o.cancelled || []).length})};
  if (o.aired === false) return {s: "cancelled", label: t("cap.not_aired"), text: t("cap.status_" + (m.status || "Test"))};
  const n = (o.broadcasts || []).length || (o.broadcast_id ? 1 : 0);
  const text = m.msg_type === "Update" ? t("cap.updated_n", {n, replaced: (o.replaced || []).length}) : t("cap.aired_n", {n});
  return {s: "played", label: t("cap.aired"), text};
}

export function CapScreen() {
  const [limit, setLimit] = useState(PAGE);
  const {data, err} = useData(`/cap?limit=${limit}`, ["broadcasts"]);
  const [open, setOpen] = useState(null);
  return html`<section class="screen">
    <h1>${t("cap.title")}</h1>
    <p class="hint">${t("cap.hint")}</p>
    ${!data ? html`<${Loading} err=${err} />` : data.items.length === 0 ? html`<p class="muted">${t("cap.empty")}</p>` : html`
      <ul class="rows" id="capList">${data.items.map((m) => {
        const o = outcome(m);
        const ids = (m.outcome.broadcasts || []).map((b) => b.broadcast_id);
        if (!ids.length && m.outcome.broadcast_id) ids.push(m.outcome.broadcast_id);
        return html`<li key=${m.id} class="alert-row">
          <div class="row-main">
            <strong>${m.event || m.identifier || t("cap.unreadable")}</strong>
            <span class="muted">${t("cap.msg_" + (m.msg_type || "unknown"))} · ${m.sender || "–"} · ${dateTime(m.received_at)}</span>
            <span>${o.text}</span>
            ${ids.map((id) => html`<a class="go" href=${"#/bulletins/" + encodeURIComponent(id)}>${t("cap.see_bulletin")}</a>`)}
            <${Reply} m=${m} open=${open === m.id} onToggle=${(v) => setOpen(v ? m.id : null)} />
          </div>
          <div class="row-side"><${Badge} s=${o.s} label=${o.label} /></div></li>`;
      })}</ul>
      ${data.total > data.items.length && html`<div class="row"><button type="button" class="btn secondary"
        onClick=${() => setLimit(limit + PAGE)}>${t("cap.more", {n: data.total - data.items.length})}</button></div>`}`}
  </section>`;
}

/** the Ack or Error XML as it was sent back, fetched when opened */
function Reply({m, open, onToggle}) {
  const {data, err} = useData(open ? `/cap/${m.id}` : null, []);
  return html`<details open=${open} onToggle=${(e) => onToggle(e.target.open)}>
    <summary>${m.code ? t("cap.error_sent") : t("cap.ack_sent")}</summary>
    ${open && (!data ? html`<${Loading} err=${err} />` : html`<pre class="xml" lang="en" translate="no">${data.reply || "–"}</pre>`)}
  </details>`;
}
