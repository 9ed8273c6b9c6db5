// SmartGet hub console: a live view of the hub over Server-Sent Events, and its actions.
//
// Every value from the hub reaches the page as text (textContent, text nodes, SVG
// attributes), never as markup. Actions send the session's CSRF token in X-CSRF-Token.
// The stream reconnects by itself: EventSource retries a dropped stream, and when the
// browser gives up (the hub was away too long) the page starts a new one, with backoff.

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

// -- building blocks ------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
function bytes(n) {
  let value = Number(n) || 0;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 && unit ? 1 : 0)} ${UNITS[unit]}`;
}
const rate = (n) => `${bytes(n)}/s`;

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const clock = (unix) => new Date(unix * 1000).toLocaleTimeString();

// -- actions: confirm, send, show the result -------------------------------------------

function showResult(ok, message) {
  const box = $("result");
  box.hidden = false;
  box.classList.toggle("failed", !ok);
  box.textContent = message;
}

function confirmWith(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-ok").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

async function post(path, body) {
  const options = {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf },
  };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let reply;
  try {
    reply = await fetch(path, options);
  } catch (err) {
    return { ok: false, message: `the hub is not reachable (${err.message})` };
  }
  if (reply.status === 401) {
    location.assign("/login");
    return { ok: false, message: "signed out" };
  }
  let data = {};
  try {
    data = await reply.json();
  } catch {
    data = {};
  }
  if (!reply.ok) {
    let detail = data.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    return { ok: false, message: `${reply.status}: ${detail || reply.statusText}` };
  }
  return { ok: true, message: data.message || "done", data };
}

async function act(question, path, body) {
  if (!(await confirmWith(question))) return;
  const result = await post(path, body);
  showResult(result.ok, result.message);
  return result;
}

// -- the fleet -------------------------------------------------------------------------

const filters = { zone: "", state: "" };
const nodeRows = new Map(); // node id -> <tr>
let lastSnapshot = null;

function nodeActions(node) {
  const cell = el("td", { class: "actions" });
  const label = node.name || node.addr;
  if (node.state === "zombie") {
    cell.append(
      el("button", { type: "button", class: "small danger", "data-action": "deregister",
        "data-node": node.id, "aria-label": `deregister zombie node ${node.id} ${label}` },
        "Deregister"),
    );
  } else if (node.state === "drained") {
    cell.append(
      el("button", { type: "button", class: "small", "data-action": "undrain",
        "data-node": node.id, "aria-label": `bring back node ${node.id} ${label}` },
        "Bring back"),
    );
  } else {
    cell.append(
      el("button", { type: "button", class: "small", "data-action": "drain",
        "data-node": node.id, "aria-label": `drain node ${node.id} ${label}` }, "Drain"),
    );
  }
  return cell;
}

function nodeRow(node) {
  const row = el("tr", { "data-node-id": node.id });
  row.append(
    el("td", { class: "num id" }),
    el("td", { class: "who" }, el("span", { class: "name" }), el("span", { class: "addr" })),
    el("td", { class: "zone opt" }),
    el("td", { class: "state" }, el("span", { class: "badge" })),
    el("td", { class: "num free" }),
    el("td", { class: "seen opt" }),
  );
  row.append(nodeActions(node));
  row.dataset.state = node.state;
  return row;
}

function updateNodeRow(row, node, ttl) {
  const cells = row.cells;
  setText(cells[0], node.id);
  setText(cells[1].firstChild, node.name || `node ${node.id}`);
  setText(cells[1].lastChild, node.addr);
  setText(cells[2], node.zone || "(none)");
  const badge = cells[3].firstChild;
  setText(badge, node.state);
  badge.className = `badge ${node.state}`;
  setText(cells[4], node.status < 0 ? "–" : node.status);
  const late = node.seen > ttl ? " (late)" : "";
  setText(cells[5], `${duration(node.seen)} ago${late}`);
  row.classList.toggle("zombie", node.state === "zombie");
  if (row.dataset.state !== node.state) {
    const hadFocus = row.contains(document.activeElement);
    row.replaceChild(nodeActions(node), row.cells[6]);
    row.dataset.state = node.state;
    if (hadFocus) row.cells[6].querySelector("button")?.focus();
  }
}

function renderFleet(fleet) {
  const stats = fleet.stats;
  for (const dd of document.querySelectorAll("#summary dd[data-stat]")) {
    const key = dd.dataset.stat;
    if (key in stats) setText(dd, stats[key]);
  }
  syncOptions($("zone-filter"), fleet.zones, "all zones");
  syncZoneChoices(fleet.zones);

  const shown = fleet.nodes.filter(
    (n) => (!filters.zone || n.zone === filters.zone) && (!filters.state || n.state === filters.state),
  );
  const body = $("node-rows");
  const wanted = [];
  const keep = new Set();
  let zone = null;
  for (const node of shown) {
    if (node.zone !== zone) {
      zone = node.zone;
      const key = `zone:${zone}`;
      let head = nodeRows.get(key);
      if (!head) {
        head = el("tr", { class: "zone-head" }, el("th", { colSpan: 7, scope: "rowgroup" }));
        nodeRows.set(key, head);
      }
      const count = shown.filter((n) => n.zone === zone).length;
      setText(head.firstChild, `${zone || "no zone"} · ${count} node${count === 1 ? "" : "s"}`);
      wanted.push(head);
      keep.add(key);
    }
    let row = nodeRows.get(node.id);
    if (!row) {
      row = nodeRow(node);
      nodeRows.set(node.id, row);
    }
    updateNodeRow(row, node, fleet.ttl);
    wanted.push(row);
    keep.add(node.id);
  }
  for (const [key, row] of nodeRows) {
    if (!keep.has(key)) {
      row.remove();
      nodeRows.delete(key);
    }
  }
  // Reorder only when the order changed: moving a row would take the focus from it.
  const current = Array.from(body.children);
  if (current.length !== wanted.length || current.some((row, i) => row !== wanted[i])) {
    wanted.forEach((row, i) => {
      if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
    });
  }
  let note = `${shown.length} of ${fleet.nodes.length + fleet.more} nodes shown`;
  if (fleet.more) note += ` (the hub sends the first ${fleet.nodes.length})`;
  setText($("fleet-note"), note);
}

function syncOptions(select, values, allLabel) {
  const have = Array.from(select.options).slice(1).map((o) => o.value);
  if (have.join("\n") === values.join("\n")) return;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, allLabel));
  for (const value of values) select.append(el("option", { value }, value || "(no zone)"));
  select.value = values.includes(chosen) ? chosen : "";
}

function syncZoneChoices(zones) {
  const box = $("push-zones");
  const have = Array.from(box.querySelectorAll("input")).map((i) => i.value);
  if (have.join("\n") === zones.join("\n")) return;
  const ticked = new Set(Array.from(box.querySelectorAll("input:checked")).map((i) => i.value));
  box.replaceChildren();
  for (const zone of zones) {
    if (!zone) continue;
    const input = el("input", { type: "checkbox", value: zone, checked: ticked.has(zone) });
    box.append(el("label", {}, input, ` ${zone}`));
  }
  if (!box.children.length) box.append(el("span", { class: "muted" }, "no zones in the fleet"));
}

$("zone-filter").addEventListener("change", (e) => {
  filters.zone = e.target.value;
  if (lastSnapshot) renderFleet(lastSnapshot.fleet);
});
$("state-filter").addEventListener("change", (e) => {
  filters.state = e.target.value;
  if (lastSnapshot) renderFleet(lastSnapshot.fleet);
});

$("node-rows").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const id = button.dataset.node;
  const node = lastSnapshot?.fleet.nodes.find((n) => String(n.id) === id);
  const who = node ? `node ${id} (${node.name || node.addr}, ${node.zone || "no zone"})` : `node ${id}`;
  const questions = {
    drain: `Drain ${who}? It keeps its work but is no longer handed out, whatever its heartbeats say, until you bring it back.`,
    undrain: `Bring back ${who}? It is handed out again with the free capacity its heartbeats report.`,
    deregister: `Deregister zombie ${who}? It is removed from the hub; if it comes back it registers again.`,
  };
  await act(questions[button.dataset.action], `/console/api/nodes/${encodeURIComponent(id)}/${button.dataset.action}`);
});

// -- pushes ----------------------------------------------------------------------------

const pushCards = new Map();

function pushCard(push) {
  const card = el("article", { class: "push", "data-push": push.key });
  card.append(
    el("div", { class: "push-head" },
      el("span", { class: "badge" }),
      el("span", { class: "push-title" }),
      el("span", { class: "push-meta" })),
    el("p", { class: "push-message" }),
    el("div", { class: "scroll" },
      el("table", {},
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "node"), el("th", { scope: "col", class: "opt" }, "role"),
          el("th", { scope: "col" }, "progress"), el("th", { scope: "col", class: "num" }, "%"),
          el("th", { scope: "col", class: "num opt" }, "down"),
          el("th", { scope: "col", class: "num opt" }, "up"),
          el("th", { scope: "col", class: "num opt" }, "time left"),
          el("th", { scope: "col" }, "outcome"))),
        el("tbody"))),
  );
  return card;
}

function pushRow(row) {
  const state = row.outcome === "failed" ? "failed" : row.done ? "done" : "";
  const bar = el("progress", { max: 100, value: row.percent, class: state,
    "aria-label": `${row.nodeid} ${row.percent}%` });
  const outcome = row.error ? `failed: ${row.error}` : row.outcome;
  return el("tr", { "data-nodeid": row.nodeid },
    el("td", {}, row.nodeid, el("span", { class: "addr" }, row.zone || "")),
    el("td", { class: "opt" }, row.role || "–"),
    el("td", { class: "bar" }, bar),
    el("td", { class: "num pct" }, `${row.percent.toFixed(1)} %`),
    el("td", { class: "num opt" }, row.done ? "–" : rate(row.down)),
    el("td", { class: "num opt" }, row.done ? "–" : rate(row.up)),
    el("td", { class: "num opt" }, row.done ? "–" : duration(row.timeleft)),
    el("td", { class: `outcome ${state}` }, outcome));
}

function renderPushes(pushes, more) {
  const list = $("push-list");
  const keep = new Set();
  pushes.forEach((push, i) => {
    let card = pushCards.get(push.key);
    if (!card) {
      card = pushCard(push);
      pushCards.set(push.key, card);
    }
    keep.add(push.key);
    const [head, message] = [card.children[0], card.children[1]];
    const badge = head.children[0];
    setText(badge, push.state);
    badge.className = `badge ${push.state}`;
    setText(head.children[1], push.title);
    const meta = [`${push.done}/${push.total} done`];
    if (push.failed) meta.push(`${push.failed} failed`);
    if (push.down) meta.push(rate(push.down));
    if (push.filesize) meta.push(bytes(push.filesize));
    if (push.origin_bytes !== null && push.origin_bytes !== undefined && push.filesize) {
      meta.push(`origin sent ${(push.origin_bytes / push.filesize).toFixed(2)} × the file`);
    }
    if (push.source === "collector") meta.push("seen by the collector");
    setText(head.children[2], meta.join(" · "));
    setText(message, push.message || "");
    const rows = push.nodes.map(pushRow);
    if (push.more_nodes) {
      rows.push(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, `and ${push.more_nodes} more nodes`)));
    }
    card.querySelector("tbody").replaceChildren(...rows);
    if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
  });
  for (const [key, card] of pushCards) {
    if (!keep.has(key)) {
      card.remove();
      pushCards.delete(key);
    }
  }
  let note = pushes.length ? "" : "No pushes yet: start one above, or with `smartget push`.";
  if (more) note = `${more} older pushes not shown.`;
  setText($("push-note"), note);
}

$("push-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const urls = $("push-urls").value.split("\n").map((u) => u.trim()).filter(Boolean);
  const zones = Array.from(document.querySelectorAll("#push-zones input:checked")).map((i) => i.value);
  const countText = $("push-count").value.trim();
  const count = countText ? Number.parseInt(countText, 10) : null;
  if (!urls.length) return;
  const where = zones.length ? `zone${zones.length > 1 ? "s" : ""} ${zones.join(", ")}` : "every zone";
  const many = count ? `${count} node${count === 1 ? "" : "s"}` : "every node";
  const what = urls.length === 1 ? urls[0] : `${urls.length} files`;
  const result = await act(`Push ${what} to ${many} in ${where}?`, "/console/api/pushes",
    { urls, zones, count });
  if (result?.ok) {
    $("push-urls").value = "";
    $("push-box").open = false;
  }
});

// -- charts ----------------------------------------------------------------------------

const W = 600, H = 170, LEFT = 62, RIGHT = 8, TOP = 10, BOTTOM = 22;

function drawChart(node, at, series, format, now, integer = false, least = 1) {
  const span = 3600;
  const x = (t) => LEFT + ((t - (now - span)) / span) * (W - LEFT - RIGHT);
  let top = 0;
  for (const s of series) for (const v of s.values) top = Math.max(top, v);
  // Whole numbers get an even top, so that the middle line is a whole number too.
  if (integer) top = Math.max(2, 2 * Math.ceil((top * 1.1) / 2));
  else top = Math.max(top * 1.1, least);
  const y = (v) => H - BOTTOM - (v / top) * (H - TOP - BOTTOM);
  const parts = [];
  for (const frac of [0, 0.5, 1]) {
    const yy = y(top * frac);
    parts.push(svg("line", { class: "grid-line", x1: LEFT, x2: W - RIGHT, y1: yy, y2: yy }));
    parts.push(svg("text", { x: LEFT - 6, y: yy + 4, "text-anchor": "end" }, format(top * frac)));
  }
  for (const [label, t] of [["−60 min", now - span], ["−30 min", now - span / 2], ["now", now]]) {
    const anchor = label === "now" ? "end" : label === "−60 min" ? "start" : "middle";
    parts.push(svg("text", { x: x(t), y: H - 6, "text-anchor": anchor }, label));
  }
  for (const s of series) {
    const points = s.values.map((v, i) => `${x(at[i]).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    if (points) parts.push(svg("polyline", { class: s.cls, points }));
  }
  if (!at.length) parts.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no samples yet"));
  node.replaceChildren(...parts);
}

