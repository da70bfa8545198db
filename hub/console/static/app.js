// threatseer console: plain JavaScript, no framework and nothing fetched from elsewhere.
// Every text that comes from events is put into the page with textContent (never as HTML):
// command lines and paths are chosen by whoever runs them.
"use strict";

const MAX_ROWS = 1000;          // alert rows kept in the page (and in memory) at most
const FIRST_ROWS = 200;         // rows a page load shows at once; "Older" fetches more
const HEALTH_EVERY_MS = 3000;
const $ = (id) => document.getElementById(id);

const S = {
  token: sessionStorage.getItem("threatseer-token") || "",
  session: null,
  rows: [],            // summaries shown, newest first (at most MAX_ROWS)
  keys: new Set(),     // instance:seq of the rows, to drop duplicates after a resume
  pending: [],         // arrived while paused (at most MAX_ROWS), oldest first
  pendingDropped: 0,
  paused: false,
  instance: null,      // the console's instance; a new one means it restarted
  lastSeq: 0,
  stream: null,        // AbortController of the open stream
  retry: 500,
  healthTimer: null,
  feed: "",
  restarted: "",       // when the console was seen restarted (its instance changed)
};

// -- small helpers --------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const pad = (n) => (n < 10 ? "0" : "") + n;
function clock(ts) {  // local HH:MM:SS (by hand: toLocaleTimeString is slow for a long list)
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  return isNaN(d) ? String(ts || "") : `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function ago(t) {
  if (!t) return "-";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function lag(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  return seconds < 10 ? `${Math.round(seconds * 1000)} ms` : seconds < 3600 ? `${seconds.toFixed(0)} s` : `${(seconds / 3600).toFixed(1)} h`;
}

function scoreClass(s) { return s >= 50 ? "s-hi" : s > 0 ? "s-mid" : "s-lo"; }

function num(x, digits) {
  if (x === null || x === undefined) return "-";
  return typeof x === "number" ? x.toLocaleString(undefined, {maximumFractionDigits: digits ?? 0}) : String(x);
}

async function api(path, opts) {
  opts = opts || {};
  const headers = Object.assign({Authorization: "Bearer " + S.token}, opts.headers || {});
  const r = await fetch(path, Object.assign({}, opts, {headers}));
  if (r.status === 401) { signOut("The token was refused."); throw new Error("token refused"); }
  let body = null;
  try { body = await r.json(); } catch (e) { body = {}; }
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

// -- sign in --------------------------------------------------------------------------------
async function signIn(token) {
  S.token = token;
  const listed = fetchAlerts(FIRST_ROWS);  // at the same time as the session
  listed.catch(() => {});
  const who = await api("/api/session");
  S.session = who;
  sessionStorage.setItem("threatseer-token", token);
  $("who").textContent = `${who.name} (${who.role})`;
  $("logout").hidden = false;
  $("nav").hidden = false;
  $("conn").hidden = false;
  S.instance = who.instance;
  showAlerts(await listed, false);
  performance.mark("alerts-shown");  // what bench/console_bench.py times a page load by
  openStream();
  route();
}

function signOut(message) {
  sessionStorage.removeItem("threatseer-token");
  S.token = "";
  S.session = null;
  closeStream();
  for (const id of ["nav", "logout", "conn"]) $(id).hidden = true;
  $("who").textContent = "";
  showView("login");
  $("login-error").textContent = message || "";
}

// -- views ----------------------------------------------------------------------------------
const VIEWS = ["login", "view-alerts", "view-alert", "view-health", "view-profiles"];

function showView(id) {
  for (const v of VIEWS) $(v).hidden = v !== id;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", "view-" + a.id.slice(4) === id);
  }
  if (id !== "view-health" && S.healthTimer) { clearInterval(S.healthTimer); S.healthTimer = null; }
}

function route() {
  if (!S.session) { showView("login"); return; }
  const h = location.hash.slice(1) || "alerts";
  if (h.startsWith("alert/")) {
    const [, instance, seq] = h.split("/");
    showView("view-alert");
    showAlert(instance, seq);
  } else if (h === "health") {
    showView("view-health");
    loadHealth();
    if (!S.healthTimer) S.healthTimer = setInterval(loadHealth, HEALTH_EVERY_MS);
  } else if (h === "profiles") {
    showView("view-profiles");
    loadProfiles();
  } else {
    showView("view-alerts");
  }
}

// -- live alerts ----------------------------------------------------------------------------
function filterQuery() {
  const q = new URLSearchParams();
  const host = $("f-host").value.trim(), rule = $("f-rule").value.trim();
  const proc = $("f-process").value.trim();
  const min = $("f-min").value.trim(), kind = $("f-kind").value;
  if (host) q.set("host", host);
  if (rule) q.set("rule", rule);
  if (proc) q.set("process", proc);
  if (min) q.set("min_score", min);
  if (kind !== "alert") q.set("kind", kind);
  return q;
}

let rowTemplate = null;
function alertRow(a, instance, stale) {
  // Cloned from one template row: a thousand rows are built in a few milliseconds.
  if (!rowTemplate) {
    rowTemplate = el("tr", {}, el("td"), el("td"), el("td", {class: "host"}), el("td", {class: "rule"}),
                     el("td", {class: "proc"}), el("td", {class: "what"}));
  }
  const rules = a.rules && a.rules.length ? a.rules[0] + (a.rules.length > 1 ? ` +${a.rules.length - 1}` : "") : (a.rule_name || a.action);
  const tr = rowTemplate.cloneNode(true);
  tr.dataset.seq = a.seq;
  tr.dataset.instance = instance;
  if (stale) tr.className = "stale";
  const td = tr.children;
  td[0].textContent = clock(a.ts);
  td[1].className = "score " + scoreClass(a.score);
  td[1].textContent = num(a.score, 1);
  td[2].textContent = a.host;
  td[3].textContent = rules;
  td[4].textContent = a.process + (a.pid !== null && a.pid !== undefined ? ` [${a.pid}]` : "");
  td[5].textContent = a.what;
  if (a.message) tr.title = a.message;  // the alert's own sentence, on hover
  return tr;
}

function renderCount() {
  $("count").textContent = `${S.rows.length} shown` + (S.paused ? " (paused)" : "");
  $("alerts-empty").hidden = S.rows.length > 0;
  $("pending").textContent = S.paused && S.pending.length
    ? `${S.pending.length} new while paused` + (S.pendingDropped ? ` (+${S.pendingDropped} not kept)` : "") : "";
}

// Add alerts (oldest first) to the top of the list, trimming the bottom to MAX_ROWS.
function addAlerts(list, instance) {
  if (!list.length) return;
  const body = $("alerts-body");
  const frag = document.createDocumentFragment();
  const fresh = [];  // newest first
  for (let i = list.length - 1; i >= 0 && fresh.length < MAX_ROWS; i--) {
    const a = list[i], key = instance + ":" + a.seq;
    if (S.keys.has(key)) continue;
    S.keys.add(key);
    a._instance = instance;
    frag.append(alertRow(a, instance, false));
    fresh.push(a);
  }
  S.rows.unshift(...fresh);
  body.insertBefore(frag, body.firstChild);
  while (S.rows.length > MAX_ROWS) {
    const gone = S.rows.pop();
    S.keys.delete(gone._instance + ":" + gone.seq);
    body.lastElementChild && body.lastElementChild.remove();
  }
  renderCount();
}

function clearAlerts() {
  S.rows = []; S.keys.clear(); S.pending = []; S.pendingDropped = 0;
  $("alerts-body").replaceChildren();
}

function fetchAlerts(limit, before) {
  const q = filterQuery();
  q.set("limit", String(limit));
  if (before) q.set("before", String(before));
  return api("/api/alerts?" + q);
}

function showAlerts(r, keepOld) {
  if (!keepOld) clearAlerts();
  S.instance = r.instance;
  S.lastSeq = r.last_seq;
  addAlerts(r.alerts.slice().reverse(), r.instance);
  $("older").hidden = r.alerts.length < FIRST_ROWS;
  renderCount();
}

async function loadAlerts(keepOld) {
  showAlerts(await fetchAlerts(FIRST_ROWS), keepOld);
}

// Older held alerts, below the oldest shown (up to MAX_ROWS in the page).
async function loadOlder() {
  const last = S.rows[S.rows.length - 1];
  if (!last || last._instance !== S.instance) return;
  const room = MAX_ROWS - S.rows.length;
  if (room <= 0) { $("older").textContent = `At most ${MAX_ROWS} rows: narrow the filters`; return; }
  const r = await fetchAlerts(Math.min(room, FIRST_ROWS), last.seq);
  const body = $("alerts-body"), frag = document.createDocumentFragment();
  for (const a of r.alerts) {
    const key = r.instance + ":" + a.seq;
    if (S.keys.has(key)) continue;
    S.keys.add(key);
    a._instance = r.instance;
    S.rows.push(a);
    frag.append(alertRow(a, r.instance, false));
  }
  body.append(frag);
  $("older").hidden = r.alerts.length < Math.min(room, FIRST_ROWS);
  renderCount();
}

// "live", and since when the console runs anew if it restarted while this page was open.
function liveText() { return S.restarted ? `live (restarted ${S.restarted})` : "live"; }

function setConn(text, cls) {
  const c = $("conn");
  c.textContent = text;
  c.className = "conn " + (cls || "");
}

function closeStream() {
  if (S.stream) { S.stream.abort(); S.stream = null; }
}

async function openStream() {
  closeStream();
  const ctrl = new AbortController();
  S.stream = ctrl;
  const q = filterQuery();
  if (S.instance) { q.set("instance", S.instance); q.set("after", String(S.lastSeq)); }
  try {
    const r = await fetch("/api/stream?" + q, {headers: {Authorization: "Bearer " + S.token}, signal: ctrl.signal});
    if (r.status === 401) { signOut("The token was refused."); return; }
    if (!r.ok) throw new Error(r.statusText);
    S.retry = 500;
    setConn(liveText(), "live");
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        await onEvent(block);
      }
    }
  } catch (e) {
    if (ctrl.signal.aborted) return;
  }
  if (ctrl.signal.aborted || S.stream !== ctrl) return;
  setConn("reconnecting…", "down");
  S.retry = Math.min(S.retry * 2, 5000);
  setTimeout(() => { if (S.stream === ctrl) openStream(); }, S.retry);
}

async function onEvent(block) {
  let kind = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) kind = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const msg = JSON.parse(data);
  if (kind === "hello") {
    if (S.instance && msg.instance !== S.instance) {
      // The console (or the hub it runs in) restarted: what it held is gone from it, the
      // rows already shown stay (greyed) and what it holds now is loaded above them.
      for (const tr of $("alerts-body").children) tr.classList.add("stale");
      S.instance = msg.instance;
      S.lastSeq = 0;
      await loadAlerts(true);
      S.restarted = clock(Date.now() / 1000);
      setConn(liveText(), "live");
    }
    S.instance = msg.instance;
  } else if (kind === "alerts") {
    if (msg.length) S.lastSeq = Math.max(S.lastSeq, msg[msg.length - 1].seq);
    if (S.paused) {
      for (const a of msg) S.pending.push(a);
      if (S.pending.length > MAX_ROWS) {
        S.pendingDropped += S.pending.length - MAX_ROWS;
        S.pending.splice(0, S.pending.length - MAX_ROWS);
      }
      renderCount();
    } else {
      addAlerts(msg, S.instance);
    }
  } else if (kind === "status") {
    S.feed = msg.feed;
    const up = msg.feed === "connected" || msg.feed === "hub tap";
    setConn(up ? liveText() : "hub stream: " + msg.feed, up ? "live" : "down");
  }
}

function togglePause() {
  S.paused = !S.paused;
  $("pause").textContent = S.paused ? "Resume" : "Pause";
  if (!S.paused && S.pending.length) {
    const list = S.pending;
    S.pending = []; S.pendingDropped = 0;
    addAlerts(list, S.instance);
  }
  renderCount();
}

let filterTimer = null;
function onFilter() {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(async () => {
    closeStream();
    try { await loadAlerts(false); } catch (e) { setConn(e.message, "down"); }
    openStream();
  }, 250);
}

// -- alert detail ---------------------------------------------------------------------------
function kv(pairs) {
  const dl = el("dl", {class: "kv"});
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === "") continue;
    dl.append(el("dt", {text: k}), el("dd", {text: v}));
  }
  return dl;
}

function treeNode(n, instance) {
  const li = el("li", {class: "node" + (n.alert ? " alert-proc" : "") + (n.seen ? "" : " unseen"),
                       "data-name": n.name, "data-pid": n.pid ?? ""});
  const head = el("div", {class: "node-head"},
    el("span", {class: "pname", text: n.name}),
    n.pid !== null && n.pid !== undefined ? el("span", {class: "pid", text: ` [${n.pid}]`}) : null,
    n.user ? el("span", {class: "user", text: ` ${n.user}`}) : null,
    n.command_line || n.executable ? el("span", {class: "cmd", text: "  " + (n.command_line || n.executable)}) : null,
    n.exit_code !== null && n.exit_code !== undefined ? el("span", {class: "pid", text: `  exit ${n.exit_code}`}) : null,
    n.named_only ? el("span", {class: "pid", text: "  (name only: seen before the sensor or the console)"}) : null);
  li.append(head);
  if (n.events && n.events.length) {
    const acts = el("ul", {class: "acts"});
    for (const e of n.events) {
      const text = `${clock(e.ts)}  ${e.action}  ${e.what}` + (e.score ? `  (${num(e.score, 1)})` : "");
      const item = el("li", {class: (e.score > 0 ? "scored" : "") + (e.seq ? " held" : "")});
      if (e.seq) item.append(el("a", {href: `#alert/${instance}/${e.seq}`, text}));
      else item.textContent = text;
      acts.append(item);
    }
    // Ancestors can be busy (a shell's or a service's whole session): folded past a few.
    if (!n.alert && n.events.length > 4) {
      li.append(el("details", {}, el("summary", {class: "muted", text: `${n.events.length} events`}), acts));
    } else {
      li.append(acts);
    }
  }
  if (n.children && n.children.length) {
    li.append(el("ul", {class: "tree"}, ...n.children.map(c => treeNode(c, instance))));
  }
  return li;
}

