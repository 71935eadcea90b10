// Live: speak from the phone to the whole area or chosen villages. The microphone is recorded
// by the browser (MediaRecorder, WebM/Opus, 100 ms pieces) and sent over a WebSocket to the
// controller, which stamps, signs and fans it out (protocol §6.1); boards hear it
// `latency_ms` after it arrives. What is said before the countdown ends is not aired.
import {useEffect, useRef, useState} from "preact/hooks";
import {call} from "../api.js";
import {t} from "../i18n.js";
import {Act, Notice, Refusal, confirmDialog, html, useId} from "../ui.js";
import {villagesOf} from "./compose.js";

export function Live({me, areas}) {
  const groups = villagesOf(me, areas);
  const [whole, setWhole] = useState(true);
  const [chosen, setChosen] = useState(new Set());
  const [priority, setPriority] = useState("normal");
  const [state, setState] = useState("idle");  // idle | starting | countdown | on_air | ending
  const [left, setLeft] = useState(0);
  const [elapsed, setElapsed] = useState(0);
  const [err, setErr] = useState(null);
  const [note, setNote] = useState(null);
  const session = useRef(null);
  const ids = {prio: useId()};
  const home = me.area_id ? (areas.byId[me.area_id] || {}).name || me.area_id : t("area.country");
  useEffect(() => () => hangUp(session.current), []);  // leaving the screen ends the live

  const start = async () => {
    setErr(null); setNote(null);
    const targets = {areas: whole ? [me.area_id || groups[0]?.commune.id].filter(Boolean) : [...chosen]};
    if (!targets.areas.length) { setErr({local: t("compose.need_targets")}); return; }
    if (priority === "emergency" && !(await confirmDialog(t("live.emergency_confirm"), {danger: true}))) return;
    let mic;
    try {
      mic = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true, noiseSuppression: true}});
    } catch (_) {
      setErr({local: t("live.no_mic")});
      return;
    }
    setState("starting");
    let live;
    try {
      live = await call("/live", {method: "POST", json: {targets, priority, title: t("live.title")}});
    } catch (e) {
      mic.getTracks().forEach((x) => x.stop());
      setState("idle");
      throw e;
    }
    const ws = new WebSocket(live.ingest_url + "&format=webm");
    ws.binaryType = "arraybuffer";
    const rec = new MediaRecorder(mic, {mimeType: "audio/webm;codecs=opus", audioBitsPerSecond: 32000});
    rec.ondataavailable = async (e) => { if (e.data.size && ws.readyState === 1) ws.send(await e.data.arrayBuffer()); };
    const s = session.current = {live, ws, rec, mic, timer: null};
    ws.onopen = () => rec.start(100);  // (warm: what comes before the start is not aired)
    ws.onclose = () => finish(s, "live.dropped");  // (after our own stop: s.done, nothing)
    const begin = new Date(live.start_at).getTime() - live.latency_ms;
    setState("countdown");
    s.timer = setInterval(() => {
      const now = Date.now();
      if (now < begin) { setLeft(Math.ceil((begin - now) / 1000)); return; }
      setState("on_air");
      setElapsed(Math.floor((now - begin) / 1000));
    }, 200);
  };

  const finish = async (s, why = "live.ended") => {
    if (!s || s.done) return;
    s.done = true;
    setState("ending");
    hangUp(s);
    try { await call(`/live/${encodeURIComponent(s.live.id)}/stop`, {method: "POST"}); } catch (_) { /* ended already */ }
    session.current = null;
    setState("idle");
    setNote(t(why));
    location.hash = "#/bulletins/" + encodeURIComponent(s.live.broadcast_id);
  };

  const toggle = (id) => { const n = new Set(chosen); n.has(id) ? n.delete(id) : n.add(id); setChosen(n); };
  return html`<section class="screen">
    <h1>${t("live.heading")}</h1>
    <p class="hint">${t("live.hint")}</p>
    <${Refusal} err=${err} /><${Notice} text=${note} />
    ${state === "idle" || state === "starting" ? html`<div class="card">
      <fieldset class="targets"><legend>${t("compose.targets")}</legend>
        <label class="check"><input type="checkbox" checked=${whole} onChange=${(e) => setWhole(e.target.checked)} />
          ${t("compose.all_area", {name: home})}</label>
        ${!whole && groups.map((g) => html`<fieldset class="commune"><legend>${g.commune.name}</legend>
          <div class="grid-checks">${g.villages.map((v) => html`<label class="check">
            <input type="checkbox" checked=${chosen.has(v.id)} onChange=${() => toggle(v.id)} /> ${v.name}</label>`)}</div>
        </fieldset>`)}
      </fieldset>
      <label for=${ids.prio}>${t("compose.priority")}</label>
      <select id=${ids.prio} value=${priority} onChange=${(e) => setPriority(e.target.value)}>
        ${["normal", "priority", "emergency"].map((p) => html`<option value=${p}>${t("priority." + p)}</option>`)}
      </select>
      <div class="row"><${Act} kind="primary wide" action=${start} onError=${setErr}
        disabled=${state === "starting"}>${t("live.start")}<//></div>
    </div>` : html`<div class="card live-panel" id="livePanel" aria-live="polite">
      ${state === "countdown" && html`<p class="big">${t("live.countdown", {n: left})}</p>`}
      ${state === "on_air" && html`<p class="big on-air"><span class="dot on"></span>${t("live.on_air", {s: elapsed})}</p>`}
      ${state === "ending" && html`<p class="big">${t("live.ending")}</p>`}
      <button type="button" class="btn danger wide" onClick=${() => finish(session.current)}
        disabled=${state === "ending"}>${t("live.stop")}</button>
    </div>`}
  </section>`;
}

function hangUp(s) {
  if (!s) return;
  clearInterval(s.timer);
  try { if (s.rec.state !== "inactive") s.rec.stop(); } catch (_) { /* already */ }
  s.mic.getTracks().forEach((x) => x.stop());
  try { if (s.ws.readyState === 1) s.ws.send("stop"); s.ws.close(); } catch (_) { /* gone */ }
}
