// Technician: the fleet with filters and pages, and one cluster's page: live state and why,
// speakers, telemetry charts from the history API, remote actions and their outcome.
import {useEffect, useState} from "preact/hooks";
import {call} from "../api.js";
import {ago, cause, dateTime, day, lang, month, state, t, time} from "../i18n.js";
import {Act, Badge, Loading, Notice, Pager, Refusal, html, useData, useId} from "../ui.js";
import {PlaceMap} from "../map.js";

const PAGE = 50;
const TOPICS = ["clusters", "*"];

export function Fleet({me, areas}) {
  const [st, setSt] = useState("");
  const [area, setArea] = useState("");
  const [problem, setProblem] = useState("");
  const [typed, setTyped] = useState("");
  const [q, setQ] = useState("");
  const [page, setPage] = useState(0);
  const [view, setView] = useState("list");
  const ids = {st: useId(), v: useId(), p: useId(), q: useId()};
  useEffect(() => { const h = setTimeout(() => setQ(typed.trim()), 300); return () => clearTimeout(h); }, [typed]);
  useEffect(() => setPage(0), [st, area, problem, q]);
  // the server filters and pages (a province has thousands): a map shows up to 500 at once
  const size = view === "map" ? 500 : PAGE;
  const query = new URLSearchParams({limit: size, offset: view === "map" ? 0 : page * PAGE});
  for (const [k, v] of [["state", st], ["area_id", area], ["problem", problem], ["q", q]]) if (v) query.set(k, v);
  const {data, err} = useData(`/fleet?${query}`, TOPICS, {keep: true});
  if (!data) return html`<section class="screen"><h1>${t("fleet.title")}</h1><${Loading} err=${err} /></section>`;
  const sum = data.summary;
  const name = (id) => (areas.byId[id] || {}).name || id;
  // each area with boards, and (in a province) each commune above them
  const places = [...new Set(sum.areas.flatMap((a) => {
    const p = (areas.byId[a.area_id] || {}).parent_id;
    return p && (areas.byId[p] || {}).kind === "commune" && areas.byId[p].id !== me.area_id ? [p, a.area_id] : [a.area_id];
  }))].map((id) => ({id, name: (areas.byId[id] || {}).kind === "commune" ? t("fleet.whole", {name: name(id)}) : name(id)}))
    .sort((a, b) => a.name.localeCompare(b.name, "vi"));
  const problems = sum.problems.map((p) => p.code);
  const shown = data.items;
  const total = data.total;
  return html`<section class="screen">
    <h1>${t("fleet.title")}</h1>
    <p class="summary" id="fleetSummary">${t("fleet.summary", sum)}</p>
    <${NextSlot} />
    <${Availability} me=${me} />
    <div class="filters">
      <div><label for=${ids.st}>${t("fleet.filter_state")}</label>
        <select id=${ids.st} value=${st} onChange=${(e) => setSt(e.target.value)}>
          <option value="">${t("fleet.any")}</option>
          ${["offline", "degraded", "online", "unprovisioned"].map((s) => html`<option value=${s}>${state(s)}</option>`)}
        </select></div>
      <div><label for=${ids.v}>${t("fleet.filter_village")}</label>
        <select id=${ids.v} value=${area} onChange=${(e) => setArea(e.target.value)}>
          <option value="">${t("fleet.any")}</option>
          ${places.map((v) => html`<option value=${v.id}>${v.name}</option>`)}
        </select></div>
      <div><label for=${ids.p}>${t("fleet.filter_cause")}</label>
        <select id=${ids.p} value=${problem} onChange=${(e) => setProblem(e.target.value)}>
          <option value="">${t("fleet.any")}</option>
          ${problems.map((p) => html`<option value=${p}>${cause({code: p, subject: "…"})}</option>`)}
        </select></div>
      <div><label for=${ids.q}>${t("fleet.search")}</label>
        <input id=${ids.q} type="search" value=${typed} onInput=${(e) => setTyped(e.target.value)} /></div>
    </div>
    <div class="chips" role="group" aria-label=${t("fleet.view")}>
      ${["list", "map"].map((v) => html`<button type="button" class=${"chip" + (view === v ? " on" : "")}
        aria-pressed=${view === v ? "true" : "false"} onClick=${() => setView(v)}>${t("fleet.view_" + v)}</button>`)}</div>
    ${view === "map" && html`<${PlaceMap} label=${t("fleet.map_label")} href=${(id) => "#/fleet/" + encodeURIComponent(id)}
      points=${shown.map((c) => ({id: c.id, name: c.id, lat: c.lat, lon: c.lon, cls: "st-" + c.state,
                                  title: `${c.name}: ${state(c.state)}`}))}
      legend=${["offline", "degraded", "online"].map((s) => html`<${Badge} s=${s} />`)} />`}
    ${view === "list" && html`<ul class="rows" id="clusterList">${shown.map((c) => html`<li key=${c.id}>
      <a class="row-link" href=${"#/fleet/" + encodeURIComponent(c.id)}>
        <span class="row-main"><strong>${c.name}</strong>
          <span class="muted">${c.id} · ${(areas.byId[c.area_id] || {}).name || "–"}</span>
          ${(c.causes || []).length > 0 && html`<span class="cause">${c.causes.map((x) => cause(x)).join("; ")}</span>`}</span>
        <span class="row-side"><${Badge} s=${c.state} />
          <span class="muted small">${ago(c.last_seen)}</span></span>
      </a></li>`)}</ul>`}
    ${view === "list" && total === 0 && html`<p class="muted">${t("fleet.none")}</p>`}
    ${view === "map" && total > shown.length && html`<p class="hint">${t("fleet.map_some", {n: shown.length, total})}</p>`}
    ${view === "list" && html`<${Pager} page=${page} size=${PAGE} total=${total} onPage=${setPage} />`}
  </section>`;
}