async function showAlert(instance, seq) {
  const box = $("alert-detail");
  box.replaceChildren(el("p", {class: "muted", text: "Loading…"}));
  let d;
  try {
    d = await api(`/api/alerts/${encodeURIComponent(seq)}?instance=${encodeURIComponent(instance)}`);
  } catch (e) {
    box.replaceChildren(el("p", {class: "error", text: e.message}));
    return;
  }
  const s = d.summary;
  const head = el("div", {class: "card"},
    el("h2", {}, el("span", {class: "score " + scoreClass(s.score), text: num(s.score, 1)}),
       "  " + (s.message || s.rule_name || (s.rules || []).join(", ") || s.action)),
    kv([["time", s.ts], ["host", s.host], ["sensor", s.agent], ["action", s.action],
        ["process", s.process + (s.pid !== null && s.pid !== undefined ? ` [${s.pid}]` : "")],
        ["object", s.what], ["rule", s.rule_name], ["tactic", s.tactic],
        ["technique", [s.technique, s.subtechnique].filter(Boolean).join(", ")], ["event id", s.id]]));
  const inds = el("tbody");
  for (const i of d.indicators) {
    inds.append(el("tr", {},
      el("td", {text: i.engine}), el("td", {class: "mono", text: i.rule}), el("td", {text: i.type}),
      el("td", {class: "score " + scoreClass(i.score), text: num(i.score, 1)}),
      el("td", {}, i.description || "", el("div", {}, ...(i.tags || []).map(t => el("span", {class: "tag", text: t}))))));
  }
  const indCard = el("div", {class: "card"}, el("h2", {text: "Indicators"}),
    el("table", {class: "grid"}, el("thead", {}, el("tr", {}, ...["Engine", "Rule", "Type", "Score", "Description"].map(h => el("th", {text: h})))), inds));
  const treeCard = el("div", {class: "card", id: "tree"}, el("h2", {text: "Process tree"}));
  if (d.tree) treeCard.append(el("ul", {class: "tree root"}, treeNode(d.tree, instance)));
  else treeCard.append(el("p", {class: "muted", text: "No process behind this event."}));
  const raw = el("div", {class: "card"}, el("h2", {text: "ECS document"}),
    el("pre", {class: "raw", id: "raw", text: JSON.stringify(d.document, null, 2)}));
  box.replaceChildren(head, el("div", {class: "split"}, el("div", {class: "grow"}, treeCard), el("div", {class: "grow"}, indCard, raw)));
}

