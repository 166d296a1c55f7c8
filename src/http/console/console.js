// The web console: one WebSocket to the server's main port, speaking the JSON protocol
// (each request an object with an id; replies matched by id; pushes have "event").
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let ws = null;
let nextId = 1;
const pending = new Map();
const subscribed = new Set();
let currentTable = null;
let columns = [];

function request(obj) {
  return new Promise((resolve) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      resolve({ ok: false, error: { code: "disconnected", message: "not connected" } });
      return;
    }
    const id = nextId++;
    pending.set(id, resolve);
    ws.send(JSON.stringify(Object.assign({}, obj, { id })));
  });
}

function text(v) {
  if (v === null || v === undefined) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function el(tag, cls, content) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (content !== undefined) e.textContent = content;
  return e;
}

// Fills <table id> from a list of objects; `extra(row)` may add a cell of buttons.
function fill(id, items, extra) {
  const t = $(id);
  t.replaceChildren();
  if (!items || items.length === 0) {
    const tr = el("tr");
    tr.appendChild(el("td", "empty", "none"));
    t.appendChild(tr);
    return;
  }
  const keys = Object.keys(items[0]);
  const head = el("tr");
  keys.forEach((k) => head.appendChild(el("th", null, k)));
  if (extra) head.appendChild(el("th"));
  t.appendChild(head);
  for (const item of items) {
    const tr = el("tr");
    keys.forEach((k) => tr.appendChild(el("td", null, text(item[k]))));
    if (extra) {
      const td = el("td");
      extra(item, td);
      tr.appendChild(td);
    }
    t.appendChild(tr);
  }
}

// The first array a list reply carries.
function listOf(reply) {
  for (const [k, v] of Object.entries(reply)) {
    if (Array.isArray(v) && k !== "id") return v;
  }
  return [];
}

async function refresh() {
  const clients = await request({ op: "clients" });
  if (clients.ok) {
    fill("clients", clients.clients);
    $("clients-count").textContent = clients.count;
  }
  const channels = await request({ op: "channels" });
  if (channels.ok) {
    $("channels-count").textContent = channels.count;
    fill("channels", channels.channels, (c, td) => {
      const on = subscribed.has(c.name);
      const b = el("button", "small", on ? "Leave" : "Subscribe");
      b.onclick = () => (on ? unsubscribe(c.name) : subscribe(c.name));
      td.appendChild(b);
    });
  }
  const services = await request({ op: "services" });
  if (services.ok) fill("services", services.services);
  const tasks = await request({ op: "tasks" });
  if (tasks.ok) fill("tasks", listOf(tasks));
  const actions = await request({ op: "actions" });
  if (actions.ok) fill("actions", listOf(actions));
  const tables = await request({ op: "tables" });
  if (tables.ok) showTables(listOf(tables));
}

function showTables(list) {
  const box = $("table-list");
  box.replaceChildren();
  if (list.length === 0) box.appendChild(el("span", "empty", "no tables"));
  for (const t of list) {
    const name = typeof t === "string" ? t : t.name || t.table;
    const b = el("button", name === currentTable ? "small active" : "small", name);
    b.onclick = () => openTable(name);
    box.appendChild(b);
  }
}

function log(cls, parts) {
  const li = el("li", cls);
  for (const [c, t] of parts) li.appendChild(el("span", c, t));
  const list = $("messages");
  list.appendChild(li);
  while (list.children.length > 500) list.removeChild(list.firstChild);
  list.scrollTop = list.scrollHeight;
}

async function subscribe(channel) {
  const r = await request({ op: "sub", channel });
  if (r.ok) {
    subscribed.add(channel);
    log("meta", [["meta", "subscribed to " + channel]]);
  } else {
    log("error", [["error", r.error.code + ": " + r.error.message]]);
  }
  $("subs").textContent = [...subscribed].join(", ");
  refresh();
}

async function unsubscribe(channel) {
  await request({ op: "unsub", channel });
  subscribed.delete(channel);
  $("subs").textContent = [...subscribed].join(", ");
  refresh();
}

async function openTable(name) {
  if (currentTable && currentTable !== name) await request({ op: "unwatch", table: currentTable });
  currentTable = name;
  const rows = await request({ op: "select", table: name, limit: 500 });
  const t = $("rows");
  t.replaceChildren();
  if (!rows.ok) {
    const tr = el("tr");
    tr.appendChild(el("td", "error", rows.error.code + ": " + rows.error.message));
    t.appendChild(tr);
    return;
  }
  columns = rows.rows.length ? Object.keys(rows.rows[0]) : [];
  const schema = await request({ op: "schema", table: name });
  if (schema.ok && columns.length === 0) {
    columns = ["id"].concat(listOf(schema).map((c) => (typeof c === "string" ? c.split(":")[0] : c.name)));
  }
  const head = el("tr");
  head.id = "rows-head";
  columns.forEach((c) => head.appendChild(el("th", null, c)));
  t.appendChild(head);
  rows.rows.forEach((r) => t.appendChild(rowElement(r)));
  await request({ op: "watch", table: name });
  showTables([...$("table-list").children].map((b) => b.textContent));
}