function Chart({points, field, label}) {
  const vals = points.map((p) => p[field]).filter((v) => v != null);
  if (vals.length < 2) return null;
  const w = 320, hgt = 80, min = Math.min(...vals), max = Math.max(...vals), span = max - min || 1;
  const xy = points.filter((p) => p[field] != null).map((p, i, all) =>
    `${(i / (all.length - 1)) * w},${hgt - 4 - ((p[field] - min) / span) * (hgt - 8)}`).join(" ");
  return html`<figure class="chart">
    <figcaption>${label}: ${vals[vals.length - 1]} (${min}–${max})</figcaption>
    <svg viewBox=${`0 0 ${w} ${hgt}`} role="img" aria-label=${label} preserveAspectRatio="none">
      <polyline points=${xy} fill="none" stroke="currentColor" stroke-width="2" /></svg>
  </figure>`;
}

function ActionOutcome({id}) {
  const {data, reload} = useData(`/actions/${id}`, ["actions", "*"]);
  useEffect(() => {  // an action answers within seconds: follow it until it is settled
    if (data && data.results.every((r) => ["done", "failed", "timed_out"].includes(r.state))) return;
    const h = setTimeout(reload, 1500);
    return () => clearTimeout(h);
  }, [data]);
  if (!data) return null;
  return html`<div class="outcome" role="status">
    ${data.results.map((r) => html`<p><strong>${t("action." + data.kind)}</strong>${": "}
      ${t("action.state." + r.state)}${r.reason && lang === "en" ? ` (${r.reason})` : ""}</p>
      ${r.result && r.result.speakers && html`<ul class="plain" id="selfTestResult">
        ${r.result.speakers.map((s) => html`<li class=${s.state === "ok" ? "ok" : "bad"}>
          ${s.state === "ok" ? t("selftest.ok", s) : t("selftest.bad", {index: s.index, state: state(s.state)})}</li>`)}
      </ul>`}`)}
  </div>`;
}

