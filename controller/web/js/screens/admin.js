// Admin (and, where the server allows, leaders and technicians): accounts, the area's
// broadcast policy, the network (boards waiting to be adopted, credentials, retiring) and
// the audit log with filters and CSV.
import {useEffect, useState} from "preact/hooks";
import {call, download} from "../api.js";
import {dateTime, has, t} from "../i18n.js";
import {Act, Badge, Loading, Notice, Pager, Refusal, changed, html, inHome, useData, useId} from "../ui.js";

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
            action=${toggle(u)}>${u.disabled ? t("users.enable") : t("users.disable")}<//>`}</div></div>
        ${u.username !== me.username && html`<${EditUser} u=${u} me=${me} areas=${areas} onDone=${reload} onError=${setActErr} />`}</li>`)}</ul>`}
  </section>`;
}

/** an account's role and area, changed in place (its sessions end at once: the server says so) */
function EditUser({u, me, areas, onDone, onError}) {
  const [role, setRole] = useState(u.role);
  const [area, setArea] = useState(u.area_id || "");
  const ids = {r: useId(), a: useId()};
  const save = async () => {
    await call(`/users/${encodeURIComponent(u.username)}`, {method: "PATCH", json: {role, area_id: area || null}});
    onDone();
  };
  return html`<details class="edit-user"><summary>${t("users.edit")}</summary>
    <label for=${ids.r}>${t("users.role")}</label>
    <select id=${ids.r} value=${role} onChange=${(e) => setRole(e.target.value)}>
      ${ROLES.map((r) => html`<option value=${r}>${t("role." + r)}</option>`)}</select>
    <label for=${ids.a}>${t("users.area")}</label>
    <select id=${ids.a} value=${area} onChange=${(e) => setArea(e.target.value)}>
      ${u.area_id == null && html`<option value="">${t("area.country")}</option>`}
      ${areaOptions(me, areas).map((a) => html`<option value=${a.id}>${a.name}</option>`)}</select>
    <div class="row"><${Act} kind="primary small" action=${save} onError=${onError}
      confirm=${t("users.edit_confirm", {username: u.username})}>${t("users.save")}<//></div>
  </details>`;
}

const DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];  // the API's weekday numbers 0…6
const hhmm = (v) => (v || "").slice(0, 5);

/** the area chooser shared by the policy and thresholds screens: an area's form shows only
 *  that area's values, never another area's, never one a late answer would overwrite */
function useAreaForm(me, areas, pathOf, clean = (x) => x) {
  const choices = areaOptions(me, areas);
  const [area, setArea] = useState(me.area_id || (choices[0] || {}).id);
  const path = area ? pathOf(encodeURIComponent(area)) : null;
  const {data, err, reload} = useData(path, []);
  const [draft, setDraft] = useState(null);
  useEffect(() => { if (data) setDraft({area, touched: {}}); }, [data]);
  const id = useId();
  const chooser = html`<label for=${id}>${t("users.area")}</label>
    <select id=${id} value=${area} onChange=${(e) => { setDraft(null); setArea(e.target.value); }}>
      ${choices.map((a) => html`<option value=${a.id}>${a.name}</option>`)}</select>`;
  const shown = data && draft && draft.area === area ? draft : null;
  // a field shows what the area has now (its own value, else the one it inherits); what is saved
  // is the area's own override with only the fields the person changed replaced
  const val = (k) => (shown && k in shown.touched ? shown.touched[k] : (data.effective || {})[k]);
  const touch = (k, v) => setDraft({...draft, touched: {...draft.touched, [k]: v}});
  const body = () => clean({...(data.override || {}), ...shown.touched});
  return {area, path, data, err, reload, chooser, shown, val, touch, body};
}

export function PolicyScreen({me, areas}) {
  const f = useAreaForm(me, areas, (a) => `/areas/${a}/policy`, cleanPolicy);
  const [actErr, setActErr] = useState(null);
  const [note, setNote] = useState(null);
  const ids = {qs: useId(), qe: useId(), cap: useId(), cs: useId(), ce: useId(), len: useId()};
  const save = async () => {
    setActErr(null); setNote(null);
    await call(f.path, {method: "PUT", json: f.body()});
    setNote(t("common.saved"));
    f.reload();
  };
  let form = null;
  if (f.shown) {
    const q = (f.val("quiet_hours") || [])[0] || {start: "", end: ""};
    const c = (f.val("volume_caps") || [])[0] || {start: "", end: "", max_pct: ""};
    const slots = f.val("programme") || [];
    // a half-typed window stays on screen as typed; cleanPolicy sends only whole ones
    const setQuiet = (k, v) => f.touch("quiet_hours", [{start: hhmm(q.start), end: hhmm(q.end), [k]: v}]);
    const setCap = (k, v) => f.touch("volume_caps", [{start: hhmm(c.start), end: hhmm(c.end), max_pct: c.max_pct, [k]: v}]);
    const setSlot = (i, slot) => f.touch("programme", slots.map((x, j) => (j === i ? slot : x)).filter(Boolean));
    form = html`
      <label class="check"><input type="checkbox" checked=${!!f.val("approval_required")}
        onChange=${(e) => f.touch("approval_required", e.target.checked)} /> ${t("policy.approval")}</label>
      <label class="check"><input type="checkbox" checked=${!!f.val("officers_send_emergencies")}
        onChange=${(e) => f.touch("officers_send_emergencies", e.target.checked)} /> ${t("policy.officer_emergency")}</label>
      <fieldset><legend>${t("policy.quiet")}</legend>
        <div class="filters"><div><label for=${ids.qs}>${t("policy.from")}</label>
          <input id=${ids.qs} type="time" value=${hhmm(q.start)} onInput=${(e) => setQuiet("start", e.target.value)} /></div>
        <div><label for=${ids.qe}>${t("policy.to")}</label>
          <input id=${ids.qe} type="time" value=${hhmm(q.end)} onInput=${(e) => setQuiet("end", e.target.value)} /></div></div>
      </fieldset>
      <fieldset><legend>${t("policy.cap")}</legend>
        <div class="filters"><div><label for=${ids.cs}>${t("policy.from")}</label>
          <input id=${ids.cs} type="time" value=${hhmm(c.start)} onInput=${(e) => setCap("start", e.target.value)} /></div>
        <div><label for=${ids.ce}>${t("policy.to")}</label>
          <input id=${ids.ce} type="time" value=${hhmm(c.end)} onInput=${(e) => setCap("end", e.target.value)} /></div>
        <div><label for=${ids.cap}>${t("policy.cap_pct")}</label>
          <input id=${ids.cap} type="number" min="0" max="100" value=${c.max_pct ?? ""} onInput=${(e) => setCap("max_pct", e.target.value)} /></div></div>
      </fieldset>
      <fieldset id="programmeSlots"><legend>${t("policy.slots")}</legend>
        <p class="hint">${t("policy.slots_hint")}</p>
        ${slots.map((slot, i) => html`<${Slot} key=${i} slot=${slot} n=${i + 1}
          onChange=${(x) => setSlot(i, x)} onRemove=${() => setSlot(i, null)} />`)}
        ${slots.length < 8 && html`<button type="button" class="btn secondary"
          onClick=${() => f.touch("programme", [...slots, {at: "06:00", days: [0, 1, 2, 3, 4, 5]}])}>${t("policy.slot_add")}</button>`}
      </fieldset>
      <label for=${ids.len}>${t("policy.max_len")}</label>
      <input id=${ids.len} type="number" min="1" step="1" value=${Math.round((f.val("max_programme_s") || 0) / 60) || ""}
        onInput=${(e) => f.touch("max_programme_s", e.target.value ? Number(e.target.value) * 60 : null)} />
      <${Refusal} err=${actErr} />
      <${Notice} text=${note} />
      <div class="row"><${Act} kind="primary" action=${save} onError=${setActErr}>${t("policy.save")}<//></div>`;
  }
  return html`<section class="screen">
    <h1>${t("policy.title")}</h1>
    <div class="card" data-area=${f.shown ? f.area : ""}>
      ${f.chooser}
      ${form || html`<${Loading} err=${f.err} />`}
    </div>
  </section>`;
}

