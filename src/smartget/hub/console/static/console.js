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

// -- push jobs --------------------------------------------------------------------------

const jobCards = new Map(); // job id -> <article>
const SOURCE_KEYS = [
  ["origin", "origin", "origin"],
  ["peer_same_zone", "same", "peers, same zone"],
  ["peer_other_zone", "other", "peers, other zones"],
];
const FINAL = new Set(["done", "partial", "failed", "cancelled"]);

// A bar of where bytes came from: one SVG rect per source, widths as attributes.
function sourceBar(counts, width, height) {
  const total = SOURCE_KEYS.reduce((sum, [key]) => sum + (counts[key] || 0), 0);
  const parts = [svg("rect", { class: "none", x: 0, y: 0, width, height, rx: 2 })];
  let x = 0;
  for (const [key, cls] of SOURCE_KEYS) {
    const w = total ? ((counts[key] || 0) / total) * width : 0;
    if (w > 0) parts.push(svg("rect", { class: cls, x: x.toFixed(1), y: 0, width: w.toFixed(1), height }));
    x += w;
  }
  const bar = svg("svg", { class: "sources", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": sourcesText(counts) || "no verified bytes yet" });
  bar.replaceChildren(...parts);
  return bar;
}

function sourcesText(counts) {
  const total = SOURCE_KEYS.reduce((sum, [key]) => sum + (counts[key] || 0), 0);
  if (!total) return "";
  return SOURCE_KEYS.map(([key, , label]) => `${label} ${bytes(counts[key] || 0)}`).join(" · ");
}

function sourcesShort(counts) {
  const total = SOURCE_KEYS.reduce((sum, [key]) => sum + (counts[key] || 0), 0);
  if (!total) return "–";
  const peers = (counts.peer_same_zone || 0) + (counts.peer_other_zone || 0);
  const share = Math.round((100 * peers) / total);
  return share >= 50 ? `${share} % peers` : `${100 - share} % origin`;
}

function jobCard(job) {
  const cancel = el("button", { type: "button", class: "small danger", "data-action": "cancel-job",
    "data-job": job.id, "aria-label": `cancel job ${job.id}` }, "Cancel…");
  const card = el("article", { class: "job", "data-job": job.id, "aria-label": `job ${job.id}` },
    el("div", { class: "job-head" },
      el("span", { class: "badge" }),
      el("span", { class: "job-title" }),
      el("span", { class: "job-id addr" }),
      el("span", { class: "job-meta" }),
      el("span", { class: "job-actions" }, cancel)),
    el("p", { class: "job-reason" }),
    el("div", { class: "job-body" },
      el("div", { class: "job-sources" },
        el("span", { class: "job-sources-label muted" }, "bytes by source"),
        el("span", { class: "job-sources-bar" }),
        el("span", { class: "job-sources-text" }),
        el("ul", { class: "job-files", "aria-label": "files" })),
      el("figure", { class: "job-figure" },
        el("figcaption", { class: "job-chart-caption" }),
        svg("svg", { class: "chart job-chart", viewBox: "0 0 420 150", role: "img",
          "aria-label": `nodes complete over time, job ${job.id}` }))),
    el("div", { class: "scroll job-nodes" },
      el("table", {},
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "node"), el("th", { scope: "col", class: "opt" }, "role"),
          el("th", { scope: "col" }, "progress"), el("th", { scope: "col", class: "num pct-head" }, "%"),
          el("th", { scope: "col", class: "num opt" }, "down"),
          el("th", { scope: "col", class: "num opt" }, "up"),
          el("th", { scope: "col", class: "num opt" }, "time left"),
          el("th", { scope: "col", class: "opt" }, "bytes from"),
          el("th", { scope: "col" }, "outcome"))),
        el("tbody"))),
  );
  return card;
}

// ZONE_IP in two pieces, so that a phone's narrow column breaks it after the zone.
function nodeName(nodeid) {
  const cut = nodeid.indexOf("_");
  if (cut < 0) return [nodeid];
  return [el("span", { class: "nid" }, nodeid.slice(0, cut + 1)),
    el("span", { class: "nid" }, nodeid.slice(cut + 1))];
}

function rowClass(row) {
  if (row.state === "failed" || row.state === "partial") return "failed";
  if (row.state === "cancelled") return "stopped";
  return row.done ? "done" : "";
}