// -- fleet health ---------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  return n;
}

function chart(series) {
  const W = 600, H = 120, top = 10, n = series.events.length;
  const max = Math.max(1, ...series.events, ...series.alerts);
  const bw = W / n;
  const root = svg("svg", {class: "chart", viewBox: `0 0 ${W} ${H + 16}`, preserveAspectRatio: "none", role: "img"});
  const title = svg("title"); title.textContent = "events and alerts per minute, last hour";
  root.append(title);
  series.events.forEach((v, i) => {
    const h = (v / max) * (H - top);
    root.append(svg("rect", {class: "ev", x: i * bw + 1, y: H - h, width: bw - 2, height: h}));
    const a = series.alerts[i], ha = (a / max) * (H - top);
    if (a) root.append(svg("rect", {class: "al", x: i * bw + bw / 4, y: H - ha, width: bw / 2, height: Math.max(ha, 1)}));
  });
  const t1 = svg("text", {x: 2, y: H + 12}); t1.textContent = "60 min ago";
  const t2 = svg("text", {x: W - 2, y: H + 12, "text-anchor": "end"}); t2.textContent = "now";
  const t3 = svg("text", {x: 2, y: 9}); t3.textContent = `max ${max.toLocaleString()}/min`;
  root.append(t1, t2, t3);
  return root;
}

