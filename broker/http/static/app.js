// app.js: the dashboard. A hash router (#/overview, #/queues, #/connections,
// #/workers, #/tasks, #/tasks/<id>) over views that each fetch their data from
// the management API and redraw; the current view is refreshed by polling.
//
// Data sources: RabbitMQ-compatible endpoints (/api/overview, /api/queues,
// /api/connections, /api/consumers, queue get/purge/delete) and the task view
// (/api/tasks, /api/task-types, /api/task-summary, /api/workers). Everything
// under /api/ needs HTTP basic auth: the credentials are asked for once and
// kept for the browser session.
"use strict";

// Every 2 s: live enough to watch a queue drain, light on a busy broker.
const POLL_MS = 2000;
// Messages fetched by "Peek" (requeued at once, like RabbitMQ's "Get messages" with requeue).
const PEEK_COUNT = 5;
const PEEK_TRUNCATE_BYTES = 2000;
const VHOST = "/";

const AUTH_KEY = "minibroker-auth";
const DEFAULT_AUTH = btoa("guest:guest");

const $view = document.getElementById("view");
const $status = document.getElementById("status");

// ---- API --------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = {Authorization: "Basic " + (sessionStorage.getItem(AUTH_KEY) || DEFAULT_AUTH)};
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok) {
    let reason = res.statusText;
    try {
      const j = await res.json();
      reason = j.reason || j.error || reason;
    } catch (_) { /* not JSON */ }
    throw new Error(`${res.status} ${reason}`);
  }
  return res.status === 204 ? null : res.json();
}

function askLogin() {
  const dialog = document.getElementById("login");
  if (dialog.open) return;
  // Credentials already given and refused: say so.
  document.getElementById("login-error").textContent = sessionStorage.getItem(AUTH_KEY) ? "Login refused." : "";
  dialog.showModal();
  document.getElementById("login-form").onsubmit = () => {
    const f = new FormData(document.getElementById("login-form"));
    sessionStorage.setItem(AUTH_KEY, btoa(`${f.get("user")}:${f.get("password")}`));
    refresh();
  };
}

const queuePath = (name) => `/api/queues/${encodeURIComponent(VHOST)}/${encodeURIComponent(name)}`;

