// saga-machine operator console: a hash-routed single page over /api/v1.
// Plain JavaScript, no dependencies. Every value from the API is put into
// the page with textContent (never innerHTML), except the diagrams, which
// are SVG documents rendered by the server and parsed with DOMParser.
"use strict";

const REFRESH_MS = 5000;
const TOKEN_KEY = "saga-machine.token";
let refreshTimer = null;
// me is GET /api/v1/me for the current token: who the API takes us for and
// whether we may read (saga-viewer or saga-operator) and act (saga-operator).
let me = null;

// ---- DOM helpers ----------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// setView replaces view's children with nodes (arrays flattened, empty
// values skipped).
function setView(view, ...nodes) {
  view.replaceChildren(...nodes.flat(Infinity).filter(n => n !== undefined && n !== null && n !== false));
}

function fmtTime(s) {
  if (!s) return "";
  const d = new Date(s);
  if (isNaN(d)) return s;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function pill(text, kind) {
  return el("span", { class: `pill ${kind || ""}` }, text);
}

function statusPill(status) {
  return pill(status, { running: "blue", compensating: "amber", compensation_failed: "red", completed: "green", failed: "red" }[status] || "grey");
}

function shortID(id) {
  return id && id.length > 13 ? id.slice(0, 8) + "…" + id.slice(-4) : id;
}

function notice(kind, text) {
  return el("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// ---- API ------------------------------------------------------------------

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

class APIError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem;
    this.status = status;
  }
}

async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch("/api/v1" + path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  if (!res.ok) {
    let problem = { title: res.statusText };
    try { problem = JSON.parse(text); } catch (_) { /* not JSON: keep the status text */ }
    throw new APIError(problem, res.status);
  }
  return opts.raw ? text : JSON.parse(text);
}

function errorBox(err) {
  const box = notice("error", err.message);
  if (err.status === 401) box.append(el("div", { class: "hint" }, "Paste a valid access token in the header and press Save."));
  if (err.status === 403 && err.problem && err.problem.code === "forbidden")
    box.append(el("div", { class: "hint" }, "Your token lacks the role this needs: reading needs saga-viewer or saga-operator, re-send, abort and replay need saga-operator."));
  return box;
}

function rolesText(roles) {
  return roles && roles.length ? roles.join(", ") : "none";
}

// whoami fills the header's "signed in as" line from me.
function whoami() {
  const box = document.getElementById("whoami");
  if (!box) return;
  if (!me) { box.replaceChildren(); return; }
  box.replaceChildren(me.auth === "off"
    ? el("span", { title: "The API runs without authentication (dev or tests): every action is allowed." }, "auth off")
    : el("span", { title: `roles: ${rolesText(me.roles)}` }, "signed in as ", el("strong", {}, me.name || me.subject),
      me.may_operate ? " · operator" : me.may_read ? " · read only" : " · no access"));
}

// refusedPage tells a user without a reading role plainly why the console
// shows her nothing; no data is requested for her.
function refusedPage(view) {
  setView(view,
    el("section", { class: "card refused", id: "access-refused", role: "alert" },
      el("h1", {}, "Access refused"),
      el("p", {}, "You are signed in as ", el("strong", {}, me.name || me.subject),
        me.name && me.name !== me.subject ? ` (${me.subject})` : "", ", with the roles: ", el("strong", {}, rolesText(me.roles)), "."),
      el("p", {}, "The console shows saga-machine's sagas, their timelines and dead letters, which hold other people's ids and amounts: only operators may see them. ",
        "Reading needs the role ", el("code", {}, me.read_roles.join(" or ")), "; re-sending, aborting and replaying need ",
        el("code", {}, me.operate_roles.join(" or ")), "."),
      el("p", { class: "muted" }, "Ask your administrator for one of these roles, or paste the token of an account that has one in the header.")));
}

// readOnlyNote explains to a saga-viewer why the action buttons are off.
function readOnlyNote() {
  return el("p", { class: "notice info read-only" },
    `You have read-only access (roles: ${rolesText(me.roles)}): re-send, abort and replay need ${me.operate_roles.join(" or ")}.`);
}

// ---- Router ---------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query || "") };
}