export function ClusterPage({id, me}) {
  const {data: c, err} = useData(`/clusters/${encodeURIComponent(id)}`, TOPICS);
  const [since] = useState(() => new Date(Date.now() - 24 * 3600e3).toISOString());
  const {data: hist} = useData(`/clusters/${encodeURIComponent(id)}/telemetry?from=${encodeURIComponent(since)}`, []);
  const [actErr, setActErr] = useState(null);
  const [actions, setActions] = useState([]);
  const [vol, setVol] = useState(80);
  const volId = useId("vol");
  if (!c) return html`<section class="screen"><a href="#/fleet" class="back">${t("common.back")}</a><${Loading} err=${err} /></section>`;
  const mayAct = ["admin", "leader", "technician"].includes(me.role);
  const act = (kind, params = {}) => async () => {
    setActErr(null);
    const a = await call(`/clusters/${encodeURIComponent(c.id)}/actions`, {method: "POST", json: {kind, params}});
    setActions((xs) => [a.id, ...xs].slice(0, 5));
  };
  const tele = c.telemetry || {};
  const points = (hist && hist.points) || [];
  return html`<section class="screen">
    <a href="#/fleet" class="back">${t("common.back")}</a>
    <h1>${c.name || c.id} <span class="muted small">${c.id}</span></h1>
    <div class="card">
      <dl class="facts">
        <dt>${t("cluster.state")}</dt><dd><${Badge} s=${c.state} /> <span class="muted">${dateTime(c.state_since)}</span></dd>
        <dt>${t("cluster.why")}</dt><dd>${c.state_code ? t("state_code." + c.state_code) : "–"}</dd>
        <dt>${t("fleet.last_seen")}</dt><dd>${ago(c.last_seen)}</dd>
        ${tele.link && tele.link.rssi_dbm != null && html`<dt>${t("fleet.signal")}</dt>
          <dd>${tele.link.rssi_dbm} dBm (${tele.link.type})</dd>`}
        ${tele.power && html`<dt>${t("fleet.power")}</dt><dd>${t("power." + tele.power.source)}${
          tele.power.battery_pct != null ? ` · ${t("telemetry.battery_pct")}: ${tele.power.battery_pct}` : ""}</dd>`}
        ${tele.amp_temp_c != null && html`<dt>${t("telemetry.temp_c")}</dt><dd>${tele.amp_temp_c}</dd>`}
        ${tele.volume_pct != null && html`<dt>${t("telemetry.volume_pct")}</dt><dd>${tele.volume_pct}</dd>`}
        <dt>${t("fleet.firmware")}</dt><dd>${c.firmware || "–"}</dd>
      </dl>
      ${(c.causes || []).length > 0 && html`<ul class="plain causes">${c.causes.map((x) => html`<li class="bad">${cause(x)}</li>`)}</ul>`}
    </div>
    <div class="card">
      <h2>${t("fleet.speakers")}</h2>
      <ul class="plain speakers">${c.speakers.map((s) => html`<li class="row wrap">
        <span>${s.name} <${Badge} s=${c.state === "offline" ? "unknown" : s.state} /></span>
        ${mayAct && c.state !== "offline" && html`<${Act} kind="secondary small" onError=${setActErr}
          action=${act("set_speaker", {index: s.index, muted: s.state !== "muted"})}>
          ${s.state === "muted" ? t("action.unmute") : t("action.mute")}<//>`}</li>`)}</ul>
    </div>
    ${mayAct && html`<div class="card">
      <h2>${t("cluster.actions")}</h2>
      <div class="row wrap">
        <${Act} kind="primary" action=${act("self_test")} onError=${setActErr}>${t("action.self_test")}<//>
        <${Act} kind="secondary" action=${act("report_now")} onError=${setActErr}>${t("action.report_now")}<//>
        <${Act} kind="danger" confirm=${t("action.reboot_confirm")} action=${act("reboot")} onError=${setActErr}>${t("action.reboot")}<//>
      </div>
      <div class="row wrap">
        <div><label for=${volId}>${t("action.volume")}</label>
          <input id=${volId} type="number" min="0" max="100" value=${vol} onInput=${(e) => setVol(Number(e.target.value))} /></div>
        <${Act} kind="secondary" action=${act("set_volume", {volume_pct: vol})} onError=${setActErr}>${t("action.set_volume")}<//>
      </div>
      <${Refusal} err=${actErr} />
      ${actions.map((a) => html`<${ActionOutcome} key=${a} id=${a} />`)}
    </div>`}
    <div class="card">
      <h2>${t("cluster.telemetry")}</h2>
      ${points.length < 2 ? html`<p class="muted">${t("cluster.no_history")}</p>` : html`
        <${Chart} points=${points} field="rssi_avg" label=${t("telemetry.rssi_dbm")} />
        <${Chart} points=${points} field="amp_temp_max" label=${t("telemetry.temp_c")} />
        <${Chart} points=${points} field="battery_min" label=${t("telemetry.battery_pct")} />
        <p class="muted small">${time(points[0].t)} – ${time(points[points.length - 1].t)}</p>`}
    </div>
    <${Notice} text=${null} />
  </section>`;
}