function renderCharts(history, now) {
  drawChart($("chart-rate"), history.at,
    [{ cls: "down", values: history.down }, { cls: "up", values: history.up }], rate, now,
    false, 1024);
  drawChart($("chart-swarms"), history.at,
    [{ cls: "swarms", values: history.swarms }, { cls: "peers", values: history.peers }],
    (v) => String(Math.round(v)), now, true);
}

function renderLive(live) {
  setText(document.querySelector('#summary dd[data-stat="down"]'), rate(live.down));
  setText(document.querySelector('#summary dd[data-stat="swarms"]'), live.swarms);
}

// -- swarms and hubs ---------------------------------------------------------------------

function renderSwarms(swarms, more) {
  const rows = swarms.map((s) => el("tr", { "data-sha1": s.sha1 },
    el("td", { title: s.sha1 }, s.name || s.sha1.slice(0, 12), el("span", { class: "addr" }, s.sha1.slice(0, 8))),
    el("td", { class: "num seeds" }, s.seeds),
    el("td", { class: "num leechers" }, s.leechers),
    el("td", { class: "num completed" }, s.completed)));
  $("swarm-rows").replaceChildren(...rows);
  let note = swarms.length ? "Counts from the hub's tracker: peers that announced lately." : "No torrents tracked yet.";
  if (more) note += ` ${more} more not shown.`;
  setText($("swarm-note"), note);
}