function jobRow(row) {
  const state = rowClass(row);
  const bar = el("progress", { max: 100, value: row.percent, class: state,
    "aria-label": `${row.nodeid} ${row.percent}%` });
  const running = row.state === "running";
  const from = el("td", { class: "opt from", title: sourcesText(row.bytes) || "known once the copy is verified" },
    sourceBar(row.bytes, 56, 9), ` ${sourcesShort(row.bytes)}`);
  const outcome = el("td", { class: `outcome ${state}` }, el("span", { class: "what" }, row.outcome));
  if (row.reason && row.reason !== row.outcome) outcome.append(el("span", { class: "why" }, row.reason));
  return el("tr", { "data-nodeid": row.nodeid, "data-state": row.state },
    el("td", {}, ...nodeName(row.nodeid), el("span", { class: "addr" }, row.zone || "")),
    el("td", { class: "opt" }, row.role || "–"),
    el("td", { class: "bar" }, bar),
    el("td", { class: "num pct" }, `${row.percent.toFixed(1)} %`),
    el("td", { class: "num opt" }, running ? rate(row.down) : "–"),
    el("td", { class: "num opt" }, running ? rate(row.up) : "–"),
    el("td", { class: "num opt" }, running ? duration(row.timeleft) : "–"),
    from,
    outcome);
}

// Nodes complete against seconds from the job's start, and the lower bound as a step.
function drawJobChart(node, caption, job) {
  const W2 = 420, H2 = 150, L = 34, R = 10, T = 10, B = 22;
  const curve = job.curve || [];
  const bound = job.bound;
  const total = Math.max(1, job.total);
  let span = job.elapsed;
  for (const [t] of curve) span = Math.max(span, t);
  if (bound) span = Math.max(span, bound.all * 1.15);
  span = Math.max(span, 1);
  const x = (t) => L + (Math.min(t, span) / span) * (W2 - L - R);
  const y = (n) => H2 - B - (n / total) * (H2 - T - B);
  const parts = [];
  const ticks = total <= 4 ? [...Array(total + 1).keys()] : [0, Math.round(total / 2), total];
  for (const n of ticks) {
    parts.push(svg("line", { class: "grid-line", x1: L, x2: W2 - R, y1: y(n), y2: y(n) }));
    parts.push(svg("text", { x: L - 5, y: y(n) + 4, "text-anchor": "end" }, String(n)));
  }
  parts.push(svg("text", { x: L, y: H2 - 6, "text-anchor": "start" }, "0 s"));
  parts.push(svg("text", { x: W2 - R, y: H2 - 6, "text-anchor": "end" }, duration(span)));
  if (bound) {
    const pts = [[0, 0], [bound.seed, 0], [bound.seed, 1], [bound.all, 1], [bound.all, bound.nodes],
      [span, bound.nodes]];
    parts.push(svg("polyline", { class: "bound",
      points: pts.map(([t, n]) => `${x(t).toFixed(1)},${y(n).toFixed(1)}`).join(" ") }));
  }
  const steps = [[0, 0]];
  for (const [t, n] of curve) steps.push([t, steps[steps.length - 1][1]], [t, n]);
  const end = job.state === "running" ? job.elapsed : Math.max(job.elapsed, curve.length ? curve[curve.length - 1][0] : 0);
  steps.push([end, steps[steps.length - 1][1]]);
  parts.push(svg("polyline", { class: "done-line",
    points: steps.map(([t, n]) => `${x(t).toFixed(1)},${y(n).toFixed(1)}`).join(" ") }));
  if (job.state === "running") {
    parts.push(svg("line", { class: "now-line", x1: x(job.elapsed), x2: x(job.elapsed), y1: T, y2: H2 - B }));
  }
  node.replaceChildren(...parts);
  let text = `Nodes with every file, ${curve.length ? curve[curve.length - 1][1] : 0} of ${job.total}`;
  if (bound) {
    text += bound.striped
      ? ` · lower bound ${bound.all.toFixed(1)} s: each node fetched its stripe from the origin and uploads at ≤ ${rate(job.upload_limit)}`
      : ` · lower bound ${bound.all.toFixed(1)} s: every byte leaves the seed at ≤ ${rate(job.upload_limit)}`;
  } else if (job.upload_limit) {
    text += " · lower bound once every torrent is made";
  } else {
    text += " · no lower bound: the job sets no upload cap";
  }
  setText(caption, text);
}

const FILE_STATES = {
  pending: "waiting for the seed",
  striping: "every node fetches its stripe from the origin",
  making: "the seed makes its torrent",
  made: "torrent made, seeded",
  failed: "failed",
};