async function render() {
  clearInterval(refreshTimer);
  refreshTimer = null;
  const { parts, params } = parseHash();
  const page = parts[0] || "definitions";
  document.querySelectorAll("[data-nav]").forEach(a => a.classList.toggle("active", a.dataset.nav === page));
  const main = document.getElementById("main");
  const view = el("div", { class: "view" }, el("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(view);
  try {
    if (!me) {
      me = await api("/me");
      whoami();
    }
    if (!me.may_read) { refusedPage(view); return; }
    if (page === "definitions") await definitionsPage(view);
    else if (page === "sagas" && parts[1]) await sagaPage(view, parts[1]);
    else if (page === "sagas") await sagasPage(view, params);
    else if (page === "dead-letters") await deadLettersPage(view, params);
    else view.replaceChildren(notice("error", `No page ${location.hash}`));
  } catch (err) {
    view.replaceChildren(errorBox(err));
  }
}

// ---- Definitions ----------------------------------------------------------

function summaryChips(d) {
  return el("div", { class: "chips" },
    el("span", { class: "chip blue", "data-total": "running" }, `${d.running} running`),
    el("span", { class: "chip green", "data-total": "completed" }, `${d.completed} completed`),
    el("span", { class: "chip red", "data-total": "failed" }, `${d.failed} failed`));
}

async function definitionsPage(view) {
  const { definitions } = await api("/definitions");
  const cards = [];
  for (const d of definitions) {
    const key = `${d.name} v${d.version}`;
    const diagram = el("div", { class: "diagram", "data-definition": key }, el("p", { class: "muted" }, "Drawing…"));
    const card = el("section", { class: "card definition", "data-definition": key },
      el("div", { class: "card-head" },
        el("div", {},
          el("h2", {}, d.name, " ", el("span", { class: "version" }, `v${d.version}`)),
          d.description ? el("p", { class: "muted" }, d.description) : null),
        summaryChips(d)),
      diagram,
      el("div", { class: "card-foot" },
        el("a", { href: `#/sagas?saga=${encodeURIComponent(d.name)}` }, "Browse its sagas →"),
        el("span", { class: "muted small" }, `${d.states.length} states · counts refresh every ${REFRESH_MS / 1000}s`)));
    cards.push(card);
    api(`/definitions/${encodeURIComponent(d.name)}/diagram.svg?version=${d.version}`, { raw: true })
      .then(svgText => {
        const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
        const svg = doc.documentElement;
        if (svg.nodeName !== "svg") throw new Error("the diagram is not an SVG document");
        svg.removeAttribute("width");
        svg.removeAttribute("height");
        diagram.replaceChildren(document.importNode(svg, true));
        updateCounts(card, d);
      })
      .catch(err => diagram.replaceChildren(errorBox(err)));
  }
  setView(view,
    el("div", { class: "page-head" }, el("h1", {}, "Saga definitions"),
      el("p", { class: "muted" }, "Every loaded definition, with the number of instances in each state (badges on the boxes). Dashed arrows are raised by the engine (timeouts, exhausted retries).")),
    definitions.length ? cards : notice("info", "No saga definitions are loaded."));
  refreshTimer = setInterval(async () => {
    try {
      const fresh = await api("/definitions");
      for (const d of fresh.definitions) {
        const card = view.querySelector(`section[data-definition="${CSS.escape(d.name + " v" + d.version)}"]`);
        if (card) updateCounts(card, d);
      }
    } catch (_) { /* keep the last numbers; the next tick retries */ }
  }, REFRESH_MS);
}

function updateCounts(card, d) {
  for (const g of card.querySelectorAll("g.count[data-state]")) {
    const n = d.counts[g.dataset.state] || 0;
    const t = g.querySelector("text");
    if (t) t.textContent = String(n);
    g.classList.toggle("zero", n === 0);
  }
  card.querySelector(".chips").replaceWith(summaryChips(d));
}

// ---- Saga list ------------------------------------------------------------

async function sagasPage(view, params) {
  const { definitions } = await api("/definitions");
  const names = [...new Set(definitions.map(d => d.name))];
  const chosen = params.get("saga") || "";
  const states = [...new Set(definitions.filter(d => !chosen || d.name === chosen).flatMap(d => d.states))];
  const select = (name, label, options, value) => el("label", {}, label,
    el("select", { name }, el("option", { value: "" }, "any"),
      options.map(o => el("option", { value: o, selected: o === value }, o))));
  const form = el("form", { class: "filters", id: "saga-filters" },
    select("saga", "Definition", names, chosen),
    select("state", "State", states, params.get("state") || ""),
    select("status", "Status", ["running", "compensating", "compensation_failed", "completed", "failed"], params.get("status") || ""),
    el("label", {}, "Business key",
      el("input", { name: "key", placeholder: "deal_id:42", value: params.get("key") || "", spellcheck: "false" })),
    el("button", { type: "submit", class: "primary" }, "Search"),
    el("a", { href: "#/sagas", class: "button" }, "Clear"));
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.hash = "#/sagas" + (q.toString() ? "?" + q : "");
  });
  form.querySelector("select[name=saga]").addEventListener("change", () => form.requestSubmit());

  const q = new URLSearchParams();
  for (const k of ["saga", "state", "status", "key"]) if (params.get(k)) q.set(k, params.get(k));
  q.set("limit", "50");
  const tbody = el("tbody");
  const table = el("table", { class: "list", id: "saga-table" },
    el("thead", {}, el("tr", {}, ["Saga id", "Definition", "State", "Status", "Business keys", "Created", "Updated"].map(h => el("th", {}, h)))),
    tbody);
  const more = el("button", { class: "button", type: "button" }, "Load more");
  const count = el("p", { class: "muted small" });
  let shown = 0;
  async function load(cursor) {
    if (cursor) q.set("cursor", cursor); else q.delete("cursor");
    const page = await api("/sagas?" + q);
    for (const s of page.sagas) {
      tbody.append(el("tr", { "data-saga": s.id },
        el("td", { class: "mono" }, el("a", { href: `#/sagas/${encodeURIComponent(s.id)}`, title: s.id }, shortID(s.id))),
        el("td", {}, `${s.saga} v${s.saga_version}`),
        el("td", {}, pill(s.state, "state")),
        el("td", {}, statusPill(s.status)),
        el("td", { class: "keys" }, Object.entries(s.keys || {}).map(([k, v]) => el("span", { class: "key" }, `${k}=${v}`))),
        el("td", { class: "time" }, fmtTime(s.created_at)),
        el("td", { class: "time" }, fmtTime(s.updated_at))));
    }
    shown += page.sagas.length;
    count.textContent = shown === 0 ? "No saga matches." : `${shown} saga${shown === 1 ? "" : "s"} shown${page.next ? " (more available)" : ""}.`;
    more.hidden = !page.next;
    more.onclick = () => load(page.next).catch(err => view.append(errorBox(err)));
  }
  await load("");
  setView(view,
    el("div", { class: "page-head" }, el("h1", {}, "Sagas"), el("p", { class: "muted" }, "Newest first. Filter by definition, state, status or a business key such as deal_id:42.")),
    el("section", { class: "card" }, form),
    el("section", { class: "card flush" }, table, el("div", { class: "card-foot" }, count, more)));
}