/** what the policy PUT takes: whole windows and slots only, times as HH:MM */
function cleanPolicy(p) {
  const out = {...p};
  if (p.quiet_hours) out.quiet_hours = p.quiet_hours.filter((w) => w.start && w.end);
  if (p.volume_caps) {
    out.volume_caps = p.volume_caps.filter((w) => w.start && w.end && w.max_pct !== "" && w.max_pct != null)
      .map((w) => ({...w, max_pct: Number(w.max_pct)}));
  }
  if (p.programme) out.programme = p.programme.filter((x) => x.at && x.days.length).map((x) => ({at: hhmm(x.at), days: x.days}));
  return out;
}

function Slot({slot, n, onChange, onRemove}) {
  const id = useId();
  const on = new Set(slot.days);
  const flip = (d) => onChange({...slot, days: on.has(d) ? slot.days.filter((x) => x !== d) : [...slot.days, d].sort()});
  return html`<div class="slot">
    <label for=${id}>${t("policy.slot", {n})}</label>
    <div class="row wrap"><input id=${id} type="time" value=${hhmm(slot.at)} onInput=${(e) => onChange({...slot, at: e.target.value})} />
      <button type="button" class="btn secondary small" onClick=${onRemove}>${t("policy.slot_remove")}</button></div>
    <div class="grid-days">${DAYS.map((d, i) => html`<label class="day">
      <input type="checkbox" checked=${on.has(i)} onChange=${() => flip(i)} /> ${t("day." + d)}</label>`)}</div>
  </div>`;
}

