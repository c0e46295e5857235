// The Switchyard console: one page, a view per hash (#overview, #endpoints, …), each drawn from
// the console's JSON API with the signed-in key. No dependencies; charts are inline SVG.
"use strict";

const state = { key: sessionStorage.getItem("switchyard-key"), me: null, timer: null };

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const $ = (sel) => document.querySelector(sel);
const pct = (n, d) => (d > 0 ? ((100 * n) / d).toFixed(1) + " %" : "–");
const num = (v, digits = 0) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
const usd = (nanos) => "$" + (Number(nanos || 0) / 1e9).toFixed(6);
const ago = (ms) => {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? s + "s ago" : s < 3600 ? Math.floor(s / 60) + "m ago" : Math.floor(s / 3600) + "h ago";
};

function say(text, error) {
  const el = $("#status");
  el.textContent = text || "";
  el.className = text ? "show" + (error ? " error" : "") : "";
}

async function api(path, body) {
  const init = { headers: { authorization: "Bearer " + state.key } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch("/api/" + path, init);
  const data = await resp.json().catch(() => ({ error: "unreadable answer (" + resp.status + ")" }));
  if (resp.status === 401) {
    signOut(data.error);
    throw new Error(data.error);
  }
  if (!resp.ok) throw new Error(data.error || "failed (" + resp.status + ")");
  return data;
}

function table(headers, rows, attrs) {
  const head = "<tr>" + headers.map((h) => "<th>" + esc(h) + "</th>").join("") + "</tr>";
  const body = rows.map((r, i) => "<tr" + (attrs ? attrs(i) : "") + ">" + r.map((c) => "<td>" + c + "</td>").join("") + "</tr>").join("");
  return "<table>" + head + (body || '<tr><td class="muted" colspan="' + headers.length + '">nothing yet</td></tr>') + "</table>";
}

// Horizontal bars: [{label, value, held?, limit?}] scaled to the largest value (or limit).
function bars(items, format) {
  if (!items.length) return '<p class="muted">nothing yet</p>';
  const width = 900, row = 22, labelW = 200;
  const max = Math.max(...items.map((i) => Math.max(i.limit || 0, (i.value || 0) + (i.held || 0))), 1e-12);
  const scale = (v) => ((width - labelW - 300) * v) / max;
  let y = 0, out = "";
  for (const i of items) {
    const w = scale(i.value || 0), h = scale(i.held || 0);
    const cls = i.limit && (i.value || 0) >= i.limit ? "bar over" : "bar";
    out += '<text x="0" y="' + (y + 15) + '">' + esc(i.label) + "</text>";
    out += '<rect class="' + cls + '" x="' + labelW + '" y="' + (y + 4) + '" width="' + w.toFixed(1) + '" height="14"/>';
    if (h > 0) out += '<rect class="bar held" x="' + (labelW + w).toFixed(1) + '" y="' + (y + 4) + '" width="' + h.toFixed(1) + '" height="14"/>';
    if (i.limit) out += '<line x1="' + (labelW + scale(i.limit)).toFixed(1) + '" x2="' + (labelW + scale(i.limit)).toFixed(1) + '" y1="' + y + '" y2="' + (y + row) + '" stroke="#1d2430" stroke-dasharray="3,2"/>';
    out += '<text x="' + (labelW + w + h + 6).toFixed(1) + '" y="' + (y + 15) + '">' + esc(format(i)) + "</text>";
    y += row;
  }
  return '<svg class="chart" viewBox="0 0 ' + width + " " + y + '" width="100%" style="max-width:' + width + 'px" preserveAspectRatio="xMinYMin meet">' + out + "</svg>";
}

// Lines over time: `series` are arrays of numbers or null (no data that minute), one colour each,
// on a shared scale from 0 (or `max`, when given).
function lines(series, max, title) {
  const w = 180, h = 34;
  const all = series.flat().filter((v) => v !== null && v !== undefined);
  if (!all.length) return '<span class="muted">no attempts</span>';
  const top = max || Math.max(...all, 1e-9);
  const n = Math.max(...series.map((s) => s.length));
  const x = (i) => (n > 1 ? 3 + ((w - 6) * i) / (n - 1) : w / 2).toFixed(1);
  const y = (v) => (h - 2 - ((h - 4) * v) / top).toFixed(1);
  const colours = ["#2f6fde", "#d88a00"];
  const out = series.map((s, k) => {
    const pts = s.map((v, i) => (v === null || v === undefined ? null : x(i) + "," + y(v))).filter(Boolean);
    const dots = pts.length === 1 ? '<circle cx="' + pts[0].split(",")[0] + '" cy="' + pts[0].split(",")[1] + '" r="3" fill="' + colours[k] + '"/>' : "";
    return '<polyline points="' + pts.join(" ") + '" stroke="' + colours[k] + '"/>' + dots;
  });
  const axis = '<line x1="0" x2="' + w + '" y1="' + (h - 1) + '" y2="' + (h - 1) + '" stroke="#dde1e8"/>';
  const scale = '<text x="0" y="9" font-size="9" fill="#5d6778">' + esc(num(top, top < 10 ? 1 : 0)) + "</text>";
  return '<svg class="spark" width="' + w + '" height="' + h + '"><title>' + esc(title) + "</title>" + axis + scale + out.join("") + "</svg>";
}

// Views: each draws into #page; `every` redraws periodically.
const views = {
  async overview() {
    const o = await api("overview");
    const h = o.last_hour;
    const cost = (o.usage_today || []).reduce((s, r) => s + (r.cost_nano_usd || 0), 0);
    const requestsToday = (o.usage_today || []).reduce((s, r) => s + (r.requests || 0), 0);
    const metric = (v, l) => '<div class="card metric"><div class="value">' + v + '</div><div class="label">' + l + "</div></div>";
    return (
      "<h1>Overview</h1>" +
      '<div class="cards">' +
      metric(esc(h.requests), "requests, last hour (recorded)") +
      metric(pct(h.ok, h.requests), "succeeded, last hour") +
      metric(pct(h.fell_back, h.requests), "fell back, last hour") +
      metric(esc(usd(cost)), "cost today (" + esc(o.day) + ", " + esc(requestsToday) + " requests)") +
      "</div>" +
      '<div class="grid2"><div class="card"><h2>Cost today by workflow</h2>' +
      bars((o.usage_today || []).map((r) => ({ label: r.org + " / " + r.workflow, value: r.cost_nano_usd })), (i) => usd(i.value)) +
      '</div><div class="card"><h2>Last hour by workflow</h2>' +
      table(["workflow", "requests", "succeeded", "fell back"], h.workflows.map((w) => [esc(w.workflow), esc(w.requests), pct(w.ok, w.requests), pct(w.fallbacks, w.requests)])) +
      "</div></div>"
    );
  },

  async endpoints() {
    const r = await api("endpoints");
    const p = (x) => (x ? num(1000 * x.p50, 1) + " / " + num(1000 * x.p90, 1) + " / " + num(1000 * x.p99, 1) : "–");
    const up = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1) + "%");
    const rows = r.endpoints.map((e) => [
      "<b>" + esc(e.endpoint) + "</b>",
      '<span class="badge state ' + esc(e.state) + '">' + esc(e.state) + "</span>" +
        (e.ejected_until_unix_ms > Date.now() ? '<div class="muted">until ' + esc(new Date(e.ejected_until_unix_ms).toLocaleTimeString()) + "</div>" : ""),
      esc(e.reason || ""),
      num(100 * e.error_rate, 1) + "%",
      up(e.uptime_last_5m) + " / " + up(e.uptime_last_30m) + " / " + up(e.uptime_last_1d),
      p(e.latency_last_30m),
      lines([(e.last_30m_by_minute || []).map((m) => m.uptime)], 100, "uptime per minute, %"),
      lines(["p50", "p90"].map((q) => (e.last_30m_by_minute || []).map((m) => (m.latency ? 1000 * m.latency[q] : null))), 0, "latency p50 (blue) and p90 (orange) per minute, ms"),
      esc(e.ejections),
      e.state === "ejected"
        ? '<button class="restore" data-endpoint="' + esc(e.endpoint) + '">Restore</button>'
        : '<button class="eject danger" data-endpoint="' + esc(e.endpoint) + '">Eject</button>',
    ]);
    return (
      "<h1>Endpoints</h1>" +
      '<p class="muted">Health version ' + esc(r.version) + (r.catalog_version ? ", catalog " + esc(r.catalog_version) : "") + "; refreshed every 2 s.</p>" +
      '<form id="eject-form" class="inline card" hidden><b id="eject-what"></b>' +
      '<label>for <input id="eject-seconds" type="number" value="300" min="1" style="width:90px"> s</label>' +
      '<input id="eject-reason" placeholder="reason (audited)" required size="40">' +
      '<button id="eject-go" class="primary" type="submit">Eject</button><button type="button" id="eject-cancel">Cancel</button></form>' +
      table(["endpoint", "state", "reason", "errors", "uptime 5m / 30m / 1d", "latency p50 / p90 / p99 ms (30m)", "uptime, 30 min", "latency p50 / p90, 30 min", "ejections", ""], rows, (i) => ' data-endpoint="' + esc(r.endpoints[i].endpoint) + '"')
    );
  },

  async budgets() {
    const r = await api("budgets");
    const items = r.budgets.map((b) => ({
      label: b.org + " " + (b.scope === "org" ? "" : b.scope + " " + b.id + " ") + b.period,
      value: b.spent_nano_usd, held: b.held_nano_usd, limit: b.limit_nano_usd, b,
    }));
    const rows = r.budgets.map((b) => [
      esc(b.org), esc(b.scope), esc(b.id), esc(b.period), esc(b.limit_usd), esc(b.spent_usd), esc(b.held_usd), esc(b.remaining_usd),
      b.hard ? "hard" : "soft",
      '<button class="budget-remove danger" data-org="' + esc(b.org) + '" data-scope="' + esc(b.scope) + '" data-id="' + esc(b.id) + '" data-period="' + esc(b.period) + '">Remove</button>',
    ]);
    const limits = (r.limits.limits || []).map((l) => [
      esc(l.org), esc(l.key ? "key " + l.key : l.workflow ? "workflow " + l.workflow : "org"), esc(l.set?.rpm ?? "–"), esc(l.set?.tpm ?? "–"), esc(l.set?.concurrent ?? "–"), esc(l.source),
      '<button class="limits-remove danger" data-org="' + esc(l.org) + '" data-key="' + esc(l.key || "") + '" data-workflow="' + esc(l.workflow || "") + '">Remove</button>',
    ]);
    return (
      "<h1>Budgets &amp; limits</h1>" +
      '<div class="card"><h2>Use against limit</h2>' +
      bars(items, (i) => usd(i.value) + " spent" + (i.held ? " + " + usd(i.held) + " held" : "") + " of " + usd(i.limit)) +
      "</div>" +
      '<form id="budget-form" class="inline card"><b>Set a budget</b>' +
      '<input id="budget-org" placeholder="org" required size="10" value="' + esc(state.me.org) + '">' +
      '<input id="budget-key" placeholder="key id (optional)" size="12">' +
      '<input id="budget-workflow" placeholder="workflow (optional)" size="12">' +
      '<select id="budget-period"><option>day</option><option>month</option><option>total</option></select>' +
      '<input id="budget-limit" placeholder="limit USD" required size="10">' +
      '<label><input id="budget-soft" type="checkbox"> soft</label>' +
      '<input id="budget-reason" placeholder="reason (audited)" required size="24">' +
      '<button id="budget-set" class="primary" type="submit">Set</button></form>' +
      table(["org", "scope", "id", "period", "limit", "spent", "held", "remaining", "kind", ""], rows) +
      "<h2>Client limits</h2>" +
      '<form id="limits-form" class="inline card"><b>Set client limits</b>' +
      '<input id="limits-org" placeholder="org" required size="10" value="' + esc(state.me.org) + '">' +
      '<input id="limits-key" placeholder="key id (optional)" size="12">' +
      '<input id="limits-workflow" placeholder="workflow (optional)" size="12">' +
      '<input id="limits-rpm" placeholder="requests / min" size="10">' +
      '<input id="limits-tpm" placeholder="tokens / min" size="10">' +
      '<input id="limits-concurrent" placeholder="in flight" size="8">' +
      '<input id="limits-reason" placeholder="reason (audited)" required size="24">' +
      '<button id="limits-set" class="primary" type="submit">Set</button></form>' +
      table(["org", "scope", "rpm", "tpm", "in flight", "source", ""], limits)
    );
  },

  async usage() {
    const by = sessionStorage.getItem("switchyard-usage-by") || "day";
    const r = await api("usage?by=" + by);
    const label = (row) => (state.me.admin ? row.org + " / " : "") + row[r.group_by];
    const rows = r.rows.map((x) => [esc(x.org), esc(x[r.group_by]), esc(x.requests), esc(x.prompt_tokens), esc(x.completion_tokens), esc(x.cost_usd)]);
    const options = ["day", "model", "provider", "key", "workflow"].map((o) => "<option" + (o === by ? " selected" : "") + ">" + o + "</option>").join("");
    return (
      "<h1>Usage</h1>" +
      '<form class="inline"><label>by <select id="usage-by">' + options + "</select></label></form>" +
      '<div class="grid2"><div class="card"><h2>Cost</h2>' +
      bars(r.rows.map((x) => ({ label: label(x), value: x.cost_nano_usd })), (i) => usd(i.value)) +
      '</div><div class="card"><h2>Tokens (prompt + completion)</h2>' +
      bars(r.rows.map((x) => ({ label: label(x), value: x.prompt_tokens + x.completion_tokens })), (i) => String(i.value)) +
      "</div></div>" +
      table(["org", r.group_by, "requests", "prompt tokens", "completion tokens", "cost USD"], rows)
    );
  },

  async requests() {
    const f = JSON.parse(sessionStorage.getItem("switchyard-request-filter") || "{}");
    const q = new URLSearchParams(Object.entries(f).filter(([, v]) => v)).toString();
    const list = await api("requests" + (q ? "?" + q : ""));
    state.requests = list;
    const input = (id, ph, size) => '<input id="filter-' + id + '" placeholder="' + ph + '" size="' + size + '" value="' + esc(f[id] || "") + '">';
    const rows = list.map((r) => [
      '<code>' + esc(r.id) + "</code>", esc(ago(r.created_ms)), esc(r.org), esc(r.workflow), esc(r.endpoint || "–"),
      esc(r.attempts.length), r.fallbacks > 0 ? "<b>" + esc(r.fallbacks) + "</b>" : "0",
      '<span class="badge ' + (r.outcome === "ok" ? "ok" : "bad") + '">' + esc(r.outcome) + "</span>",
      num(r.latency_ms, 1), esc(r.cost_usd),
    ]);
    return (
      "<h1>Requests</h1>" +
      '<form id="filter-form" class="inline">' + input("org", "org", 10) + input("outcome", "outcome", 12) + input("endpoint", "endpoint", 16) + input("since", "since (1h)", 8) +
      '<button class="primary" type="submit">Filter</button></form>' +
      table(["id", "when", "org", "workflow", "served by", "attempts", "fallbacks", "outcome", "ms", "cost"], rows, (i) => ' class="request" data-id="' + esc(list[i].id) + '"') +
      '<div id="trace"></div>'
    );
  },

  async explain() {
    const sample = sessionStorage.getItem("switchyard-explain") || JSON.stringify({ model: "", messages: [{ role: "user", content: "hello" }] }, null, 2);
    return (
      "<h1>Explain</h1><p class=\"muted\">Paste a chat request (OpenAI format): the plan it would follow now, and every endpoint left out with the reason. Nothing is sent upstream and no budget is held.</p>" +
      '<form id="explain-form"><textarea id="explain-body" rows="10">' + esc(sample) + "</textarea>" +
      '<div class="inline"><label>seed <input id="explain-seed" size="12" placeholder="random"></label> <button class="primary" type="submit">Explain</button></div></form>' +
      '<div id="explained"></div>'
    );
  },

  async overrides() {
    if (!state.me.admin) return "<h1>Overrides &amp; audit</h1><p class=\"muted\">Reading the overrides and the audit trail needs a key with the <code>admin</code> scope.</p>";
    const [o, a] = await Promise.all([api("overrides"), api("audit")]);
    const list = o.overrides || [];
    return (
      "<h1>Overrides &amp; audit</h1><h2>Overrides in force</h2>" +
      table(["id", "kind", "org", "target", "model", "reason", "by", ""], list.map((x) => [
        "<code>" + esc(x.id) + "</code>", esc(x.kind), esc(x.org || "all"), esc(x.target), esc(x.model || ""), esc(x.reason), esc(x.actor),
        '<button class="override-remove danger" data-id="' + esc(x.id) + '">Remove</button>',
      ])) +
      "<h2>Audit trail</h2>" +
      table(["when", "actor", "action", "target", "reason"], a.records.map((r) => [esc(ago(r.at_unix_ms)), esc(r.actor), esc(r.action), esc(r.target), esc(r.reason)]))
    );
  },
};