// ---- One saga -------------------------------------------------------------

const kindLabels = { event: "event", refused: "refused", timer: "timer", retry: "retry", operator: "operator",
  compensation: "compensation", compensation_failed: "compensation failed", expired: "expired", late: "late reply" };

function timelineEntry(h) {
  const move = h.from_state || h.to_state
    ? el("span", { class: "move" }, h.from_state || "start", " → ", h.to_state || h.from_state)
    : null;
  return el("li", { class: `entry ${h.kind}`, "data-kind": h.kind },
    el("div", { class: "when time" }, fmtTime(h.at)),
    el("div", { class: "what" },
      el("div", { class: "line" },
        pill(kindLabels[h.kind] || h.kind, `kind-${h.kind}`),
        el("strong", { class: "event" }, h.event || "(unnamed)"),
        h.by ? el("span", { class: "muted" }, `by ${h.by}`) : null,
        move),
      (h.commands || []).map(c => el("div", { class: "command" },
        "⇢ sent ", el("strong", {}, c.name), ` to ${c.participant}`, c.attempt > 1 ? ` (attempt ${c.attempt})` : "",
        el("span", { class: "mono muted small" }, ` ${shortID(c.id)}`))),
      h.code ? el("div", { class: "refusal" }, el("span", { class: "pill red" }, h.code), " ", h.reason || "") : null,
      !h.code && h.reason ? el("div", { class: "reason" }, "“", h.reason, "”") : null,
      h.actor ? el("div", { class: "actor muted small" }, h.kind === "operator" ? `by operator ${h.actor}` : `fired over the API by ${h.actor}`) : null));
}

