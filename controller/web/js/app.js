// The console: one app, a screen set per role, Vietnamese first. Hash routes:
// #/compose #/programme #/bulletins[/id] #/approvals #/inbox #/fleet[/id] #/alerts #/users #/policy
// #/network #/audit
import {render} from "preact";
import {useEffect, useState} from "preact/hooks";
import * as api from "./api.js";
import {lang, setLang, t} from "./i18n.js";
import {DialogHost, Refusal, changed, html, onChanged, useId} from "./ui.js";
import {Compose} from "./screens/compose.js";
import {Bulletins, Bulletin} from "./screens/bulletins.js";
import {Approvals} from "./screens/approvals.js";
import {Inbox} from "./screens/inbox.js";
import {Fleet, ClusterPage} from "./screens/fleet.js";
import {Alerts} from "./screens/alerts.js";
import {Programme} from "./screens/programme.js";
import {CapScreen} from "./screens/cap.js";
import {Live} from "./screens/live.js";
import {Audit, Network, PolicyScreen, ThresholdsScreen, Users} from "./screens/admin.js";

const NAV = {
  officer: ["compose", "live", "programme", "bulletins", "inbox"],
  leader: ["approvals", "live", "programme", "bulletins", "compose", "inbox", "cap", "alerts", "policy", "audit"],
  technician: ["fleet", "alerts", "network", "thresholds", "bulletins"],
  admin: ["bulletins", "programme", "compose", "live", "approvals", "inbox", "cap", "fleet", "alerts", "users",
          "policy", "thresholds", "network", "audit"],
};

function useRoute() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const fn = () => setHash(location.hash);
    addEventListener("hashchange", fn);
    return () => removeEventListener("hashchange", fn);
  }, []);
  const [, name = "", id = ""] = hash.split("/");
  return {name, id: decodeURIComponent(id)};
}

function Login({notice, onIn}) {
  const [err, setErr] = useState(null);
  const [busy, setBusy] = useState(false);
  const u = useId("login"), p = useId("login");
  const submit = async (e) => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    const form = e.target;
    try {
      await api.login(form.username.value, form.password.value);
      form.password.value = "";
      onIn();
    } catch (x) {
      setErr(x);
      form.password.value = "";
    } finally { setBusy(false); }
  };
  return html`<main id="login" class="login">
    <h1>${t("app.title")}</h1>
    <form id="loginForm" onSubmit=${submit} class="card">
      <h2>${t("login.title")}</h2>
      ${notice && html`<p class="notice" role="status">${t(notice)}</p>`}
      <label for=${u}>${t("login.username")}</label>
      <input id=${u} name="username" autocomplete="username" required autocapitalize="none" />
      <label for=${p}>${t("login.password")}</label>
      <input id=${p} name="password" type="password" autocomplete="current-password" required />
      <div id="loginMsg" aria-live="polite">${err && html`<${Refusal} err=${err} />`}</div>
      <button class="btn primary wide" disabled=${busy}>${t("login.submit")}</button>
    </form>
  </main>`;
}

/** the server's pushed changes (Server-Sent Events over fetch: the token goes in a header) */
function useEvents(enabled) {
  const [live, setLive] = useState(false);
  useEffect(() => {
    if (!enabled) return;
    let stop = false, ctrl = null, wait = 1000;
    (async () => {
      while (!stop) {
        ctrl = new AbortController();
        try {
          const r = await fetch(api.API + "/events", {headers: {Authorization: "Bearer " + api.token()},
                                                      signal: ctrl.signal});
          if (r.status === 401) { await api.call("/users/me").catch(() => {}); }
          if (!r.ok || !r.body) throw new Error(String(r.status));
          setLive(true);
          wait = 1000;
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = "";
          for (;;) {
            const {value, done} = await reader.read();
            if (done) break;
            buf += value;
            let cut;
            while ((cut = buf.indexOf("\n\n")) >= 0) {
              const block = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("");
              if (data) { try { changed(JSON.parse(data).topics || []); } catch (_) { /* ignored */ } }
            }
          }
        } catch (_) { /* reconnect below */ }
        setLive(false);
        if (stop) break;
        await new Promise((res) => setTimeout(res, wait));
        wait = Math.min(wait * 2, 30000);
        changed(["*"]);  // whatever was missed while away
      }
    })();
    return () => { stop = true; ctrl && ctrl.abort(); };
  }, [enabled]);
  return live;
}