function table(headers, rows, id) {
  return el("table", {class: "grid", id},
    el("thead", {}, el("tr", {}, ...headers.map(h => el("th", {text: h})))),
    el("tbody", {}, ...rows.map(r => el("tr", {}, ...r.map(c => c instanceof Node ? el("td", {}, c) : el("td", {text: c ?? "-"}))))));
}

async function loadHealth() {
  let h;
  try { h = await api("/api/health"); } catch (e) { $("health").replaceChildren(el("p", {class: "error", text: e.message})); return; }
  const c = h.console, feed = c.feed;
  const up = feed.status === "connected" || feed.status === "hub tap";
  const hub = h.hub || {};
  const top = el("div", {class: "card"}, el("h2", {text: "Hub"}), kv([
    ["stream", `${feed.status} (${feed.endpoint}${feed.curve ? ", CURVE" : ""}) since ${clock(feed.since)}`],
    ["hub", hub.pid ? `pid ${hub.pid}, up since ${clock(hub.started_at)}, status ${ago(hub.updated_at)}` : "status not readable here (run the console in the hub, or with -c on the hub's host)"],
    ["emitted", hub.emitted !== undefined ? num(hub.emitted) : null],
    ["pipeline failures", hub.failures !== undefined ? num(hub.failures) : null],
    ["transport", hub.plaintext === undefined ? null : hub.plaintext ? "PLAINTEXT" : "CURVE"],
    ["console", `${num(c.held)} alerts held of ${num(c.alerts_kept)}, ${num(c.processes)} processes in the trees, ${c.streams} live streams`],
    ["since start", `${num(h.totals.events)} events, ${num(h.totals.alerts)} alerts`]]));
  top.querySelector("dd").className = up ? "good" : "bad";
  const chartCard = el("div", {class: "card"}, el("h2", {text: "Events and alerts per minute"}),
    el("div", {class: "legend"}, el("span", {class: "k-ev", text: "■ events"}), el("span", {class: "k-al", text: "■ alerts"})),
    chart(h.series));
  const sensors = h.sensors.map(s => {
    const hs = s.hub || {};
    const losses = (s.loss_events || 0) + (s.dropped_counters || 0);
    const bad = Object.values(hs.bad || {}).reduce((x, y) => x + y, 0);
    const batches = (s.loss_batches || 0) + (hs.lost_batches || 0);
    return [s.host || "-", s.agent, s.version || "-", ago(s.last_seen || hs.last_seen),
            num(s.rate, 1) + "/s", lag(s.lag_s),
            el("span", {class: losses + batches ? "bad" : "", text: batches ? `${num(losses)} events, ${num(batches)} batches` : num(losses),
                        title: "sensor-loss events and the sensor's kernel_lost/send_dropped counters; batches: transport gaps"}),
            hs.events_in !== undefined ? num(hs.events_in) : "-", num(bad), num(s.alerts)];
  });
  const sensorCard = el("div", {class: "card"}, el("h2", {text: `Sensors (${h.sensors.length})`}),
    table(["Host", "Sensor", "Version", "Last seen", "Rate", "Lag", "Lost", "Events in (hub)", "Refused", "Alerts"], sensors, "sensors"));
  const outputs = (h.outputs || []).map(o => [o.name, o.type,
    el("span", {class: o.connected ? "good" : "bad", text: o.connected ? "yes" : "no"}),
    num(o.queue_depth), num(o.sent), num(o.failed), num(o.dropped), o.last_error || ""]);
  const outCard = el("div", {class: "card"}, el("h2", {text: "Outputs"}),
    h.outputs ? (outputs.length ? table(["Name", "Type", "Connected", "Queue", "Sent", "Failed", "Dropped", "Last error"], outputs, "outputs")
                                : el("p", {class: "muted", text: "No outputs configured (the PUB stream only)."}))
              : el("p", {class: "muted", text: "Not readable here."}));
  const b = h.bundle || {};
  const bundleCard = el("div", {class: "card"}, el("h2", {text: "Rule bundle"}),
    h.bundle ? kv([["active", `${b.name || ""} ${b.version || b.active || ""}`], ["digest", (b.digest || "").slice(0, 16)],
                   ["rules", b.rules !== undefined ? `${b.rules} (${b.unsupported || 0} unsupported)` : null],
                   ["history", (b.history || []).join(" → ")],
                   ["installed", (b.installed || []).map(i => `${i.version} (${new Date(i.installed_at * 1000).toLocaleString()})`).join(", ")]])
             : el("p", {class: "muted", text: "Not readable here."}));
  const rulesCard = el("div", {class: "card"}, el("h2", {text: "Top rules, last hour"}),
    h.top_rules.length ? table(["Rule", "Alerts"], h.top_rules.map(r => [r.rule, num(r.hits)]), "top-rules") : el("p", {class: "muted", text: "No alerts in the last hour."}));
  $("health").replaceChildren(el("div", {class: "split"}, el("div", {class: "grow"}, top), el("div", {class: "grow"}, chartCard)),
                              sensorCard,
                              el("div", {class: "split"}, el("div", {class: "grow"}, outCard, bundleCard), el("div", {class: "grow"}, rulesCard)));
}