let hubStarted = null;

function renderHubs(hubs) {
  $("hub-list").replaceChildren(...hubs.map((h) => el("li", { "data-hub": h.url },
    el("span", { class: `badge ${h.up ? "available" : "zombie"}` }, h.up ? "up" : "down"),
    el("strong", {}, h.url || "this hub"),
    el("span", { class: "muted hub-started" }, `started ${clock(h.started)}`),
    el("span", { class: "muted" }, `version ${h.version}${h.this ? " · serving this page" : ""}`))));
  const self = hubs.find((h) => h.this);
  if (self && hubStarted !== null && self.started !== hubStarted) {
    showResult(true, `The hub restarted at ${clock(self.started)}; the console reconnected.`);
  }
  if (self) hubStarted = self.started;
}

// -- the live stream -------------------------------------------------------------------

let source = null;
let backoff = 1000;
let retry = null;
let lastEvent = 0;

function setConn(state, text) {
  const conn = $("conn");
  conn.dataset.state = state;
  document.body.dataset.conn = state;
  setText(conn, text);
  if (state !== "live") {
    // What is shown is the last thing the hub said: say so where it matters.
    for (const badge of document.querySelectorAll("#hub-list .badge")) {
      badge.className = "badge zombie";
      setText(badge, "unreachable");
    }
  }
}

