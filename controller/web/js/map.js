// A map drawn from the places' own coordinates (no tiles: the console works offline and on a
// commune's 4G): villages to choose, or boards coloured by state. Each place is a 44 px touch
// target, reachable by keyboard, announced by name and state.
import {html} from "./ui.js";

const W = 360;   // the drawing's width in its own units (about a phone's width in CSS px)
const PAD = 28;   // above and below
const PADX = 56; // left and right: a name is centred under its place

/** where each point goes: an equirectangular projection, scaled to fit W wide */
function project(points) {
  const lats = points.map((p) => p.lat), lons = points.map((p) => p.lon);
  const mid = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos((mid * Math.PI) / 180);
  const x0 = Math.min(...lons), y0 = Math.max(...lats);
  const spanX = (Math.max(...lons) - x0) * k || 1e-3, spanY = (y0 - Math.min(...lats)) || 1e-3;
  const scale = (W - 2 * PADX) / Math.max(spanX, spanY * 0.75);
  const h = Math.max(160, Math.ceil(spanY * scale + 2 * PAD + 16));
  return {h, at: (p) => [PADX + (p.lon - x0) * k * scale, PAD + (y0 - p.lat) * scale]};
}

/** where each marker is drawn: places closer than a finger are spread on a small ring around
 *  where they are (two boards of one village ~70 m apart), each joined to its true spot */
function spread(xy) {
  const groups = [];
  for (let i = 0; i < xy.length; i++) {
    const g = groups.find((gr) => gr.some((j) => Math.hypot(xy[i][0] - xy[j][0], xy[i][1] - xy[j][1]) < 44));
    g ? g.push(i) : groups.push([i]);
  }
  const out = xy.map((p) => [...p]);
  for (const g of groups) {
    if (g.length < 2) continue;
    const cx = g.reduce((a, i) => a + xy[i][0], 0) / g.length, cy = g.reduce((a, i) => a + xy[i][1], 0) / g.length;
    const r = Math.max(24, 46 / (2 * Math.sin(Math.PI / g.length)));
    g.forEach((i, k) => {
      const a = (2 * Math.PI * k) / g.length - Math.PI / 2;
      out[i] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
    });
  }
  return out;
}

/** points: [{id, name, lat, lon, cls, on, disabled, title}]; onPick(id) for a choice,
 *  or href(id) for a link; label: what the map shows, said to a screen reader */
export function PlaceMap({points, label, onPick, href, legend}) {
  const placed = points.filter((p) => p.lat != null && p.lon != null);
  if (placed.length < 2) return null;
  const {h, at} = project(placed);
  const real = placed.map(at);
  const drawn = spread(real);
  const key = (p) => (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(p); }
  };
  const pick = (p) => {
    if (p.disabled) return;
    if (onPick) onPick(p.id);
    else if (href) location.hash = href(p.id);
  };
  return html`<figure class="placemap">
    <svg viewBox=${`0 0 ${W} ${h}`} role="group" aria-label=${label}>
      ${placed.map((p, i) => {
        const [x, y] = drawn[i], [rx, ry] = real[i];
        return html`<g key=${p.id} class=${"pt " + (p.cls || "") + (p.on ? " on" : "") + (p.disabled ? " disabled" : "")}
          tabindex=${p.disabled ? -1 : 0} role=${onPick ? "checkbox" : "link"}
          aria-checked=${onPick ? String(!!p.on) : undefined} aria-label=${p.title || p.name}
          onClick=${() => pick(p)} onKeyDown=${key(p)}>
          ${(rx !== x || ry !== y) && html`<line x1=${rx} y1=${ry} x2=${x} y2=${y} />`}
          <circle class="hit" cx=${x} cy=${y} r="22" />
          <circle class="mark" cx=${x} cy=${y} r="9" />
          <text x=${x} y=${y + 24} text-anchor="middle">${p.name}</text>
        </g>`;
      })}
    </svg>
    ${legend && html`<figcaption class="legend">${legend}</figcaption>`}
  </figure>`;
}
