// Shared pieces of every screen: markup, badges, the busy button (one submit at a time),
// refusals shown where they happened, the confirmation dialog, data that follows the
// server's pushed changes.
import {h} from "preact";
import {useEffect, useRef, useState, useCallback} from "preact/hooks";
import htm from "htm";
import {call} from "./api.js";
import {explain, state, t} from "./i18n.js";

export const html = htm.bind(h);

export function Badge({s, label}) {
  return html`<span class=${"badge s-" + s}>${label || state(s)}</span>`;
}

/** what the server refused, in the reader's language, where it happened */
export function Refusal({err}) {
  if (!err) return null;
  const lines = explain(err);
  return html`<div class="refusal" role="alert">
    <p>${lines[0]}</p>
    ${lines.length > 1 && html`<ul>${lines.slice(1).map((l) => html`<li>${l}</li>`)}</ul>`}
  </div>`;
}

export function Notice({text}) {
  return text ? html`<p class="notice" role="status">${text}</p>` : null;
}

// one confirmation dialog for the whole app
let openDialog = null;
export function confirmDialog(text, {danger = false, yes} = {}) {
  return new Promise((resolve) => openDialog && openDialog({text, danger, yes, resolve}));
}
export function DialogHost() {
  const [req, setReq] = useState(null);
  const ref = useRef(null);
  useEffect(() => { openDialog = setReq; return () => { openDialog = null; }; }, []);
  useEffect(() => { if (req && ref.current && !ref.current.open) ref.current.showModal(); }, [req]);
  const done = (v) => { ref.current && ref.current.close(); req && req.resolve(v); setReq(null); };
  return html`<dialog ref=${ref} class="dialog" aria-labelledby="dialog-text"
      onCancel=${(e) => { e.preventDefault(); done(false); }}>
    ${req && html`<p id="dialog-text">${req.text}</p>
      <div class="row end">
        <button type="button" class="btn" onClick=${() => done(false)}>${t("common.cancel_dialog")}</button>
        <button type="button" class=${"btn " + (req.danger ? "danger" : "primary")} autofocus
          onClick=${() => done(true)}>${req.yes || t("common.confirm")}</button>
      </div>`}
  </dialog>`;
}

/** a button that runs `action` once at a time (no double submit), asking first if told to */
export function Act({action, children, kind = "", confirm, onError, onDone, type = "button", disabled, ...rest}) {
  const [busy, setBusy] = useState(false);
  const run = async (e) => {
    if (e) e.preventDefault();
    if (busy) return;
    if (confirm && !(await confirmDialog(confirm, {danger: kind === "danger"}))) return;
    setBusy(true);
    try {
      const out = await action();
      onDone && onDone(out);
    } catch (err) {
      if (onError) onError(err); else throw err;
    } finally { setBusy(false); }
  };
  return html`<button type=${type} class=${"btn " + kind} disabled=${busy || disabled}
      aria-busy=${busy ? "true" : "false"} onClick=${run} ...${rest}>
    ${busy ? t("common.busy") : children}</button>`;
}

// pushed changes: the app feeds topics in; screens reload what they show when one arrives
const subscribers = new Set();
export function changed(topics) { for (const fn of subscribers) fn(topics); }
/** fn(topics) on every change, pushed or made here; returns the unsubscribe */
export function onChanged(fn) { subscribers.add(fn); return () => subscribers.delete(fn); }

/** GET `path` (null: nothing) and again whenever one of `topics` changes on the server */
/** the answer for `path`, reloaded when the server pushes one of `topics`; with `keep`, the
 *  previous answer stays on screen while the next path loads (a filter or a page changing:
 *  the controls stay where the person is typing) */
export function useData(path, topics = [], {keep = false} = {}) {
  const [data, setData] = useState(null);
  const [err, setErr] = useState(null);
  const seq = useRef(0);
  const load = useCallback(async () => {
    if (!path) return;
    const mine = ++seq.current;
    try {
      const d = await call(path);
      if (mine === seq.current) { setData(d); setErr(null); }
    } catch (e) { if (mine === seq.current) setErr(e); }
  }, [path]);
  useEffect(() => { if (!keep) setData(null); load(); }, [load]);
  useEffect(() => {
    const fn = (got) => { if (got.some((x) => topics.includes(x))) load(); };
    subscribers.add(fn);
    return () => subscribers.delete(fn);
  }, [load, topics.join(",")]);
  return {data, err, reload: load};
}

/** previous / "51–100 of 3,000" / next, for a list the server pages */
export function Pager({page, size, total, onPage}) {
  if (total <= size) return null;
  return html`<div class="row pager">
    <button type="button" class="btn" disabled=${page === 0} onClick=${() => onPage(page - 1)}>${t("fleet.prev")}</button>
    <span>${t("fleet.page", {from: page * size + 1, to: Math.min(total, (page + 1) * size), total})}</span>
    <button type="button" class="btn" disabled=${(page + 1) * size >= total} onClick=${() => onPage(page + 1)}>${t("fleet.next")}</button>
  </div>`;
}

export function Loading({err, children}) {
  if (err) return html`<${Refusal} err=${err} />`;
  return children || html`<p class="muted" role="status">${t("common.loading")}</p>`;
}

/** is area `a` the account's own area or beneath it (a national account: everything)? */
export function inHome(me, areas, a) {
  for (let x = a; x; x = areas.byId[x.parent_id]) if (x.id === me.area_id) return true;
  return me.area_id == null;
}

let ids = 0;
export function useId(prefix = "f") {
  const ref = useRef(null);
  if (ref.current === null) ref.current = `${prefix}-${++ids}`;
  return ref.current;
}