const every = { endpoints: 2000, overview: 5000 };

async function show() {
  clearTimeout(state.timer);
  if (!state.key) return;
  const view = (location.hash || "#overview").slice(1);
  const draw = views[view] || views.overview;
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === "#" + view));
  try {
    const keepForm = view === "endpoints" && $("#eject-form") && !$("#eject-form").hidden;
    if (!keepForm) {
      const html = await draw();
      if ((location.hash || "#overview").slice(1) !== view) return;
      $("#page").innerHTML = html;
      $("#page").dataset.view = view;
    }
  } catch (e) {
    say(e.message, true);
  }
  if (every[view]) state.timer = setTimeout(show, every[view]);
}

function showTrace(r) {
  const attempts = r.attempts.map((a, i) => [esc(i + 1), esc(a.endpoint), '<span class="badge ' + (a.outcome === "ok" ? "ok" : "bad") + '">' + esc(a.outcome) + "</span>", esc(a.latency_ms), a.retry ? "retry" : ""]);
  $("#trace").innerHTML =
    '<div class="card"><h3>Request <code>' + esc(r.id) + "</code></h3>" +
    "<p>" + esc(r.api) + (r.stream ? " stream" : "") + " of org <b>" + esc(r.org) + "</b>, key " + esc(r.key_id) + ", workflow " + esc(r.workflow) +
    ": asked for " + esc(r.requested_model) + ", " + (r.model ? "served by <b>" + esc(r.model) + "</b> at <b>" + esc(r.provider) + "</b>" : "not served") +
    "; " + esc(r.prompt_tokens) + " + " + esc(r.completion_tokens) + " tokens, " + esc(r.cost_usd) + " USD, " + num(r.latency_ms, 1) + " ms" +
    (r.ttft_ms ? " (first token " + num(r.ttft_ms, 1) + " ms)" : "") + "; outcome <b>" + esc(r.outcome) + "</b>.</p>" +
    '<p class="muted">Routed with policy version ' + esc(r.policy_version) + ", health version " + esc(r.health_version) + ", catalog " + esc(r.catalog_version) + ", seed " + esc(r.route_seed) + ".</p>" +
    table(["#", "endpoint", "outcome", "ms", ""], attempts) + "</div>";
}