function rowElement(row) {
  const tr = el("tr");
  tr.dataset.id = row.id;
  columns.forEach((c) => tr.appendChild(el("td", null, text(row[c]))));
  return tr;
}

function onRow(ev) {
  if (ev.table !== currentTable) return;
  const t = $("rows");
  if (ev.change === "drop") {
    t.replaceChildren();
    currentTable = null;
    refresh();
    return;
  }
  const old = t.querySelector(`tr[data-id="${ev.row.id}"]`);
  if (ev.change === "delete") {
    if (old) old.remove();
    return;
  }
  const fresh = rowElement(ev.row);
  fresh.classList.add("flash");
  if (old) old.replaceWith(fresh);
  else t.appendChild(fresh);
}

function onEvent(ev) {
  switch (ev.event) {
    case "msg":
      log("msg", [["ch", ev.channel], ["from", ev.from], ["data", text(ev.data)]]);
      break;
    case "dm":
      log("dm", [["ch", "(direct)"], ["from", ev.from], ["data", text(ev.data)]]);
      break;
    case "join":
    case "leave":
      log("meta", [["meta", ev.name + (ev.event === "join" ? " joined " : " left ") + ev.channel]]);
      break;
    case "row":
      onRow(ev);
      break;
    case "dropped":
      subscribed.delete(ev.channel);
      log("meta", [["meta", "channel " + ev.channel + " was dropped"]]);
      refresh();
      break;
    case "ping":
      ws.send(JSON.stringify({ op: "pong" }));
      break;
    case "bye":
      log("error", [["error", "the server closed the connection: " + ev.reason]]);
      break;
  }
}

function setStatus(on, text) {
  const s = $("status");
  s.className = "status " + (on ? "on" : "off");
  s.textContent = text;
}

async function whoami() {
  const me = await request({ op: "whoami" });
  if (me.ok) $("who").textContent = "you are " + me.client.name + (me.client.user ? " (" + me.client.user + ")" : "");
}

async function connect() {
  let port = null;
  try {
    const cfg = await (await fetch("/console.json")).json();
    port = cfg.port;
    $("version").textContent = cfg.version;
  } catch (e) {
    setStatus(false, "cannot read /console.json");
    return;
  }
  const token = sessionStorage.getItem("leviathan-token");
  const url = "ws://" + location.hostname + ":" + port + "/" + (token ? "?token=" + encodeURIComponent(token) : "");
  ws = new WebSocket(url);
  ws.onopen = async () => {
    setStatus(true, "connected to :" + port);
    await whoami();
    const subs = (params.get("sub") || "").split(",").filter(Boolean);
    for (const s of subs) await subscribe(s);
    await refresh();
    if (params.get("table")) await openTable(params.get("table"));
    document.body.dataset.ready = "yes";
  };
  ws.onmessage = (e) => {
    let v;
    try {
      v = JSON.parse(e.data);
    } catch (_) {
      return; // the HELLO greeting
    }
    if (v.event) return onEvent(v);
    if (v.id !== undefined && pending.has(v.id)) {
      const resolve = pending.get(v.id);
      pending.delete(v.id);
      resolve(v);
    }
  };
  ws.onclose = () => {
    setStatus(false, "disconnected; retrying…");
    document.body.dataset.ready = "";
    for (const resolve of pending.values()) resolve({ ok: false, error: { code: "disconnected", message: "connection lost" } });
    pending.clear();
    setTimeout(connect, 1500);
  };
}

$("login").onsubmit = async (e) => {
  e.preventDefault();
  const r = await request({ op: "login", user: $("user").value, password: $("password").value });
  if (r.ok) {
    if (r.login && r.login.session) sessionStorage.setItem("leviathan-token", r.login.session);
    $("password").value = "";
    await whoami();
    refresh();
  } else {
    $("who").textContent = r.error.code + ": " + r.error.message;
  }
};

$("create").onsubmit = async (e) => {
  e.preventDefault();
  const r = await request({ op: "create", channel: $("create-name").value });
  if (!r.ok) log("error", [["error", r.error.code + ": " + r.error.message]]);
  $("create-name").value = "";
  refresh();
};

$("publish").onsubmit = async (e) => {
  e.preventDefault();
  let data = $("pub-data").value;
  try {
    data = JSON.parse(data);
  } catch (_) {
    // plain text
  }
  const r = await request({ op: "pub", channel: $("pub-channel").value, data });
  if (!r.ok) log("error", [["error", r.error.code + ": " + r.error.message]]);
};

$("call").onsubmit = async (e) => {
  e.preventDefault();
  let data = null;
  const raw = $("call-args").value.trim();
  const out = $("call-result");
  if (raw) {
    try {
      data = JSON.parse(raw);
    } catch (err) {
      out.className = "result error";
      out.textContent = "the arguments are not JSON: " + err.message;
      return;
    }
  }
  const r = await request({ op: "call", action: $("call-action").value, data });
  out.className = r.ok ? "result" : "result error";
  out.textContent = r.ok ? JSON.stringify(r, null, 2) : r.error.code + ": " + r.error.message;
};

setInterval(() => {
  if (ws && ws.readyState === WebSocket.OPEN) refresh();
}, 5000);
connect();