function jobFiles(job) {
  const items = job.files.map((f) => el("li", {},
    el("span", { class: "file-name", title: f.url }, f.name),
    el("span", { class: "muted" }, ` ${f.filesize ? bytes(f.filesize) : ""} ${FILE_STATES[f.state] || f.state}`),
    f.reason ? el("span", { class: "why" }, f.reason) : ""));
  if (job.more_files) items.push(el("li", { class: "muted" }, `and ${job.more_files} more files`));
  if (job.deadline_in !== null) {
    items.push(el("li", { class: "muted" }, `deadline in ${duration(job.deadline_in)}`));
  }
  return items;
}

function jobMeta(job) {
  const meta = [`${job.done}/${job.total} nodes done`];
  if (job.failed) meta.push(`${job.failed} not done`);
  if (job.state === "running") {
    if (job.down) meta.push(rate(job.down));
    if (job.timeleft !== null) meta.push(`${duration(job.timeleft)} left`);
    meta.push(`running ${duration(job.elapsed)}`);
  } else if (job.started !== null) {
    meta.push(`took ${duration(job.elapsed)}`);
  } else {
    meta.push(`queued at ${clock(job.created)}`);
  }
  if (job.size) meta.push(bytes(job.size));
  if (job.zones.length) meta.push(`zones ${job.zones.join(", ")}`);
  if (job.upload_limit) meta.push(`cap ${rate(job.upload_limit)} per node`);
  if (job.priority) meta.push(`priority ${job.priority}`);
  return meta.join(" · ");
}

function renderJobs(jobs, more, stats) {
  const list = $("job-list");
  const keep = new Set();
  jobs.forEach((job, i) => {
    let card = jobCards.get(job.id);
    if (!card) {
      card = jobCard(job);
      jobCards.set(job.id, card);
    }
    keep.add(job.id);
    card.dataset.state = job.state;
    const head = card.querySelector(".job-head");
    const badge = head.querySelector(".badge");
    setText(badge, job.state);
    badge.className = `badge ${job.state}`;
    setText(head.querySelector(".job-title"), job.title);
    setText(head.querySelector(".job-id"), job.id);
    setText(head.querySelector(".job-meta"), jobMeta(job));
    const cancel = head.querySelector("button[data-action=cancel-job]");
    cancel.hidden = !job.cancellable;
    setText(card.querySelector(".job-reason"), job.reason || "");
    const total = SOURCE_KEYS.reduce((sum, [key]) => sum + (job.bytes[key] || 0), 0);
    let sources = sourcesText(job.bytes) || "known as each copy is verified";
    if (total && job.size) {
      sources += ` · the origin sent ${(job.bytes.origin / job.size).toFixed(2)} × the files`;
    }
    card.querySelector(".job-sources-bar").replaceChildren(sourceBar(job.bytes, 240, 12));
    setText(card.querySelector(".job-sources-text"), sources);
    card.querySelector(".job-files").replaceChildren(...jobFiles(job));
    card.classList.toggle("brief", !job.detailed);
    if (job.detailed) {
      drawJobChart(card.querySelector(".job-chart"), card.querySelector(".job-chart-caption"), job);
      const rows = job.nodes.map(jobRow);
      if (!rows.length) {
        rows.push(el("tr", {}, el("td", { colSpan: 9, class: "muted" },
          job.state === "queued" ? "waiting for a running slot or free nodes" : "no nodes")));
      }
      if (job.more_nodes) {
        rows.push(el("tr", {}, el("td", { colSpan: 9, class: "muted" }, `and ${job.more_nodes} more nodes`)));
      }
      card.querySelector("tbody").replaceChildren(...rows);
    }
    if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
  });
  for (const [id, card] of jobCards) {
    if (!keep.has(id)) {
      card.remove();
      jobCards.delete(id);
    }
  }
  let note = jobs.length ? "" : "No push jobs yet: start one above, or with `smartget push`.";
  if (more) note = `${more} older jobs not shown: smartget jobs list.`;
  const brief = jobs.filter((j) => !j.detailed).length;
  if (brief) note = `${note} Older jobs in one line each: smartget jobs show ID has their nodes.`.trim();
  setText($("job-note"), note);
  setText($("job-counts"), `${stats.running} running · ${stats.queued} queued`);
  setText(document.querySelector('#summary dd[data-stat="jobs"]'), stats.running);
}

