// Admin (and, where the server allows, leaders and technicians): accounts, the area's
// broadcast policy, the network (boards waiting to be adopted, credentials, retiring) and
// the audit log with filters and CSV.
import {useEffect, useState} from "preact/hooks";
import {call, download} from "../api.js";
import {dateTime, has, t} from "../i18n.js";
import {Act, Badge, Loading, Notice, Refusal, html, inHome, useData, useId} from "../ui.js";

const ROLES = ["officer", "leader", "technician", "admin"];

function areaOptions(me, areas) {
  const order = {province: 0, district: 1, commune: 2, village: 3};
  return areas.list.filter((a) => inHome(me, areas, a) && a.kind !== "village")
    .sort((x, y) => order[x.kind] - order[y.kind] || x.name.localeCompare(y.name, "vi"));
}

export function Users({me, areas}) {
  const {data, err, reload} = useData("/users", []);
  const [form, setForm] = useState({username: "", password: "", role: "officer", area_id: me.area_id || ""});
  const [actErr, setActErr] = useState(null);
  const [note, setNote] = useState(null);
  const ids = {u: useId(), p: useId(), r: useId(), a: useId()};
  const set = (k) => (e) => setForm({...form, [k]: e.target.value});
  const create = async () => {
    setActErr(null);
    await call("/users", {method: "POST", json: {...form, area_id: form.area_id || null}});
    setNote(t("users.created", {username: form.username}));
    setForm({...form, username: "", password: ""});
    reload();
  };
  const toggle = (u) => async () => {
    await call(`/users/${encodeURIComponent(u.username)}`, {method: "PATCH", json: {disabled: !u.disabled}});
    reload();
  };
  return html`<section class="screen">
    <h1>${t("users.title")}</h1>
    <div class="card">
      <h2>${t("users.new")}</h2>
      <label for=${ids.u}>${t("login.username")}</label>
      <input id=${ids.u} value=${form.username} autocapitalize="none" onInput=${set("username")} />
      <label for=${ids.p}>${t("login.password")}</label>
      <input id=${ids.p} type="password" autocomplete="new-password" value=${form.password} onInput=${set("password")} />
      <p class="hint">${t("users.password_hint")}</p>
      <label for=${ids.r}>${t("users.role")}</label>
      <select id=${ids.r} value=${form.role} onChange=${set("role")}>
        ${ROLES.map((r) => html`<option value=${r}>${t("role." + r)}</option>`)}</select>
      <label for=${ids.a}>${t("users.area")}</label>
      <select id=${ids.a} value=${form.area_id} onChange=${set("area_id")}>
        ${areaOptions(me, areas).map((a) => html`<option value=${a.id}>${a.name}</option>`)}</select>
      <${Refusal} err=${actErr} />
      <${Notice} text=${note} />
      <div class="row"><${Act} kind="primary" action=${create} onError=${setActErr}>${t("users.create")}<//></div>
    </div>
    ${!data ? html`<${Loading} err=${err} />` : html`<ul class="rows" id="userList">${data.map((u) => html`<li key=${u.username}>
      <div class="alert-row"><div class="row-main"><strong>${u.username}</strong>
        <span class="muted">${t("role." + u.role)} · ${(areas.byId[u.area_id] || {}).name || t("area.country")}</span></div>
        <div class="row-side">${u.disabled ? html`<${Badge} s="cancelled" label=${t("users.disabled")} />` : html`<${Badge} s="online" label=${t("users.active")} />`}
          ${u.username !== me.username && html`<${Act} kind="secondary small" onError=${setActErr}
            confirm=${u.disabled ? null : t("users.disable_confirm", {username: u.username})}
            action=${toggle(u)}>${u.disabled ? t("users.enable") : t("users.disable")}<//>`}</div></div></li>`)}</ul>`}
  </section>`;
}

export function PolicyScreen({me, areas}) {
  const choices = areaOptions(me, areas);
  const [area, setArea] = useState(me.area_id || (choices[0] || {}).id);
  const {data, err, reload} = useData(area ? `/areas/${encodeURIComponent(area)}/policy` : null, []);
  const [draft, setDraft] = useState(null);
  const [actErr, setActErr] = useState(null);
  const [note, setNote] = useState(null);
  const ids = {area: useId(), qs: useId(), qe: useId(), cap: useId(), cs: useId(), ce: useId()};
  useEffect(() => {
    if (!data) return;  // a new area: useData clears the old area's answer before loading the new one
    const eff = data.effective || data;
    const q = (eff.quiet_hours || [])[0] || {start: "", end: ""};
    const c = (eff.volume_caps || [])[0] || {start: "", end: "", max_pct: ""};
    setDraft({area, approval_required: !!eff.approval_required, officers_send_emergencies: !!eff.officers_send_emergencies,
      qs: (q.start || "").slice(0, 5), qe: (q.end || "").slice(0, 5),
      cs: (c.start || "").slice(0, 5), ce: (c.end || "").slice(0, 5), cap: c.max_pct ?? ""});
  }, [data]);
  const save = async () => {
    setActErr(null); setNote(null);
    const d = draft;
    await call(`/areas/${encodeURIComponent(area)}/policy`, {method: "PUT", json: {
      approval_required: d.approval_required, officers_send_emergencies: d.officers_send_emergencies,
      quiet_hours: d.qs && d.qe ? [{start: d.qs, end: d.qe}] : [],
      volume_caps: d.cs && d.ce && d.cap !== "" ? [{start: d.cs, end: d.ce, max_pct: Number(d.cap)}] : []}});
    setNote(t("common.saved"));
    reload();
  };
  const upd = (k, v) => setDraft({...draft, [k]: v});
  // the form shows only the chosen area's values: never another area's, never a draft a late answer would overwrite
  const shown = draft && draft.area === area ? draft : null;
  return html`<section class="screen">
    <h1>${t("policy.title")}</h1>
    <div class="card" data-area=${shown ? area : ""}>
      <label for=${ids.area}>${t("users.area")}</label>
      <select id=${ids.area} value=${area} onChange=${(e) => { setDraft(null); setArea(e.target.value); }}>
        ${choices.map((a) => html`<option value=${a.id}>${a.name}</option>`)}</select>
      ${!shown ? html`<${Loading} err=${err} />` : html`
        <label class="check"><input type="checkbox" checked=${draft.approval_required}
          onChange=${(e) => upd("approval_required", e.target.checked)} /> ${t("policy.approval")}</label>
        <label class="check"><input type="checkbox" checked=${draft.officers_send_emergencies}
          onChange=${(e) => upd("officers_send_emergencies", e.target.checked)} /> ${t("policy.officer_emergency")}</label>
        <fieldset><legend>${t("policy.quiet")}</legend>
          <div class="filters"><div><label for=${ids.qs}>${t("policy.from")}</label>
            <input id=${ids.qs} type="time" value=${draft.qs} onInput=${(e) => upd("qs", e.target.value)} /></div>
          <div><label for=${ids.qe}>${t("policy.to")}</label>
            <input id=${ids.qe} type="time" value=${draft.qe} onInput=${(e) => upd("qe", e.target.value)} /></div></div>
        </fieldset>
        <fieldset><legend>${t("policy.cap")}</legend>
          <div class="filters"><div><label for=${ids.cs}>${t("policy.from")}</label>
            <input id=${ids.cs} type="time" value=${draft.cs} onInput=${(e) => upd("cs", e.target.value)} /></div>
          <div><label for=${ids.ce}>${t("policy.to")}</label>
            <input id=${ids.ce} type="time" value=${draft.ce} onInput=${(e) => upd("ce", e.target.value)} /></div>
          <div><label for=${ids.cap}>${t("policy.cap_pct")}</label>
            <input id=${ids.cap} type="number" min="0" max="100" value=${draft.cap} onInput=${(e) => upd("cap", e.target.value)} /></div></div>
        </fieldset>
        <${Refusal} err=${actErr} />
        <${Notice} text=${note} />
        <div class="row"><${Act} kind="primary" action=${save} onError=${setActErr}>${t("policy.save")}<//></div>`}
    </div>
  </section>`;
}

export function Network({me, areas}) {
  const {data: devices, err, reload} = useData("/devices/unregistered", ["clusters"]);
  const {data: clusters, reload: reloadClusters} = useData("/clusters", ["clusters"]);
  const [actErr, setActErr] = useState(null);
  const [note, setNote] = useState(null);
  const [village, setVillage] = useState("");
  const vid = useId("village");
  const villages = areas.list.filter((a) => a.kind === "village").sort((x, y) => x.name.localeCompare(y.name, "vi"));
  const adopt = (d) => async () => {
    await call("/clusters", {method: "POST", json: {id: d.id, area_id: village || villages[0].id}});
    setNote(t("network.adopted", {id: d.id})); reload(); reloadClusters();
  };
  const bundle = (c) => async () => {
    const b = await call(`/clusters/${encodeURIComponent(c.id)}/credentials`, {method: "POST"});
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([JSON.stringify(b, null, 2)], {type: "application/json"}));
    a.download = `${c.id}.json`; document.body.append(a); a.click(); a.remove();
    setNote(t("network.bundle_done", {id: c.id}));
  };
  const retire = (c) => async () => {
    await call(`/clusters/${encodeURIComponent(c.id)}`, {method: "DELETE"});
    setNote(t("network.retired", {id: c.id})); reloadClusters();
  };
  return html`<section class="screen">
    <h1>${t("network.title")}</h1>
    <${Refusal} err=${actErr} /><${Notice} text=${note} />
    <div class="card">
      <h2>${t("network.unregistered")}</h2>
      ${!devices ? html`<${Loading} err=${err} />` : devices.length === 0 ? html`<p class="muted">${t("network.none")}</p>` : html`
        <label for=${vid}>${t("network.into")}</label>
        <select id=${vid} value=${village} onChange=${(e) => setVillage(e.target.value)}>
          ${villages.map((v) => html`<option value=${v.id}>${v.name}</option>`)}</select>
        <ul class="plain">${devices.map((d) => html`<li class="row wrap"><span>${d.id} · ${dateTime(d.last_seen)}</span>
          <${Act} kind="secondary small" action=${adopt(d)} onError=${setActErr}>${t("network.adopt")}<//></li>`)}</ul>`}
    </div>
    <div class="card">
      <h2>${t("network.boards")}</h2>
      ${clusters && html`<ul class="plain" id="boardList">${clusters.filter((c) => c.provisioned).map((c) => html`<li class="row wrap">
        <span class="row-main"><strong>${c.name || c.id}</strong><span class="muted">${c.id} · ${(areas.byId[c.area_id] || {}).name || ""}</span></span>
        <${Act} kind="secondary small" confirm=${t("network.bundle_confirm", {id: c.id})} action=${bundle(c)} onError=${setActErr}>${t("network.bundle")}<//>
        <${Act} kind="danger small" confirm=${t("network.retire_confirm", {id: c.id})} action=${retire(c)} onError=${setActErr}>${t("network.retire")}<//>
      </li>`)}</ul>`}
    </div>
  </section>`;
}

function actionLabel(a) {
  // the audit's action is "login", "login_failed" or "<METHOD> <route template>": a catalog key
  return has("audit." + a) ? t("audit." + a) : t("audit.other");
}

export function Audit() {
  const [who, setWho] = useState("");
  const [what, setWhat] = useState("");
  const q = new URLSearchParams({limit: "100", ...(who ? {username: who} : {}), ...(what ? {action: what} : {})});
  const {data, err} = useData(`/audit?${q}`, []);
  const [actErr, setActErr] = useState(null);
  const ids = {who: useId(), what: useId()};
  return html`<section class="screen">
    <h1>${t("audit.title")}</h1>
    <div class="filters">
      <div><label for=${ids.who}>${t("audit.who")}</label>
        <input id=${ids.who} value=${who} onChange=${(e) => setWho(e.target.value.trim())} /></div>
      <div><label for=${ids.what}>${t("audit.what")}</label>
        <select id=${ids.what} value=${what} onChange=${(e) => setWhat(e.target.value)}>
          <option value="">${t("fleet.any")}</option>
          ${["login_failed", "cancel", "approve", "policy", "users", "actions", "credentials"].map((k) =>
            html`<option value=${k}>${t("audit.filter." + k)}</option>`)}
        </select></div>
    </div>
    <${Act} kind="secondary" action=${() => download(`/audit?${q}&format=csv`, "nhat-ky.csv")} onError=${setActErr}>${t("bulletin.csv")}<//>
    <${Refusal} err=${actErr} />
    ${!data ? html`<${Loading} err=${err} />` : data.length === 0 ? html`<p class="muted">${t("common.none")}</p>` : html`
      <ul class="rows" id="auditList">${data.map((e) => html`<li key=${e.id}><div class="alert-row"><div class="row-main">
        <strong>${actionLabel(e.action)}</strong>
        <span class="muted">${[e.username || "–", dateTime(e.at), e.client, e.target].filter(Boolean).join(" · ")}</span></div>
        <div class="row-side"><${Badge} s=${e.status < 400 ? "online" : "failed"}
          label=${`${t(e.status < 400 ? "audit.ok" : "audit.refused")} · ${e.status ?? ""}`} /></div></div></li>`)}</ul>`}
  </section>`;
}