function Shell({me, areas}) {
  const route = useRoute();
  const live = useEvents(true);
  const nav = NAV[me.role] || NAV.officer;
  const name = nav.includes(route.name) ? route.name : nav[0];
  useEffect(() => { if (route.name !== name && !route.id) location.replace("#/" + name); }, [name]);
  const ctx = {me, areas};
  let screen;
  if (name === "compose") screen = html`<${Compose} ...${ctx} />`;
  else if (name === "bulletins") screen = route.id ? html`<${Bulletin} id=${route.id} ...${ctx} />` : html`<${Bulletins} ...${ctx} />`;
  else if (name === "approvals") screen = html`<${Approvals} ...${ctx} />`;
  else if (name === "inbox") screen = html`<${Inbox} ...${ctx} />`;
  else if (name === "fleet") screen = route.id ? html`<${ClusterPage} id=${route.id} ...${ctx} />` : html`<${Fleet} ...${ctx} />`;
  else if (name === "alerts") screen = html`<${Alerts} ...${ctx} />`;
  else if (name === "programme") screen = html`<${Programme} ...${ctx} />`;
  else if (name === "users") screen = html`<${Users} ...${ctx} />`;
  else if (name === "policy") screen = html`<${PolicyScreen} ...${ctx} />`;
  else if (name === "live") screen = html`<${Live} ...${ctx} />`;
  else if (name === "cap") screen = html`<${CapScreen} ...${ctx} />`;
  else if (name === "thresholds") screen = html`<${ThresholdsScreen} ...${ctx} />`;
  else if (name === "network") screen = html`<${Network} ...${ctx} />`;
  else if (name === "audit") screen = html`<${Audit} ...${ctx} />`;
  const area = me.area_id ? (areas.byId[me.area_id] || {}).name || me.area_id : t("area.country");
  return html`<div id="app">
    <a class="skip" href="#main">${t("app.skip")}</a>
    <header class="top">
      <div class="brand">Loa</div>
      <div id="who" class="who">${me.username}</div>
      <div class="who-detail">${t("role." + me.role)} · ${area}</div>
      <button class="btn ghost small" onClick=${() => { setLang(lang === "vi" ? "en" : "vi"); location.reload(); }}>${t("nav.lang")}</button>
      <button id="logoutBtn" class="btn ghost small" onClick=${() => api.logout()}>${t("nav.logout")}</button>
    </header>
    <nav class="tabs" aria-label=${t("nav.label")}>
      ${nav.map((n) => html`<a href=${"#/" + n} class=${n === name ? "tab on" : "tab"}
          aria-current=${n === name ? "page" : null}>${t("nav." + n)}</a>`)}
    </nav>
    <main id="main" tabindex="-1">${screen}</main>
    <footer class="foot"><span class=${live ? "dot on" : "dot"} aria-hidden="true"></span>
      ${live ? t("common.live") : t("common.offline_updates")}</footer>
    <${DialogHost} />
  </div>`;
}

function App() {
  const [session, setSession] = useState(api.loggedIn() ? "in" : "out");
  const [notice, setNotice] = useState(null);
  const [me, setMe] = useState(null);
  const [areas, setAreas] = useState(null);
  useEffect(() => api.onSessionEnd((why) => {
    setMe(null); setAreas(null);  // nothing of the session stays on screen
    setNotice(why === "expired" ? "login.expired" : "login.bye");
    setSession("out");
  }), []);
  useEffect(() => {
    if (session !== "in") return;
    const keep = (list) => {
      const byId = {};
      for (const a of list) byId[a.id] = a;
      setAreas({list, byId});
    };
    Promise.all([api.call("/users/me"), api.call("/areas")]).then(([m, list]) => {
      keep(list);
      setMe(m);
    }).catch(() => api.forget("expired"));
    // a village added or renamed (here or by another technician): every screen sees it
    return onChanged((topics) => {
      if (topics.includes("areas") || topics.includes("*")) api.call("/areas").then(keep).catch(() => {});
    });
  }, [session]);
  if (session === "out") return html`<${Login} notice=${notice} onIn=${() => { setNotice(null); setSession("in"); }} />`;
  if (!me || !areas) return html`<p class="muted" role="status">${t("common.loading")}</p>`;
  return html`<${Shell} me=${me} areas=${areas} />`;
}

render(html`<${App} />`, document.getElementById("root"));