function render(snapshot) {
  lastSnapshot = snapshot;
  renderFleet(snapshot.fleet);
  renderPushes(snapshot.pushes, snapshot.more_pushes);
  renderCharts(snapshot.history, snapshot.at);
  renderLive(snapshot.live);
  renderSwarms(snapshot.swarms, snapshot.more_swarms);
  renderHubs(snapshot.hubs);
  setText($("updated"), `updated ${clock(snapshot.at)}`);
}

function connect() {
  if (source) source.close();
  source = new EventSource("/console/events");
  source.addEventListener("snapshot", (e) => {
    lastEvent = Date.now();
    backoff = 1000;
    setConn("live", "live");
    render(JSON.parse(e.data));
  });
  source.addEventListener("signedout", () => location.assign("/login"));
  source.addEventListener("error", () => {
    setConn("reconnecting", "reconnecting…");
    if (source.readyState === EventSource.CLOSED) reconnectLater();
  });
}

function reconnectLater() {
  clearTimeout(retry);
  retry = setTimeout(async () => {
    try {
      const reply = await fetch("/console/api/snapshot", { credentials: "same-origin" });
      if (reply.status === 401) {
        location.assign("/login");
        return;
      }
    } catch {
      // the hub is still away: try the stream anyway, it says so
    }
    connect();
  }, backoff);
  backoff = Math.min(backoff * 2, 10000);
}

// A stream that stays silent (a proxy holding it, a hub that hangs) is restarted too.
setInterval(() => {
  if (source && source.readyState === EventSource.OPEN && lastEvent && Date.now() - lastEvent > 10000) {
    setConn("stalled", "no news for 10 s: reconnecting…");
    source.close();
    lastEvent = 0;
    reconnectLater();
  }
}, 2000);

$("signout").addEventListener("click", async () => {
  const result = await post("/logout");
  if (result.ok) location.assign("/login");
  else showResult(false, result.message);
});

connect();