/** the next slot of any live bulletin, and which clusters will not play it, and why */
function NextSlot() {
  const {data: list} = useData("/broadcasts?limit=50", ["broadcasts"]);
  const now = Date.now();
  const next = (list || []).filter((b) => ["scheduled", "active"].includes(b.status))
    .map((b) => ({b, at: (b.next_slots || []).map((x) => new Date(x).getTime()).find((x) => x > now)}))
    .filter((x) => x.at).sort((x, y) => x.at - y.at)[0];
  const {data: r} = useData(next ? `/broadcasts/${next.b.id}/readiness` : null, ["clusters"]);
  if (!next || !r) return null;
  const bad = r.clusters.filter((c) => !c.will_play);
  return html`<div class="card" id="readiness">
    <h2>${t("readiness.title")}</h2>
    <p><a href=${"#/bulletins/" + next.b.id}>${next.b.title || "–"}</a> · ${dateTime(r.slot)}</p>
    <p class=${bad.length ? "bad" : "ok"}><strong>${t("readiness.will_play", {n: r.will_play, of: r.targeted})}</strong></p>
    ${bad.length > 0 && html`<ul class="plain">${bad.map((c) => html`<li>
      <a href=${"#/fleet/" + encodeURIComponent(c.cluster_id)}>${c.cluster_id}</a>: ${
        (c.problems || []).map((p) => t("readiness." + p.code, p.params)).join("; ")}</li>`)}</ul>`}
  </div>`;
}

/** uptime of the account's area, per day over the last week */
function Availability({me}) {
  const [by, setBy] = useState("day");
  const area = me.area_id ? `&area_id=${encodeURIComponent(me.area_id)}` : "";
  // a month view starts on the first of the month eleven months back (the server's zone)
  const from = new Date(); from.setMonth(from.getMonth() - 11, 1); from.setHours(0, 0, 0, 0);
  const span = by === "month" ? `&from=${encodeURIComponent(from.toISOString())}` : "";
  const {data} = useData(`/reports/availability?granularity=${by}${span}${area}`, []);
  // the table says what the answer is (not what was just asked for and has not come yet)
  const g = data && data.granularity;
  const label = (p) => (g === "month" ? month(p.start) : day(p.start));
  const delivered = (p) => {
    const n = p.clusters.reduce((a, c) => a + c.deliveries_targeted, 0);
    return n ? (p.clusters.reduce((a, c) => a + c.deliveries_played, 0) / n * 100).toFixed(1) + " %" : "–";
  };
  return html`<details class="card" id="availability">
    <summary><strong>${t("availability.title")}</strong></summary>
    <div class="row wrap" role="group">
      ${["day", "month"].map((g) => html`<button type="button" class=${"btn small " + (by === g ? "primary" : "secondary")}
        aria-pressed=${by === g} onClick=${() => setBy(g)}>${t("availability.by_" + g)}</button>`)}</div>
    ${!data ? html`<${Loading} />` : html`<table class="proof"><thead><tr>
      <th scope="col">${t(g === "month" ? "availability.month" : "availability.day")}</th>
      <th scope="col">${t("availability.uptime")}</th><th scope="col">${t("availability.delivered")}</th></tr></thead>
    <tbody>${data.periods.map((p) => html`<tr><th scope="row">${label(p)}</th>
      <td>${p.availability == null ? "–" : (p.availability * 100).toFixed(1) + " %"}</td>
      <td>${delivered(p)}</td></tr>`)}</tbody></table>`}
  </details>`;
}