async function sagaPage(view, id) {
  const { saga: s, timeline } = await api(`/sagas/${encodeURIComponent(id)}`);
  const facts = [
    ["Definition", `${s.saga} v${s.saga_version}`],
    ["State", s.state],
    ["Status", statusPill(s.status)],
    ["Created", fmtTime(s.created_at)],
    ["Updated", fmtTime(s.updated_at)],
    ["In state since", fmtTime(s.entered_at)],
    ["Next timer", s.timer_at ? fmtTime(s.timer_at) : "none"],
    ["Pending command", s.pending ? `${s.pending.name} → ${s.pending.participant} (attempt ${s.attempts || 1})` : "none"],
  ];
  if (s.deferred) facts.push(["Held back until compensated", `${s.deferred.name} → ${s.deferred.participant}`]);
  for (const [k, v] of Object.entries(s.keys || {})) facts.push([`Key ${k}`, v]);
  const result = el("div", { class: "result" });
  const reason = el("input", { name: "reason", placeholder: "why (recorded in the timeline)", required: true });
  const act = async (path, body, what) => {
    if (!reason.value.trim()) { result.replaceChildren(notice("error", "Give a reason: it is recorded in the saga's timeline.")); return; }
    try {
      const inst = await api(`/sagas/${encodeURIComponent(id)}/${path}`, { method: "POST", body: Object.assign({ reason: reason.value }, body) });
      sessionStorage.setItem("saga-machine.flash", `${what}: saga is now ${inst.state} (${inst.status}).`);
      render();
    } catch (err) { result.replaceChildren(errorBox(err)); }
  };
  const running = s.status === "running";
  const stuck = s.status === "compensation_failed";
  const operate = me.may_operate;
  reason.disabled = !operate;
  const actions = el("form", { class: "actions", onsubmit: ev => ev.preventDefault() },
    reason,
    el("button", { type: "button", class: "button", disabled: !s.pending || !operate, onclick: () => act("resend", {}, "Command re-sent") }, "Re-send pending command"),
    el("button", { type: "button", class: "button danger", disabled: !running || !operate, onclick: () => act("abort", {}, "Saga aborted") }, "Abort saga"),
    stuck ? el("button", { type: "button", class: "button", disabled: !operate, onclick: () => act("compensation/retry", {}, "Compensation re-sent") }, "Retry compensation") : null,
    stuck ? el("button", { type: "button", class: "button danger", disabled: !operate, onclick: () => act("compensation/resolve", {}, "Compensation resolved") }, "Mark compensation done by hand") : null);
  const undo = (s.undo || []).map(u => el("tr", {},
    el("td", {}, el("strong", {}, u.command), ` → ${u.participant}`),
    el("td", {}, `${u.of_kind} ${u.of_name}`, el("span", { class: "mono muted small" }, ` ${shortID(u.of)}`)),
    el("td", {}, pill(u.status, { compensated: "green", resolved: "green", compensating: "amber", expired: "grey" }[u.status] || "blue"),
      u.resolved_by ? el("div", { class: "muted small" }, `by ${u.resolved_by}: ${u.reason || ""}`) : null,
      u.sent ? el("div", { class: "muted small" }, `sent ${u.sent}×`) : null)));
  const flash = sessionStorage.getItem("saga-machine.flash");
  sessionStorage.removeItem("saga-machine.flash");
  setView(view,
    el("div", { class: "page-head" },
      el("p", {}, el("a", { href: "#/sagas" }, "← all sagas")),
      el("h1", {}, "Saga ", el("span", { class: "mono" }, s.id)),
      el("p", {}, pill(s.state, "state"), " ", statusPill(s.status))),
    flash ? notice("ok", flash) : null,
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Facts"),
        el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))),
      el("section", { class: "card" }, el("h2", {}, "Context"),
        el("pre", { class: "json" }, JSON.stringify(s.context || {}, null, 2)))),
    undo.length ? el("section", { class: "card", id: "compensations" }, el("h2", {}, "Compensations (newest is undone first)"),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Compensation"), el("th", {}, "Undoes"), el("th", {}, "Status"))),
        el("tbody", {}, undo))) : null,
    el("section", { class: "card" }, el("h2", {}, "Operator actions"),
      operate ? el("p", { class: "muted small" }, "Needs the saga-operator role. Your name and reason go into the timeline.") : readOnlyNote(),
      actions, result),
    el("section", { class: "card" }, el("h2", {}, `Timeline (${timeline.length})`),
      el("ol", { class: "timeline", id: "timeline" }, timeline.map(timelineEntry))));
}

