// Live charts of every reporter's CPU and memory, fed by /feed (server-sent
// events). Samples are bucketed by second so series from reporters that sample
// at different moments line up on one x axis.
"use strict";

const WINDOW_S = 300;
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
                 "#f032e6", "#9a6324", "#800000", "#469990", "#000075", "#808000"];

const names = [];                 // reporter names, in order of appearance
const lastSeen = new Map();       // name -> last timestamp (ms), to skip replays
const cpu = new Map();            // name -> Map(second -> value)
const mem = new Map();
const seconds = new Set();
let dirty = false;

function chart(el, title, unit) {
  const opts = {
    title, width: Math.max(400, el.clientWidth - 16), height: 260,
    scales: { x: { time: true } },
    series: [{}],
    axes: [{}, { label: unit }],
  };
  return new uPlot(opts, [[]], el);
}

const charts = {
  cpu: chart(document.getElementById("cpu"), "CPU", "%"),
  mem: chart(document.getElementById("mem"), "Memory", "MiB"),
};

function addReporter(name) {
  names.push(name);
  cpu.set(name, new Map());
  mem.set(name, new Map());
  const stroke = PALETTE[(names.length - 1) % PALETTE.length];
  for (const c of Object.values(charts)) {
    c.addSeries({ label: name, stroke, width: 2, spanGaps: true }, c.series.length);
  }
}

function data(store) {
  const xs = [...seconds].sort((a, b) => a - b);
  return [xs, ...names.map(n => xs.map(t => store.get(n).get(t) ?? null))];
}

function redraw() {
  dirty = false;
  const newest = Math.max(...seconds);
  for (const t of seconds) if (t < newest - WINDOW_S) seconds.delete(t);
  charts.cpu.setData(data(cpu));
  charts.mem.setData(data(mem));
}

function onSample(s) {
  const ms = Date.parse(s.timestamp);
  if (!(ms > (lastSeen.get(s.name) ?? 0))) return; // a replay after reconnecting
  lastSeen.set(s.name, ms);
  if (!cpu.has(s.name)) addReporter(s.name);
  const t = Math.floor(ms / 1000);
  seconds.add(t);
  cpu.get(s.name).set(t, s.cpu_percent);
  mem.get(s.name).set(t, s.memory_mib);
  if (!dirty) { dirty = true; requestAnimationFrame(redraw); }
}

const status = document.getElementById("status");
const feed = new EventSource("/feed");
feed.addEventListener("sample", e => onSample(JSON.parse(e.data)));
feed.onopen = () => { status.textContent = "live"; status.className = ""; };
feed.onerror = () => { status.textContent = "disconnected, reconnecting…"; status.className = "down"; };

// For tests and the curious: how many series each chart has drawn with data.
window.aioq = {
  drawn() {
    const count = c => c.series.slice(1).filter((_, i) => (c.data[i + 1] || []).some(v => v != null)).length;
    return { cpu: count(charts.cpu), mem: count(charts.mem), reporters: names.length };
  },
};