async function act(what, path, body, then) {
  try {
    await api(path, body);
    say(what);
    if (then) then();
    show();
  } catch (e) {
    say(e.message, true);
  }
}

document.addEventListener("click", async (ev) => {
  const t = ev.target;
  if (t.matches("button.eject")) {
    $("#eject-form").hidden = false;
    $("#eject-form").dataset.endpoint = t.dataset.endpoint;
    $("#eject-what").textContent = "Eject " + t.dataset.endpoint;
    $("#eject-reason").focus();
  } else if (t.matches("#eject-cancel")) {
    $("#eject-form").hidden = true;
    show();
  } else if (t.matches("button.restore")) {
    const reason = "restored from the console";
    act("restored " + t.dataset.endpoint, "endpoints/restore", { endpoint: t.dataset.endpoint, reason });
  } else if (t.matches("button.budget-remove")) {
    const d = t.dataset;
    act("removed the " + d.period + " budget of " + d.org, "budgets/remove", {
      org: d.org, key: d.scope === "key" ? d.id : null, workflow: d.scope === "workflow" ? d.id : null, period: d.period, reason: "removed from the console",
    });
  } else if (t.matches("button.limits-remove")) {
    const d = t.dataset;
    act("removed the client limits of " + d.org, "limits/remove", {
      org: d.org, key: d.key || null, workflow: d.workflow || null, reason: "removed from the console",
    });
  } else if (t.matches("button.override-remove")) {
    act("removed override " + t.dataset.id, "overrides/remove", { id: t.dataset.id, reason: "removed from the console" });
  } else if (t.closest("tr.request")) {
    const id = t.closest("tr.request").dataset.id;
    document.querySelectorAll("tr.request").forEach((r) => r.classList.toggle("selected", r.dataset.id === id));
    try {
      showTrace(await api("requests/" + encodeURIComponent(id)));
    } catch (e) {
      say(e.message, true);
    }
  }
});