// ---- formatting ---------------------------------------------------------------

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
const num = (v) => (v === undefined || v === null ? "0" : Number(v).toLocaleString("en-US"));
const rate = (v) => (v ? Number(v).toFixed(1) : "0.0");
const rateOf = (stats, key) => (stats && stats[`${key}_details`] ? stats[`${key}_details`].rate : 0);
const time = (unixSeconds) => (unixSeconds ? new Date(unixSeconds * 1000).toLocaleTimeString() : "");
const seconds = (s) => (s ? (s < 1 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(2)} s`) : "");
const ago = (unixSeconds) => {
  if (!unixSeconds) return "never";
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  return s < 60 ? `${s.toFixed(0)} s ago` : s < 3600 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
};
const badge = (state) => `<span class="badge ${esc(String(state).toLowerCase())}">${esc(state)}</span>`;

function table(columns, rows, empty, rowAttrs = () => "") {
  if (!rows.length) return `<p class="muted empty">${esc(empty)}</p>`;
  const head = columns.map((c) => `<th class="${c.cls || ""}">${esc(c.title)}</th>`).join("");
  const body = rows
    .map((r) => `<tr ${rowAttrs(r)}>${columns.map((c) => `<td class="${c.cls || ""}">${c.html(r)}</td>`).join("")}</tr>`)
    .join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

// ---- views --------------------------------------------------------------------
// Each view: render(params) builds the page once; refresh() updates it (polled).

const views = {};

views.overview = {
  rateChart: null,
  depthChart: null,
  last: null,  // previous counters, for rates when the API gives none
  render() {
    $view.innerHTML = `
      <h1>Overview</h1>
      <section class="cards" id="totals"></section>
      <section><h2>Message rates</h2><div id="rates"></div></section>
      <section><h2>Queued messages</h2><div id="depth"></div></section>`;
    this.rateChart = new LineChart(document.getElementById("rates"), [
      {name: "publish", color: "#2f7ed8"},
      {name: "deliver / get", color: "#1aaf5d"},
      {name: "ack", color: "#f28f43"},
    ], {unit: "/s"});
    this.depthChart = new LineChart(document.getElementById("depth"), [
      {name: "ready", color: "#8a5cd1"},
      {name: "unacked", color: "#d14b5c"},
    ]);
    this.last = null;
  },
  async refresh() {
    const o = await api("/api/overview");
    const t = o.object_totals || {};
    const q = o.queue_totals || {};
    const ms = o.message_stats || {};
    const cards = [
      ["Connections", t.connections], ["Channels", t.channels], ["Consumers", t.consumers],
      ["Queues", t.queues], ["Ready", q.messages_ready], ["Unacked", q.messages_unacknowledged],
    ];
    document.getElementById("totals").innerHTML = cards
      .map(([k, v]) => `<div class="card"><div class="value">${num(v)}</div><div class="label">${k}</div></div>`)
      .join("");
    const now = Date.now();
    const counters = {publish: ms.publish || 0, deliver: ms.deliver_get || 0, ack: ms.ack || 0};
    // Rates as the API reports them; derived from the counters when it does not.
    const derived = (key) => {
      if (!this.last || now <= this.last.t) return 0;
      return Math.max(0, (counters[key] - this.last.c[key]) / ((now - this.last.t) / 1000));
    };
    const r = (key, apiKey) => (ms[`${apiKey}_details`] ? rateOf(ms, apiKey) : derived(key));
    this.rateChart.push(now, [r("publish", "publish"), r("deliver", "deliver_get"), r("ack", "ack")]);
    this.depthChart.push(now, [q.messages_ready || 0, q.messages_unacknowledged || 0]);
    this.last = {t: now, c: counters};
  },
};

views.queues = {
  render() {
    $view.innerHTML = `<h1>Queues</h1><div id="queues"></div><section id="peek" hidden></section>`;
    $view.onclick = (e) => this.action(e);
  },
  async refresh() {
    const queues = await api("/api/queues");
    queues.sort((a, b) => a.name.localeCompare(b.name));
    document.getElementById("queues").innerHTML = table([
      {title: "Name", html: (q) => `<span class="name">${esc(q.name)}</span>${q.durable ? ' <span class="tag">D</span>' : ""}${q.auto_delete ? ' <span class="tag">AD</span>' : ""}${q.exclusive ? ' <span class="tag">Excl</span>' : ""}`},
      {title: "Ready", cls: "n ready", html: (q) => num(q.messages_ready)},
      {title: "Unacked", cls: "n unacked", html: (q) => num(q.messages_unacknowledged)},
      {title: "Total", cls: "n total", html: (q) => num(q.messages)},
      {title: "Consumers", cls: "n consumers", html: (q) => num(q.consumers)},
      {title: "In /s", cls: "n", html: (q) => rate(rateOf(q.message_stats, "publish"))},
      {title: "Out /s", cls: "n", html: (q) => rate(rateOf(q.message_stats, "deliver_get"))},
      {title: "", cls: "actions", html: (q) => `
        <button data-act="peek" data-q="${esc(q.name)}">Peek</button>
        <button data-act="purge" data-q="${esc(q.name)}">Purge</button>
        <button data-act="delete" data-q="${esc(q.name)}" class="danger">Delete</button>`},
    ], queues, "No queues.", (q) => `data-queue="${esc(q.name)}"`);
  },
  async action(e) {
    const b = e.target.closest("button[data-act]");
    if (!b) return;
    const name = b.dataset.q;
    try {
      if (b.dataset.act === "peek") {
        const msgs = await api(queuePath(name) + "/get", {
          method: "POST",
          body: {count: PEEK_COUNT, ackmode: "ack_requeue_true", encoding: "auto", truncate: PEEK_TRUNCATE_BYTES},
        });
        this.showPeek(name, msgs);
      } else if (b.dataset.act === "purge" && confirm(`Purge every ready message of '${name}'?`)) {
        await api(queuePath(name) + "/contents", {method: "DELETE"});
      } else if (b.dataset.act === "delete" && confirm(`Delete queue '${name}' and its messages?`)) {
        await api(queuePath(name), {method: "DELETE"});
      }
      await this.refresh();
    } catch (err) {
      if (err instanceof Unauthorized) return askLogin();
      alert(`${b.dataset.act} '${name}' failed: ${err.message}`);
    }
  },
  showPeek(name, msgs) {
    const el = document.getElementById("peek");
    el.hidden = false;
    el.innerHTML = `<h2>First messages of ${esc(name)} <small class="muted">(requeued)</small></h2>` +
      (msgs.length ? msgs.map((m, i) => `
        <div class="message">
          <div class="meta">#${i + 1} · exchange '${esc(m.exchange)}' · key '${esc(m.routing_key)}' ·
            ${num(m.payload_bytes)} bytes${m.redelivered ? " · redelivered" : ""}</div>
          <pre class="props">${esc(JSON.stringify(m.properties || {}, null, 1))}</pre>
          <pre class="payload">${esc(m.payload)}</pre>
        </div>`).join("") : '<p class="muted">Queue is empty.</p>');
  },
};

views.connections = {
  render() {
    $view.innerHTML = `<h1>Connections</h1><div id="connections"></div><h1>Consumers</h1><div id="consumers"></div>`;
  },
  async refresh() {
    const [conns, consumers] = await Promise.all([api("/api/connections"), api("/api/consumers")]);
    document.getElementById("connections").innerHTML = table([
      {title: "Name", html: (c) => esc(c.name)},
      {title: "Client", html: (c) => esc(c.client_properties && (c.client_properties.connection_name || c.client_properties.product))},
      {title: "User", html: (c) => esc(c.user)},
      {title: "State", html: (c) => esc(c.state)},
      {title: "Channels", cls: "n", html: (c) => num(c.channels)},
      {title: "Received", cls: "n", html: (c) => num(c.recv_oct)},
      {title: "Sent", cls: "n", html: (c) => num(c.send_oct)},
    ], conns, "No connections.");
    document.getElementById("consumers").innerHTML = table([
      {title: "Tag", html: (c) => esc(c.consumer_tag)},
      {title: "Queue", html: (c) => esc(c.queue && c.queue.name)},
      {title: "Connection", html: (c) => esc(c.channel_details && c.channel_details.connection_name)},
      {title: "Ack", html: (c) => (c.ack_required ? "manual" : "auto")},
      {title: "Prefetch", cls: "n", html: (c) => num(c.prefetch_count)},
    ], consumers, "No consumers.");
  },
};

views.workers = {
  render() {
    $view.innerHTML = `<h1>Workers</h1>
      <p class="muted">From Celery worker events (heartbeats, every worker sends them) and from the results
      miniworker publishes. A worker is offline after two missed heartbeats.</p><div id="workers"></div>`;
  },
  async refresh() {
    const workers = await api("/api/workers");
    document.getElementById("workers").innerHTML = table([
      {title: "Hostname", html: (w) => esc(w.hostname)},
      {title: "State", html: (w) => badge(w.state)},
      {title: "Last heartbeat", html: (w) => (w.last_heartbeat ? ago(w.last_heartbeat) : "—")},
      {title: "Last seen", html: (w) => ago(w.last_seen)},
      {title: "Active", cls: "n", html: (w) => num(w.active)},
      {title: "Processed", cls: "n", html: (w) => num(w.processed)},
      {title: "Results seen", cls: "n", html: (w) => num(w.results)},
      {title: "Load", html: (w) => esc((w.loadavg || []).map((v) => v.toFixed(2)).join(" "))},
      {title: "Software", html: (w) => esc(w.software)},
    ], workers, "No workers seen yet.", (w) => `data-worker="${esc(w.hostname)}"`);
  },
};

const STATES = ["PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "REJECTED"];

views.tasks = {
  filter: {state: "", name: ""},
  render() {
    $view.innerHTML = `
      <h1>Tasks</h1>
      <section class="cards" id="task-states"></section>
      <section><h2>By task name</h2><div id="task-types"></div></section>
      <section>
        <h2>Recent tasks</h2>
        <form class="filters" id="task-filter">
          <label>State <select name="state"><option value="">any</option>
            ${STATES.map((s) => `<option>${s}</option>`).join("")}</select></label>
          <label>Name <select name="name"><option value="">any</option></select></label>
          <span id="task-count" class="muted"></span>
        </form>
        <div id="task-list"></div>
      </section>`;
    const form = document.getElementById("task-filter");
    form.state.value = this.filter.state;
    form.onchange = () => {
      this.filter = {state: form.state.value, name: form.name.value};
      refresh();
    };
    $view.onclick = (e) => {
      const s = e.target.closest("[data-state-filter]");
      if (!s) return;
      this.filter.state = s.dataset.stateFilter === this.filter.state ? "" : s.dataset.stateFilter;
      form.state.value = this.filter.state;
      refresh();
    };
  },
  async refresh() {
    const params = new URLSearchParams({limit: "100"});
    if (this.filter.state) params.set("state", this.filter.state);
    if (this.filter.name) params.set("name", this.filter.name);
    const [summary, types, list] = await Promise.all([
      api("/api/task-summary"), api("/api/task-types"), api("/api/tasks?" + params),
    ]);
    document.getElementById("task-states").innerHTML = STATES.map((s) => `
      <div class="card clickable ${this.filter.state === s ? "selected" : ""}" data-state-filter="${s}">
        <div class="value">${num(summary.states[s])}</div><div class="label">${badge(s)}</div></div>`).join("");
    document.getElementById("task-types").innerHTML = table([
      {title: "Name", html: (t) => esc(t.name)},
      {title: "Queued", cls: "n", html: (t) => num(t.queued)},
      {title: "Running", cls: "n", html: (t) => num(t.running)},
      {title: "Succeeded", cls: "n", html: (t) => num(t.succeeded)},
      {title: "Failed", cls: "n", html: (t) => num(t.failed)},
      {title: "Retried", cls: "n", html: (t) => num(t.retried)},
      {title: "Runtime avg", cls: "n", html: (t) => seconds(t.runtime_avg)},
      {title: "min", cls: "n", html: (t) => seconds(t.runtime_min)},
      {title: "max", cls: "n", html: (t) => seconds(t.runtime_max)},
    ], types, "No task messages seen yet.", (t) => `data-task-type="${esc(t.name)}"`);
    const nameSelect = document.getElementById("task-filter").name;
    const names = types.map((t) => t.name);
    if (nameSelect.options.length !== names.length + 1) {
      nameSelect.innerHTML = '<option value="">any</option>' + names.map((n) => `<option>${esc(n)}</option>`).join("");
      nameSelect.value = this.filter.name;
    }
    document.getElementById("task-count").textContent = `${num(list.total)} matching, of ${num(summary.tasks)} kept`;
    document.getElementById("task-list").innerHTML = table([
      {title: "Task", html: (t) => `<a href="#/tasks/${encodeURIComponent(t.id)}">${esc(t.name || "?")}</a><div class="id">${esc(t.id)}</div>`},
      {title: "State", html: (t) => badge(t.state)},
      {title: "Args", cls: "code", html: (t) => esc(t.args)},
      {title: "Result / error", cls: "code", html: (t) => esc(t.error && t.state !== "SUCCESS" ? t.error : t.result)},
      {title: "Worker", html: (t) => esc(t.worker)},
      {title: "Sent", html: (t) => time(t.sent)},
      {title: "Runtime", cls: "n", html: (t) => seconds(t.runtime)},
    ], list.items, "No tasks match.", (t) => `data-task-id="${esc(t.id)}"`);
  },
};

views.task = {
  id: "",
  render(id) {
    this.id = id;
    $view.innerHTML = `<p><a href="#/tasks">← Tasks</a></p><div id="task-detail"></div>`;
  },
  async refresh() {
    let t;
    try {
      t = await api(`/api/tasks/${encodeURIComponent(this.id)}`);
    } catch (err) {
      if (err instanceof Unauthorized) throw err;
      document.getElementById("task-detail").innerHTML = `<p class="error">Task ${esc(this.id)}: ${esc(err.message)}</p>`;
      return;
    }
    const rows = [
      ["Id", esc(t.id)], ["Name", esc(t.name)], ["State", badge(t.state)], ["Args", esc(t.args)],
      ["Kwargs", esc(t.kwargs)], ["Result", esc(t.result)], ["Error", esc(t.error)], ["Worker", esc(t.worker)],
      ["Retries", num(t.retries)], ["Exchange / routing key", `'${esc(t.exchange)}' / '${esc(t.routing_key)}'`],
      ["Format", esc(t.format)], ["Sent", time(t.sent)], ["Received", time(t.received)],
      ["Started", time(t.started)], ["Finished", time(t.finished)], ["Runtime", seconds(t.runtime)],
    ];
    document.getElementById("task-detail").innerHTML = `<h1>${esc(t.name || "task")} ${badge(t.state)}</h1>
      <table class="detail">${rows.map(([k, v]) => `<tr><th>${k}</th><td class="code">${v}</td></tr>`).join("")}</table>
      ${t.traceback ? `<h2>Traceback</h2><pre class="payload">${esc(t.traceback)}</pre>` : ""}`;
  },
};

// ---- router and polling ---------------------------------------------------------

let current = null;
let timer = null;

function route() {
  const [, name = "overview", arg] = location.hash.match(/^#\/([^/]*)\/?(.*)$/) || [];
  const view = name === "tasks" && arg ? views.task : views[name] || views.overview;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === (views[name] ? name : "overview")));
  $view.onclick = null;
  current = view;
  view.render(decodeURIComponent(arg || ""));
  refresh();
}

async function refresh() {
  clearTimeout(timer);
  const view = current;
  try {
    await view.refresh();
    $status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    $status.classList.remove("stale");
  } catch (err) {
    if (err instanceof Unauthorized) {
      askLogin();
      return;  // polling resumes after sign-in
    }
    $status.textContent = `error: ${err.message}`;
    $status.classList.add("stale");
  }
  if (view === current) timer = setTimeout(refresh, POLL_MS);
}

window.addEventListener("hashchange", route);
route();