// ---- Dead letters ---------------------------------------------------------

function envelopeSummary(raw) {
  try {
    const m = JSON.parse(raw);
    return `${m.name || "?"} by ${m.participant || "?"}`;
  } catch (_) {
    return "(not a JSON envelope)";
  }
}

async function deadLettersPage(view, params) {
  const all = params.get("all") === "1";
  const { dead_letters: dls } = await api(`/dead-letters?limit=200&include_replayed=${all}`);
  const flash = sessionStorage.getItem("saga-machine.flash");
  sessionStorage.removeItem("saga-machine.flash");
  const rows = dls.map(d => {
    const status = el("div", { class: "row-result" });
    const replay = el("button", {
      type: "button", class: "button primary replay", "data-dead-letter": d.id, disabled: !!d.replayed_at || !me.may_operate,
      onclick: async () => {
        replay.disabled = true;
        try {
          const res = await api(`/dead-letters/${d.id}/replay`, { method: "POST", body: {} });
          const s = res.saga;
          sessionStorage.setItem("saga-machine.flash",
            `Dead letter ${d.id} replayed` + (s ? `: saga ${shortID(s.id)} is now ${s.state} (${s.status}).` : "."));
          render();
        } catch (err) {
          replay.disabled = false;
          status.replaceChildren(errorBox(err));
        }
      },
    }, d.replayed_at ? "Replayed" : "Replay");
    return el("tr", { "data-dead-letter": d.id },
      el("td", { class: "mono" }, String(d.id)),
      el("td", { class: "time" }, fmtTime(d.created_at)),
      el("td", { class: "mono" }, d.saga_id ? el("a", { href: `#/sagas/${encodeURIComponent(d.saga_id)}`, title: d.saga_id }, shortID(d.saga_id)) : "—"),
      el("td", {}, d.raw !== undefined ? envelopeSummary(d.raw) : "(binary)",
        el("details", {}, el("summary", { class: "small" }, `${d.topic}[${d.partition}]@${d.offset}`),
          el("pre", { class: "json" }, d.raw !== undefined ? d.raw : d.raw_base64))),
      el("td", {}, el("span", { class: "pill red" }, d.code), el("div", { class: "reason small" }, d.reason)),
      el("td", {}, replay, d.replayed_at ? el("div", { class: "muted small" }, `by ${d.replayed_by} at ${fmtTime(d.replayed_at)}`) : null, status));
  });
  setView(view,
    el("div", { class: "page-head" }, el("h1", {}, "Dead letters"),
      el("p", { class: "muted" }, "Messages that could not be applied, with the reason. Replay applies one again as if it had just arrived (for example after the event it was waiting for has come).")),
    flash ? notice("ok", flash) : null,
    me.may_operate ? null : readOnlyNote(),
    el("p", {}, all
      ? el("a", { href: "#/dead-letters" }, "Hide replayed dead letters")
      : el("a", { href: "#/dead-letters?all=1" }, "Show replayed dead letters too")),
    el("section", { class: "card flush" },
      dls.length === 0 ? el("p", { class: "empty" }, "No dead letters. 🎉") :
        el("table", { class: "list", id: "dead-letter-table" },
          el("thead", {}, el("tr", {}, ["Id", "Stored", "Saga", "Message", "Why", ""].map(h => el("th", {}, h)))),
          el("tbody", {}, rows))));
}

// ---- Start ----------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = token();
  document.getElementById("token-form").addEventListener("submit", ev => {
    ev.preventDefault();
    if (input.value.trim()) localStorage.setItem(TOKEN_KEY, input.value.trim());
    else localStorage.removeItem(TOKEN_KEY);
    me = null; // another token: ask again who we are
    whoami();
    render();
  });
  window.addEventListener("hashchange", render);
  render();
});
