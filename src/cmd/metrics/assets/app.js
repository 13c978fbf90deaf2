// Live charts of every reporter's CPU and memory, fed by /feed (server-sent
// events), with the pipeline's marks (gaps, restarts, reconnects) drawn as
// lines, and a table of reporters from /api/reporters. Samples are bucketed
// by second so series from reporters that sample at different moments line
// up on one x axis.
"use strict";

const KEEP_S = 3600;              // the longest window on offer
let windowS = 300;
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                 "#f032e6", "#9a6324", "#800000", "#469990", "#000075", "#808000"];
// A reporter named after a colour is drawn in it (the README's demo names
// its reporters red and green); any other name gets a palette colour chosen
// by the name itself, so it keeps its colour across reloads and whatever
// order the reporters appear in.
const NAMED = {
  red: "#d62728", green: "#2ca02c", blue: "#1f77b4", orange: "#ff7f0e",
  purple: "#9467bd", brown: "#8c564b", pink: "#e377c2", gray: "#7f7f7f",
  grey: "#7f7f7f", olive: "#808000", cyan: "#17becf", teal: "#469990",
  navy: "#000075", maroon: "#800000", magenta: "#f032e6", yellow: "#c9b000",
  black: "#222222",
};
function colourFor(name) {
  const named = NAMED[name.toLowerCase()];
  if (named) return named;
  let h = 2166136261;                      // FNV-1a
  for (const ch of name) { h = Math.imul(h ^ ch.codePointAt(0), 16777619) >>> 0; }
  return PALETTE[h % PALETTE.length];
}
const colours = new Map();        // name -> stroke

const names = [];                 // reporter names, in order of appearance
const lastSeen = new Map();       // name -> { ms, raw } of the last sample, to skip replays
const cpu = new Map();            // name -> Map(second -> value)
const mem = new Map();
const seconds = new Set();
let marks = [];                   // { t (s), name, what }
let dirty = false;

// Draws each mark as a dashed vertical line with its label.
const markPlugin = {
  hooks: {
    draw: [u => {
      const ctx = u.ctx;
      const [lo, hi] = [u.scales.x.min, u.scales.x.max];
      ctx.save();
      ctx.font = `${10 * devicePixelRatio}px system-ui, sans-serif`;
      for (const m of marks) {
        if (m.t < lo || m.t > hi) continue;
        const x = Math.round(u.valToPos(m.t, "x", true));
        ctx.strokeStyle = m.what === "restart" ? "#b00" : m.what.startsWith("gap") ? "#c80" : "#06c";
        ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillStyle = ctx.strokeStyle;
        ctx.fillText(`${m.name}: ${m.what}`, x + 3, u.bbox.top + 12 * devicePixelRatio);
      }
      ctx.restore();
    }],
  },
};

function chart(el, title, unit) {
  const opts = {
    title, width: Math.max(400, el.clientWidth - 16), height: 240,
    scales: { x: { time: true } },
    series: [{}],
    axes: [{}, { label: unit }],
    plugins: [markPlugin],
  };
  return new uPlot(opts, [[]], el);
}

const charts = {
  cpu: chart(document.getElementById("cpu"), "CPU, % of one core", "%"),
  mem: chart(document.getElementById("mem"), "Memory", "MiB"),
};

function addReporter(name) {
  names.push(name);
  cpu.set(name, new Map());
  mem.set(name, new Map());
  const stroke = colourFor(name);
  colours.set(name, stroke);
  for (const c of Object.values(charts)) {
    c.addSeries({ label: name, stroke, width: 2, spanGaps: false }, c.series.length);
  }
}

function data(store, from) {
  const xs = [...seconds].filter(t => t >= from).sort((a, b) => a - b);
  return [xs, ...names.map(n => xs.map(t => store.get(n).get(t) ?? null))];
}

function redraw() {
  dirty = false;
  if (seconds.size === 0) return;
  const newest = Math.max(...seconds);
  for (const t of seconds) if (t < newest - KEEP_S) seconds.delete(t);
  marks = marks.filter(m => m.t >= newest - KEEP_S);
  const from = newest - windowS;
  charts.cpu.setData(data(cpu, from));
  charts.mem.setData(data(mem, from));
}

function later() {
  if (!dirty) { dirty = true; requestAnimationFrame(redraw); }
}

function onSample(s, raw) {
  const ms = Date.parse(s.timestamp);
  // A replay after reconnecting (or the history's last sample again live):
  // older than the last one seen, or that very sample. Two samples can share
  // a millisecond.
  const last = lastSeen.get(s.name) ?? { ms: 0, raw: "" };
  if (!(ms >= last.ms) || raw === last.raw) return;
  lastSeen.set(s.name, { ms, raw });
  if (!cpu.has(s.name)) addReporter(s.name);
  const t = Math.floor(ms / 1000);
  seconds.add(t);
  cpu.get(s.name).set(t, s.cpu_percent);
  mem.get(s.name).set(t, s.memory_mib);
  if (s.mark) marks.push({ t, name: s.name, what: s.mark });
  later();
}

document.getElementById("window").addEventListener("change", e => {
  windowS = Number(e.target.value);
  later();
});

// The table: what the collector knows about each reporter, refreshed every
// two seconds. Text goes in with textContent: names come from any client.
let flagged = {};
async function refreshTable() {
  try {
    const doc = await (await fetch("/api/reporters")).json();
    const body = document.createElement("tbody");
    flagged = {};
    for (const r of doc.reporters) {
      const tr = document.createElement("tr");
      const flags = [];
      if (r.stale) flags.push("STALE");
      if (r.leak_suspected) flags.push("LEAK?");
      flagged[r.name] = flags;
      const cells = [
        r.name, r.host, r.pid,
        r.cpu_percent.toFixed(1),
        r.cpu_percent_of_machine == null ? "–" : r.cpu_percent_of_machine.toFixed(1),
        r.memory_mib.toFixed(1),
        `${r.memory_growth_mib_per_min >= 0 ? "+" : ""}${r.memory_growth_mib_per_min.toFixed(1)}`,
        r.lost_samples, r.restarts, r.reconnects,
        `${r.seconds_since_seen.toFixed(0)} s ago`,
        flags.join(" "),
      ];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = String(c);
        tr.appendChild(td);
      }
      if (flags.length) tr.className = "flagged";
      body.appendChild(tr);
    }
    body.id = "reporters";
    document.getElementById("reporters").replaceWith(body);
  } catch (e) { /* the feed's status line says when the collector is away */ }
}
setInterval(refreshTable, 2000);
refreshTable();

const status = document.getElementById("status");
const feed = new EventSource("/feed");
feed.addEventListener("sample", e => onSample(JSON.parse(e.data), e.data));
feed.onopen = () => { status.textContent = "live"; status.className = ""; };
feed.onerror = () => { status.textContent = "disconnected, reconnecting…"; status.className = "down"; };

// For tests and the curious: what the page has drawn and flagged.
window.aioq = {
  drawn() {
    const count = c => c.series.slice(1).filter((_, i) => (c.data[i + 1] || []).some(v => v != null)).length;
    return { cpu: count(charts.cpu), mem: count(charts.mem), reporters: names.length };
  },
  marks() { return marks.map(m => ({ name: m.name, what: m.what })); },
  flags() { return flagged; },
  colours() { return Object.fromEntries(colours); },
  window() { return windowS; },
};