document.addEventListener("change", (ev) => {
  if (ev.target.matches("#usage-by")) {
    sessionStorage.setItem("switchyard-usage-by", ev.target.value);
    show();
  }
});

document.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  if (f.id === "signin-form") {
    state.key = $("#signin-key").value.trim();
    try {
      await signIn();
    } catch (e) {
      say(e.message, true);
    }
  } else if (f.id === "eject-form") {
    const endpoint = f.dataset.endpoint;
    f.hidden = true;
    act("ejected " + endpoint, "endpoints/eject", { endpoint, seconds: Number($("#eject-seconds").value), reason: $("#eject-reason").value });
  } else if (f.id === "budget-form") {
    const v = (id) => $("#budget-" + id).value.trim();
    act("set the " + v("period") + " budget of " + v("org"), "budgets/set", {
      org: v("org"), key: v("key") || null, workflow: v("workflow") || null, period: v("period"), limit: v("limit"), soft: $("#budget-soft").checked, reason: v("reason"),
    });
  } else if (f.id === "limits-form") {
    const v = (id) => $("#limits-" + id).value.trim();
    const n = (id) => (v(id) ? Number(v(id)) : null);
    act("set the client limits of " + v("org"), "limits/set", {
      org: v("org"), key: v("key") || null, workflow: v("workflow") || null, rpm: n("rpm"), tpm: n("tpm"), concurrent: n("concurrent"), reason: v("reason"),
    });
  } else if (f.id === "filter-form") {
    const v = (id) => $("#filter-" + id).value.trim();
    sessionStorage.setItem("switchyard-request-filter", JSON.stringify({ org: v("org"), outcome: v("outcome"), endpoint: v("endpoint"), since: v("since") }));
    show();
  } else if (f.id === "explain-form") {
    const text = $("#explain-body").value;
    sessionStorage.setItem("switchyard-explain", text);
    try {
      const seed = $("#explain-seed").value.trim();
      const x = await api("explain", { request: JSON.parse(text), seed: seed ? Number(seed) : null });
      $("#explained").innerHTML =
        '<div class="card"><p>Org <b>' + esc(x.org) + "</b>, workflow <b>" + esc(x.workflow) + "</b>, models " + esc(x.models.join(", ")) + "; seed " + esc(x.seed) + ", policy version " + esc(x.policy_version) + ", health version " + esc(x.health_version) + ".</p>" +
        "<h2>Plan</h2>" + table(["#", "endpoint", "key", "state", "prompt / M", "completion / M"], x.plan.map((p, i) => [esc(i + 1), esc(p.endpoint), esc(p.key), esc(p.state), esc(p.price.prompt), esc(p.price.completion)])) +
        "<h2>Left out</h2>" + table(["endpoint", "reason", "why"], x.excluded.map((e) => [esc(e.endpoint), esc(e.reason), esc(e.detail)])) + "</div>";
      say("");
    } catch (e) {
      say(e.message, true);
    }
  }
});

async function signIn() {
  state.me = await api("me");
  sessionStorage.setItem("switchyard-key", state.key);
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = "key " + state.me.key_id + " of " + state.me.org + (state.me.admin ? " (admin)" : " (read-only)");
  say("");
  await show();
}

// A key refused while signed in (revoked, or the policy changed) ends the session; one refused
// at sign-in leaves the form with the reason.
function signOut(why) {
  sessionStorage.removeItem("switchyard-key");
  if (state.me) {
    location.hash = "";
    location.reload();
  } else {
    state.key = null;
    say(why, true);
  }
}

$("#signout").addEventListener("click", () => signOut(""));
window.addEventListener("hashchange", show);
if (state.key) signIn().catch((e) => say(e.message, true));