$("job-list").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action=cancel-job]");
  if (!button) return;
  const id = button.dataset.job;
  const job = lastSnapshot?.jobs.find((j) => j.id === id);
  const what = job ? `${job.title} (${job.done}/${job.total} nodes done)` : "";
  await act(`Cancel job ${id} ${what}? What is not done is stopped on every node; verified copies stay.`,
    `/console/api/jobs/${encodeURIComponent(id)}/cancel`);
});

$("push-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const urls = $("push-urls").value.split("\n").map((u) => u.trim()).filter(Boolean);
  const zones = Array.from(document.querySelectorAll("#push-zones input:checked")).map((i) => i.value);
  const countText = $("push-count").value.trim();
  const count = countText ? Number.parseInt(countText, 10) : null;
  const capText = $("push-cap").value.trim();
  const cap = capText ? Math.round(Number.parseFloat(capText) * 1024 * 1024) : 0;
  if (!urls.length) return;
  const where = zones.length ? `zone${zones.length > 1 ? "s" : ""} ${zones.join(", ")}` : "every zone";
  const many = count ? `${count} node${count === 1 ? "" : "s"}` : "every node";
  const what = urls.length === 1 ? urls[0] : `${urls.length} files`;
  const capped = cap ? `, at most ${rate(cap)} up per node` : "";
  const result = await act(`Push ${what} to ${many} in ${where}${capped}? The hub runs it as a job.`,
    "/console/api/jobs", { urls, zones, count, upload_limit: cap });
  if (result?.ok) {
    $("push-urls").value = "";
    $("push-box").open = false;
  }
});

// -- charts ----------------------------------------------------------------------------

const W = 600, H = 170, LEFT = 62, RIGHT = 8, TOP = 10, BOTTOM = 22;

// The last hour, or less while the hub has not been up that long (at least 5 minutes):
// a few minutes of samples drawn over an hour would be a sliver at the right edge.
function chartSpan(at, now) {
  if (!at.length) return 3600;
  const minutes = Math.ceil((now - at[0]) / 300) * 5;
  return Math.min(60, Math.max(5, minutes)) * 60;
}

function drawChart(node, at, series, format, now, integer = false, least = 1) {
  const span = chartSpan(at, now);
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
  const marks = [[`−${span / 60} min`, now - span, "start"], [`−${span / 120} min`, now - span / 2, "middle"],
    ["now", now, "end"]];
  for (const [label, t, anchor] of marks) {
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
  drawChart($("chart-sources"), history.at,
    [{ cls: "origin", values: history.origin }, { cls: "same", values: history.peer_same_zone },
      { cls: "other", values: history.peer_other_zone }], bytes, now, false, 1024);
  const last = (key) => (history[key].length ? history[key][history[key].length - 1] : 0);
  const origin = last("origin");
  const peers = last("peer_same_zone") + last("peer_other_zone");
  setText($("sources-note"), origin + peers
    ? `This hour: origin ${bytes(origin)}, peers ${bytes(peers)} (${Math.round((100 * peers) / (origin + peers))} % from peers).`
    : "No copy verified this hour: bytes are counted as each copy of a job is verified.");
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

// The hubs whose heartbeat is current in the fleet's state (this one first). up is null
// when the state has not answered lately: the others' state is not known then.
function hubBadge(h) {
  if (h.up === null || h.up === undefined) return el("span", { class: "badge busy" }, "unknown");
  return el("span", { class: `badge ${h.up ? "available" : "zombie"}` }, h.up ? "up" : "down");
}

function hubNote(h) {
  const parts = [];
  if (h.version) parts.push(`version ${h.version}`);
  if (h.state) parts.push(`state ${h.state}`);
  if (h.this) parts.push("serving this page");
  else if (h.seen !== null && h.seen !== undefined) parts.push(`heartbeat ${h.seen} s ago`);
  return parts.join(" · ");
}

function renderHubs(hubs) {
  $("hub-list").replaceChildren(...hubs.map((h) => el("li", { "data-hub": h.id || h.url, "data-this": h.this ? "1" : "0" },
    hubBadge(h),
    el("strong", { title: h.id || "" }, h.url || h.text || "this hub"),
    el("span", { class: "muted hub-started" }, `started ${clock(h.started)}`),
    el("span", { class: "muted" }, hubNote(h)))));
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
  renderJobs(snapshot.jobs, snapshot.more_jobs, snapshot.job_stats);
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
