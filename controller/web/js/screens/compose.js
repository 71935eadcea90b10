// Officer: make the audio (text read aloud, or a recording), listen, choose villages, once or
// weekly slots with exceptions, preview the schedule, send.
import {useEffect, useState} from "preact/hooks";
import {audioUrl, call} from "../api.js";
import {ZONE, dateTime, duration, t, time} from "../i18n.js";
import {Act, Loading, Notice, Refusal, html, inHome, useData, useId} from "../ui.js";
import {PlaceMap} from "../map.js";

const DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
const SPEEDS = [["slow", 0.85], ["normal", 1.0], ["fast", 1.15]];

/** the villages an account may target, grouped by commune: [{commune, villages}] */
export function villagesOf(me, areas) {
  const groups = {};
  for (const a of areas.list) {
    if (a.kind !== "village" || !inHome(me, areas, a)) continue;
    (groups[a.parent_id] = groups[a.parent_id] || []).push(a);
  }
  return Object.entries(groups).map(([cid, vs]) => ({
    commune: areas.byId[cid] || {id: cid, name: cid},
    villages: vs.sort((x, y) => x.name.localeCompare(y.name, "vi"))}))
    .sort((x, y) => x.commune.name.localeCompare(y.commune.name, "vi"));
}

function localInput(d) {  // a Date as the wall time of the zone, for <input type=datetime-local>
  const p = new Intl.DateTimeFormat("sv-SE", {timeZone: ZONE, year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit"}).format(d);
  return p.replace(" ", "T");
}

export function Compose({me, areas}) {
  const [kind, setKind] = useState("tts");
  const [text, setText] = useState("");
  const [speed, setSpeed] = useState(1.0);
  const [content, setContent] = useState(null);
  const [src, setSrc] = useState(null);
  const [title, setTitle] = useState("");
  const [whole, setWhole] = useState(true);
  const [chosen, setChosen] = useState(new Set());
  const [view, setView] = useState("list");
  const [mode, setMode] = useState("once");
  const [startAt, setStartAt] = useState(localInput(new Date(Date.now() + 15 * 60000)));
  const [days, setDays] = useState(new Set(["MO", "TU", "WE", "TH", "FR", "SA"]));
  const [times, setTimes] = useState("05:30, 17:00");
  const [exdates, setExdates] = useState("");
  const [priority, setPriority] = useState("normal");
  const [err, setErr] = useState(null);
  const [note, setNote] = useState(null);
  const [preview, setPreview] = useState(null);
  const groups = villagesOf(me, areas);
  const home = me.area_id ? (areas.byId[me.area_id] || {}).name || me.area_id : t("area.country");
  const ids = {text: useId(), speed: useId(), file: useId(), title: useId(), start: useId(),
               times: useId(), ex: useId(), prio: useId()};

  useEffect(() => () => src && URL.revokeObjectURL(src), [src]);
  const fail = (e) => { setErr(e); setNote(null); };

  const makeAudio = async () => {
    setErr(null);
    let c;
    if (kind === "tts") {
      c = await call("/contents/tts", {method: "POST", json: {text, speed}});
    } else {
      const f = document.getElementById(ids.file).files[0];
      if (!f) throw Object.assign(new Error(), {code: "audio_empty", params: {}, problems: []});
      const form = new FormData();
      form.append("file", f);
      c = await call("/contents", {method: "POST", form});
    }
    setContent(c);
    setSrc(await audioUrl(c.id));
    if (!title) setTitle(kind === "tts" ? text.slice(0, 60) : (c.source_name || ""));
  };

  const body = () => {
    if (!content) throw local("compose.need_audio");
    const picked = [...chosen].filter((id) => {  // a village inside a commune chosen whole is in already
      const a = areas.byId[id];
      return !(a && a.kind === "village" && chosen.has(a.parent_id));
    });
    const targets = {areas: whole ? [me.area_id || groups[0]?.commune.id].filter(Boolean) : picked};
    if (!targets.areas.length) throw local("compose.need_targets");
    const out = {content_id: content.id, targets, title, priority};
    if (priority === "emergency") return out;
    if (mode === "once") {
      out.start_at = startAt + ":00+07:00";
    } else {
      const hm = times.split(",").map((x) => x.trim()).filter(Boolean);
      if (!hm.length || hm.some((x) => !/^\d{1,2}:\d{2}$/.test(x))) throw local("compose.need_times");
      if (!days.size) throw local("compose.need_days");
      const byday = DAYS.filter((d) => days.has(d)).join(",");
      out.recurrence = {timezone: ZONE, rrule: hm.map((x) => {
        const [hh, mm] = x.split(":").map(Number);
        return `FREQ=WEEKLY;BYDAY=${byday};BYHOUR=${hh};BYMINUTE=${mm};BYSECOND=0`;
      }), exdates: exdates.split(",").map((x) => x.trim()).filter(Boolean)};
    }
    return out;
  };

  const doPreview = async () => {
    setErr(null); setNote(null);
    setPreview(await call("/broadcasts/preview", {method: "POST", json: body()}));
  };
  const send = async () => {
    setErr(null); setNote(null);
    const b = await call("/broadcasts", {method: "POST", json: body()});
    setNote(t(b.status === "pending_approval" ? "compose.sent_pending" : "compose.sent"));
    setPreview(null);
    location.hash = "#/bulletins/" + b.id;
  };

  const toggle = (set, setter, v) => { const n = new Set(set); n.has(v) ? n.delete(v) : n.add(v); setter(n); };

  return html`<section class="screen">
    <h1>${t("compose.title")}</h1>
    <div class="card">
      <fieldset class="choice">
        <legend>${t("compose.kind")}</legend>
        ${["tts", "upload", "library"].map((k) => html`<label class="pill">
          <input type="radio" name="kind" value=${k} checked=${kind === k}
            onChange=${() => { setKind(k); setContent(null); setSrc(null); }} /> ${t("compose.kind." + k)}</label>`)}
      </fieldset>
      ${kind === "library" ? html`<${Library} onPick=${async (c) => {
          setErr(null); setContent(c); setSrc(c ? await audioUrl(c.id) : null);
          if (c && !title) setTitle((c.text || c.source_name || "").slice(0, 60)); }} />`
      : kind === "tts" ? html`
        <label for=${ids.text}>${t("compose.text")}</label>
        <textarea id=${ids.text} rows="5" value=${text} aria-describedby=${ids.text + "-hint"}
          onInput=${(e) => { setText(e.target.value); setContent(null); }}></textarea>
        <p id=${ids.text + "-hint"} class="hint">${t("compose.text_hint")}</p>
        <label for=${ids.speed}>${t("compose.speed")}</label>
        <select id=${ids.speed} value=${speed} onChange=${(e) => { setSpeed(Number(e.target.value)); setContent(null); }}>
          ${SPEEDS.map(([k, v]) => html`<option value=${v}>${t("compose.speed." + k)}</option>`)}
        </select>` : html`
        <label for=${ids.file}>${t("compose.file")}</label>
        <input id=${ids.file} type="file" accept="audio/*" onChange=${() => setContent(null)} />`}
      ${kind !== "library" && html`<${Act} kind="secondary" action=${makeAudio} onError=${fail}
        disabled=${kind === "tts" && !text.trim()}>${t("compose.make")}<//>`}
      ${content && src && html`<div class="listen">
        <p>${t("compose.ready", {duration: duration(content.duration_s)})}</p>
        <audio controls src=${src} aria-label=${t("compose.listen")}></audio></div>`}
    </div>

    <div class="card">
      <label for=${ids.title}>${t("compose.title_label")}</label>
      <input id=${ids.title} value=${title} maxlength="200" onInput=${(e) => setTitle(e.target.value)} />
      <fieldset class="targets">
        <legend>${t("compose.targets")}</legend>
        <label class="check"><input type="checkbox" checked=${whole}
          onChange=${(e) => setWhole(e.target.checked)} /> ${t("compose.all_area", {name: home})}</label>
        ${!whole && html`<div class="chips" role="group" aria-label=${t("compose.view")}>
          ${["list", "map"].map((v) => html`<button type="button" class=${"chip" + (view === v ? " on" : "")}
            aria-pressed=${view === v ? "true" : "false"} onClick=${() => setView(v)}>${t("compose.view_" + v)}</button>`)}</div>`}
        ${!whole && view === "map" && html`<${TargetMap} groups=${groups} chosen=${chosen}
          onPick=${(id) => toggle(chosen, setChosen, id)} />`}
        ${!whole && view === "list" && groups.map((g) => html`<fieldset class="commune">
          <legend>${g.commune.name}</legend>
          ${groups.length > 1 && html`<label class="check"><input type="checkbox" checked=${chosen.has(g.commune.id)}
            onChange=${() => toggle(chosen, setChosen, g.commune.id)} /> ${t("compose.whole_commune", {name: g.commune.name})}</label>`}
          ${!chosen.has(g.commune.id) && html`<div class="grid-checks">
          ${g.villages.map((v) => html`<label class="check"><input type="checkbox" checked=${chosen.has(v.id)}
            onChange=${() => toggle(chosen, setChosen, v.id)} /> ${v.name}</label>`)}
          </div>`}</fieldset>`)}
      </fieldset>
      <label for=${ids.prio}>${t("compose.priority")}</label>
      <select id=${ids.prio} value=${priority} onChange=${(e) => setPriority(e.target.value)}>
        ${["normal", "priority", "emergency"].map((p) => html`<option value=${p}>${t("priority." + p)}</option>`)}
      </select>
      ${priority !== "emergency" && html`<fieldset class="choice">
        <legend>${t("compose.when")}</legend>
        ${["once", "weekly"].map((m) => html`<label class="pill"><input type="radio" name="mode" value=${m}
          checked=${mode === m} onChange=${() => setMode(m)} /> ${t("compose." + m)}</label>`)}
      </fieldset>
      ${mode === "once" ? html`
        <label for=${ids.start}>${t("compose.start_at")}</label>
        <input id=${ids.start} type="datetime-local" value=${startAt} onInput=${(e) => setStartAt(e.target.value)} />`
      : html`
        <fieldset class="days"><legend>${t("compose.days")}</legend>
          <div class="grid-days">${DAYS.map((d) => html`<label class="day">
            <input type="checkbox" checked=${days.has(d)} onChange=${() => toggle(days, setDays, d)} />
            <span title=${t("day.long." + d)}>${t("day." + d)}</span></label>`)}</div>
        </fieldset>
        <label for=${ids.times}>${t("compose.times")}</label>
        <input id=${ids.times} value=${times} inputmode="numeric" onInput=${(e) => setTimes(e.target.value)} />
        <label for=${ids.ex}>${t("compose.exdates")}</label>
        <input id=${ids.ex} value=${exdates} onInput=${(e) => setExdates(e.target.value)} />`}`}
    </div>

    <${Refusal} err=${err} />
    <${Notice} text=${note} />
    ${preview && html`<${Preview} p=${preview} />`}
    <div class="row sticky-actions">
      ${priority !== "emergency" && html`<${Act} kind="secondary" action=${doPreview} onError=${fail}>${t("compose.preview")}<//>`}
      <${Act} kind=${priority === "emergency" ? "danger" : "primary"} action=${send} onError=${fail}
        confirm=${priority === "emergency" ? t("compose.emergency_confirm") : null}>${t("compose.submit")}<//>
    </div>
  </section>`;
}

/** the villages on a map: tap to choose; a commune chosen whole is chosen on the map too */
function TargetMap({groups, chosen, onPick}) {
  const points = groups.flatMap((g) => g.villages.map((v) => ({
    id: v.id, name: v.name, lat: v.lat, lon: v.lon, cls: "village",
    on: chosen.has(v.id) || chosen.has(g.commune.id), disabled: chosen.has(g.commune.id),
    title: `${v.name}, ${g.commune.name}`})));
  const picked = points.filter((p) => p.on).map((p) => p.name);
  return html`<div>
    ${groups.length > 1 && html`<div class="grid-checks">${groups.map((g) => html`<label class="check">
      <input type="checkbox" checked=${chosen.has(g.commune.id)} onChange=${() => onPick(g.commune.id)} />
      ${t("compose.whole_commune", {name: g.commune.name})}</label>`)}</div>`}
    <${PlaceMap} points=${points} label=${t("compose.map_label")} onPick=${onPick} />
    ${!points.some((p) => p.lat != null) && html`<p class="muted">${t("compose.map_none")}</p>`}
    <p class="hint" aria-live="polite">${picked.length ? t("compose.map_chosen", {names: picked.join(", ")})
      : t("compose.map_tap")}</p>
  </div>`;
}

function local(key) {  // a refusal of the console's own, shown like the server's
  const e = new Error(key);
  e.code = "local"; e.params = {}; e.problems = []; e.local = t(key);
  return e;
}

function Preview({p}) {
  return html`<div class="card" aria-live="polite">
    <h2>${t("preview.title")}</h2>
    ${p.refusal && html`<${Refusal} err=${{code: p.refusal.code, params: p.refusal.params, problems: p.refusal.problems || []}} />`}
    <ul class="plain">${p.communes.map((c) => html`<li>
      <strong>${c.name}</strong>: ${c.delay_s > 0.5
        ? t("preview.after", {at: time(c.start), n: c.collisions.length})
        : t("preview.on_time", {at: dateTime(c.start)})}
    </li>`)}</ul>
  </div>`;
}

function Library({onPick}) {
  const {data, err} = useData("/contents?limit=50", []);
  const id = useId("library");
  if (!data) return html`<${Loading} err=${err} />`;
  if (data.length === 0) return html`<p class="muted">${t("compose.library_empty")}</p>`;
  return html`<label for=${id}>${t("compose.library_pick")}</label>
    <select id=${id} onChange=${(e) => onPick(data.find((c) => c.id === e.target.value) || null)}>
      <option value="">–</option>
      ${data.map((c) => html`<option value=${c.id}>${[(c.text || c.source_name || "–").slice(0, 50),
        duration(c.duration_s), dateTime(c.created_at)].join(" · ")}</option>`)}
    </select>`;
}