// the thresholds a technician tunes, in the order of the form, with their units
const THRESHOLDS = ["amp_temp_c", "rssi_dbm", "battery_pct", "clock_offset_ms", "storage_free_kb",
  "readiness_lead_min", "resolve_hold_s"];

export function ThresholdsScreen({me, areas}) {
  const f = useAreaForm(me, areas, (a) => `/areas/${a}/thresholds`);
  const [actErr, setActErr] = useState(null);
  const [note, setNote] = useState(null);
  const ids = Object.fromEntries(THRESHOLDS.map((k) => [k, useId()]));
  const save = async () => {
    setActErr(null); setNote(null);
    await call(f.path, {method: "PUT", json: f.body()});
    setNote(t("common.saved"));
    f.reload();
  };
  return html`<section class="screen">
    <h1>${t("thresholds.title")}</h1>
    <div class="card" data-area=${f.shown ? f.area : ""}>
      ${f.chooser}
      ${!f.shown ? html`<${Loading} err=${f.err} />` : html`
        <p class="hint">${t("thresholds.hint")}</p>
        ${THRESHOLDS.map((k) => html`<label for=${ids[k]}>${t("thresholds." + k)}</label>
          <input id=${ids[k]} type="number" value=${f.val(k) ?? ""} onInput=${(e) => f.touch(k, e.target.value === "" ? null : Number(e.target.value))} />`)}
        <${Refusal} err=${actErr} />
        <${Notice} text=${note} />
        <div class="row"><${Act} kind="primary" action=${save} onError=${setActErr}>${t("thresholds.save")}<//></div>`}
    </div>
  </section>`;
}

/** a village's id from its name, under its commune: "hd" + "Thôn Đồng Bông" → "hd-dong-bong" */
function villageId(commune, name) {
  const slug = name.normalize("NFD").replace(/[\u0300-\u036f]/g, "").replace(/đ/gi, "d").toLowerCase()
    .replace(/^(thon|xom|ap|ban|to dan pho|khu pho)\s+/, "").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  return `${commune}-${slug}`.slice(0, 64).replace(/-$/, "");
}

/** the villages of a commune: add one (by name, its place optional), rename one */
function Villages({me, areas, onError}) {
  const communes = areas.list.filter((a) => a.kind === "commune" && inHome(me, areas, a))
    .sort((x, y) => x.name.localeCompare(y.name, "vi"));
  const [commune, setCommune] = useState((communes[0] || {}).id || "");
  const [name, setName] = useState("");
  const [lat, setLat] = useState("");
  const [lon, setLon] = useState("");
  const [note, setNote] = useState(null);
  const ids = {c: useId(), n: useId(), la: useId(), lo: useId()};
  if (!communes.length) return null;
  const villages = areas.list.filter((a) => a.kind === "village" && a.parent_id === commune)
    .sort((x, y) => x.name.localeCompare(y.name, "vi"));
  const add = async () => {
    const v = {id: villageId(commune, name.trim()), name: name.trim(), kind: "village", parent_id: commune};
    if (lat !== "" && lon !== "") Object.assign(v, {lat: Number(lat), lon: Number(lon)});
    await call("/areas", {method: "POST", json: v});
    setNote(t("villages.added", {name: v.name})); setName(""); setLat(""); setLon("");
    changed(["areas"]);
  };
  return html`<div class="card" id="villages">
    <h2>${t("villages.title")}</h2>
    ${communes.length > 1 && html`<label for=${ids.c}>${t("villages.commune")}</label>
      <select id=${ids.c} value=${commune} onChange=${(e) => setCommune(e.target.value)}>
        ${communes.map((c) => html`<option value=${c.id}>${c.name}</option>`)}</select>`}
    <ul class="plain">${villages.map((v) => html`<${Village} key=${v.id} v=${v} onError=${onError} onDone=${setNote} />`)}</ul>
    <h3>${t("villages.new")}</h3>
    <label for=${ids.n}>${t("villages.name")}</label>
    <input id=${ids.n} value=${name} maxlength="200" onInput=${(e) => setName(e.target.value)} />
    <div class="filters"><div><label for=${ids.la}>${t("villages.lat")}</label>
      <input id=${ids.la} type="number" step="0.0001" min="-90" max="90" value=${lat} onInput=${(e) => setLat(e.target.value)} /></div>
    <div><label for=${ids.lo}>${t("villages.lon")}</label>
      <input id=${ids.lo} type="number" step="0.0001" min="-180" max="180" value=${lon} onInput=${(e) => setLon(e.target.value)} /></div></div>
    <${Notice} text=${note} />
    <div class="row"><${Act} kind="primary" disabled=${!name.trim()} action=${add} onError=${onError}>${t("villages.add")}<//></div>
  </div>`;
}

function Village({v, onError, onDone}) {
  const [name, setName] = useState(v.name);
  const id = useId();
  const save = async () => {
    await call(`/areas/${encodeURIComponent(v.id)}`, {method: "PATCH", json: {name: name.trim()}});
    onDone(t("villages.renamed", {name: name.trim()}));
    changed(["areas"]);
  };
  return html`<li class="row wrap">
    <label class="sr-only" for=${id}>${t("villages.name_of", {id: v.id})}</label>
    <input id=${id} class="grow" value=${name} maxlength="200" onInput=${(e) => setName(e.target.value)} />
    <${Act} kind="secondary small" disabled=${!name.trim() || name.trim() === v.name} action=${save} onError=${onError}>${t("villages.rename")}<//>
  </li>`;
}

export function Network({me, areas}) {
  const {data: devices, err, reload} = useData("/devices/unregistered", ["clusters"]);
  const [typed, setTyped] = useState("");
  const [q, setQ] = useState("");
  const [page, setPage] = useState(0);
  useEffect(() => { const h = setTimeout(() => { setQ(typed.trim()); setPage(0); }, 300); return () => clearTimeout(h); }, [typed]);
  const query = new URLSearchParams({provisioned: "true", limit: 50, offset: page * 50});
  if (q) query.set("q", q);
  const {data: boards, reload: reloadClusters} = useData(`/fleet?${query}`, ["clusters"], {keep: true});
  const qid = useId("search");
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
    <${Villages} me=${me} areas=${areas} onError=${setActErr} />
    <div class="card">
      <h2>${t("network.boards")}</h2>
      <label for=${qid}>${t("fleet.search")}</label>
      <input id=${qid} type="search" value=${typed} onInput=${(e) => setTyped(e.target.value)} />
      ${boards && html`<ul class="plain" id="boardList">${boards.items.map((c) => html`<li class="row wrap">
        <span class="row-main"><strong>${c.name || c.id}</strong><span class="muted">${c.id} · ${(areas.byId[c.area_id] || {}).name || ""}</span></span>
        <${Act} kind="secondary small" confirm=${t("network.bundle_confirm", {id: c.id})} action=${bundle(c)} onError=${setActErr}>${t("network.bundle")}<//>
        <${Act} kind="danger small" confirm=${t("network.retire_confirm", {id: c.id})} action=${retire(c)} onError=${setActErr}>${t("network.retire")}<//>
      </li>`)}</ul>
        <${Pager} page=${page} size=${50} total=${boards.total} onPage=${setPage} />`}
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