// -- profiles -------------------------------------------------------------------------------
async function loadProfiles() {
  const body = $("profiles-body");
  let r;
  try { r = await api("/api/profiles"); } catch (e) { $("profiles-note").textContent = e.message; body.replaceChildren(); return; }
  $("profiles-note").textContent = `${r.profiles.length} subjects` + (S.session.role === "admin" ? "" : " (reset and relearn need an admin token)");
  body.replaceChildren(...r.profiles.map(p => {
    const tr = el("tr", {"data-subject": p.subject},
      el("td", {class: p.learned ? "good" : "", text: p.learned ? "learned" : "learning"}),
      el("td", {text: num(p.events)}), el("td", {text: num(p.behaviors)}),
      el("td", {text: ago(p.last_seen)}), el("td", {class: "mono", text: p.subject}));
    tr.style.cursor = "pointer";
    tr.addEventListener("click", () => showProfile(p.subject));
    return tr;
  }));
}

async function showProfile(subject) {
  const box = $("profile-detail");
  box.hidden = false;
  let p;
  try { p = await api("/api/profiles/show?subject=" + encodeURIComponent(subject)); } catch (e) { box.replaceChildren(el("p", {class: "error", text: e.message})); return; }
  const admin = S.session.role === "admin";
  const note = el("span", {class: "muted", id: "profile-note"});
  const act = (op) => {
    const b = el("button", {type: "button", id: "profile-" + op, class: "danger", disabled: admin ? null : "disabled",
                            title: admin ? null : "needs an admin token", text: op === "reset" ? "Reset" : "Relearn"});
    b.addEventListener("click", async () => {
      if (b.dataset.armed !== "1") { b.dataset.armed = "1"; b.textContent = `Confirm ${op}`; return; }
      try {
        const r = await api(`/api/profiles/${op}`, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({subject})});
        note.textContent = `${op}: ${r.profiles} profile(s)`;
        await loadProfiles();
      } catch (e) { note.textContent = e.message; }
      b.dataset.armed = ""; b.textContent = op === "reset" ? "Reset" : "Relearn";
    });
    return b;
  };
  const learned = el("div");
  for (const [kind, values] of Object.entries(p.behaviors || {})) {
    learned.append(el("h3", {class: "muted", text: `${kind} (${values.length})`}),
                   el("ul", {class: "mono"}, ...values.slice(0, 200).map(v => el("li", {text: v}))));
  }
  box.replaceChildren(el("h2", {class: "mono", text: subject}),
    kv([["state", p.learned ? `learned at ${clock(p.learned_at)}` : "learning"], ["events", num(p.events)],
        ["first seen", clock(p.first_seen)], ["last seen", ago(p.last_seen)]]),
    el("div", {class: "actions"}, act("relearn"), act("reset"), note), learned);
}

// -- start ----------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await signIn($("token").value.trim()); $("token").value = ""; }
    catch (err) { $("login-error").textContent = err.message; }
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("pause").addEventListener("click", togglePause);
  $("older").addEventListener("click", () => loadOlder().catch((e) => setConn(e.message, "down")));
  for (const id of ["f-host", "f-rule", "f-process", "f-min"]) $(id).addEventListener("input", onFilter);
  $("f-kind").addEventListener("change", onFilter);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("alerts-body").addEventListener("click", (e) => {
    const tr = e.target.closest("tr");
    if (tr) location.hash = `#alert/${tr.dataset.instance}/${tr.dataset.seq}`;
  });
  window.addEventListener("hashchange", route);
  if (S.token) signIn(S.token).catch((e) => signOut(e.message));
  else showView("login");
});
