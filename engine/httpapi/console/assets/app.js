// saga-machine operator console: a hash-routed single page over /api/v1.
// Plain JavaScript, no dependencies. Every value from the API is put into
// the page with textContent (never innerHTML), except the diagrams, which
// are SVG documents rendered by the server and parsed with DOMParser.
//
// Sign-in (when config.json says "oidc"): OpenID Connect authorization code
// flow with PKCE (S256) as a public client. The tokens live in this page's
// memory only (never localStorage or sessionStorage); a reload signs in
// again through the issuer's session, which shows no page when the session
// is alive. Only the sign-in request under way (state, nonce, PKCE verifier,
// the page to come back to) waits in sessionStorage while the browser is at
// the issuer, and is removed when it comes back.
"use strict";

const REFRESH_MS = 5000;
const LOGIN_KEY = "saga-machine.login";
let refreshTimer = null;
// me is GET /api/v1/me for the current token: who the API takes us for and
// whether we may read (saga-viewer or saga-operator) and act (saga-operator).
let me = null;
// settings is config.json: {auth: "none"} or {auth: "oidc", oidc: {...}}.
let settings = { auth: "none" };
// tokens is the signed-in session, in memory only:
// {access, id, refresh, expiresAt, since} (times in ms).
let tokens = null;
let refreshing = null;
// flash is a one-time notice shown by the next page rendered.
let flash = null;

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

// ---- Sign-in (OIDC authorization code + PKCE) -------------------------------

// Redirecting is thrown when the browser is on its way to the issuer.
class Redirecting extends Error {
  constructor() { super("Signing in…"); }
}

// SignInError is a sign-in that was refused; the page says why.
class SignInError extends Error {}

function b64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString() {
  return b64url(crypto.getRandomValues(new Uint8Array(32)));
}

// SHA-256 in plain JavaScript, for pages served over plain HTTP on a
// non-loopback host, where crypto.subtle does not exist.
const SHA256_K = new Uint32Array([0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
  0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb,
  0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f,
  0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);

function sha256Plain(msg) {
  const ror = (x, n) => (x >>> n) | (x << (32 - n));
  const padded = new Uint8Array(((msg.length + 9 + 63) >> 6) << 6);
  padded.set(msg);
  padded[msg.length] = 0x80;
  const dv = new DataView(padded.buffer);
  const bits = msg.length * 8;
  dv.setUint32(padded.length - 8, Math.floor(bits / 0x100000000));
  dv.setUint32(padded.length - 4, bits >>> 0);
  const H = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const W = new Uint32Array(64);
  for (let off = 0; off < padded.length; off += 64) {
    for (let t = 0; t < 16; t++) W[t] = dv.getUint32(off + 4 * t);
    for (let t = 16; t < 64; t++) {
      const s0 = ror(W[t - 15], 7) ^ ror(W[t - 15], 18) ^ (W[t - 15] >>> 3);
      const s1 = ror(W[t - 2], 17) ^ ror(W[t - 2], 19) ^ (W[t - 2] >>> 10);
      W[t] = W[t - 16] + s0 + W[t - 7] + s1;
    }
    let [a, b, c, d, e, f, g, h] = H;
    for (let t = 0; t < 64; t++) {
      const t1 = (h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[t] + W[t]) >>> 0;
      const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      h = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    H[0] += a; H[1] += b; H[2] += c; H[3] += d; H[4] += e; H[5] += f; H[6] += g; H[7] += h;
  }
  const out = new Uint8Array(32);
  const ov = new DataView(out.buffer);
  H.forEach((v, n) => ov.setUint32(4 * n, v));
  return out;
}

async function sha256(text) {
  const data = new TextEncoder().encode(text);
  if (window.crypto && crypto.subtle) return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return sha256Plain(data);
}

// consoleBase is the console's URL without file, query or fragment
// (http://host/console/): the redirect URI registered at the issuer.
function consoleBase() {
  return location.origin + location.pathname.replace(/[^/]*$/, "");
}

// startSignIn sends the browser to the issuer's authorization endpoint and
// remembers (until it comes back) what the answer must match.
async function startSignIn(returnHash) {
  const o = settings.oidc;
  const login = { state: randomString(), nonce: randomString(), verifier: randomString(), hash: returnHash || "", redirect_uri: consoleBase() };
  const challenge = b64url(await sha256(login.verifier));
  sessionStorage.setItem(LOGIN_KEY, JSON.stringify(login));
  const q = new URLSearchParams({
    response_type: "code", client_id: o.client_id, redirect_uri: login.redirect_uri, scope: o.scope,
    state: login.state, nonce: login.nonce, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(o.authorization_endpoint + (o.authorization_endpoint.includes("?") ? "&" : "?") + q);
  throw new Redirecting();
}

// jwtPayload decodes a JWT's claims without checking the signature (the
// ID token came straight from the token endpoint; the API verifies the
// access token itself).
function jwtPayload(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch (_) {
    return null;
  }
}

async function tokenRequest(form) {
  let res;
  try {
    res = await fetch(settings.oidc.token_endpoint, { method: "POST", body: new URLSearchParams(form), credentials: "omit", cache: "no-store" });
  } catch (err) {
    throw new SignInError(`The issuer's token endpoint could not be reached: ${err.message}`);
  }
  let body = {};
  try { body = await res.json(); } catch (_) { /* not JSON: the status says enough */ }
  if (!res.ok) throw new SignInError(`The issuer refused: ${body.error || "HTTP " + res.status}${body.error_description ? " (" + body.error_description + ")" : ""}.`);
  if (!body.access_token || String(body.token_type).toLowerCase() !== "bearer") throw new SignInError("The issuer's answer holds no bearer access token.");
  return body;
}

function keep(res, since) {
  tokens = {
    access: res.access_token,
    id: res.id_token || (tokens && tokens.id) || "",
    refresh: res.refresh_token || "",
    expiresAt: Date.now() + (Number(res.expires_in) || 300) * 1000,
    since: since || (tokens && tokens.since) || Date.now(),
  };
}

// finishSignIn checks the issuer's answer on the redirect URI against the
// sign-in this tab started (state, issuer), redeems the code with the PKCE
// verifier and checks the ID token's nonce. The code leaves the address
// bar and the history before anything else.
async function finishSignIn(params) {
  const o = settings.oidc;
  let login = null;
  try { login = JSON.parse(sessionStorage.getItem(LOGIN_KEY) || "null"); } catch (_) { login = null; }
  sessionStorage.removeItem(LOGIN_KEY);
  history.replaceState(null, "", location.pathname + (login && login.hash ? login.hash : location.hash));
  if (!login || !params.get("state") || params.get("state") !== login.state)
    throw new SignInError("This sign-in answer was not asked for by this page (its state does not match the sign-in started here), so it was refused and nothing was exchanged.");
  if (params.get("iss") && params.get("iss") !== o.issuer)
    throw new SignInError(`The answer names another issuer (${params.get("iss")}): refused.`);
  if (params.get("error"))
    throw new SignInError(`The issuer refused the sign-in: ${params.get("error")}${params.get("error_description") ? " (" + params.get("error_description") + ")" : ""}.`);
  const res = await tokenRequest({
    grant_type: "authorization_code", code: params.get("code") || "", redirect_uri: login.redirect_uri,
    client_id: o.client_id, code_verifier: login.verifier,
  });
  if (res.id_token) {
    const c = jwtPayload(res.id_token);
    if (!c || c.nonce !== login.nonce || c.iss !== o.issuer || ![].concat(c.aud).includes(o.client_id))
      throw new SignInError("The ID token does not belong to this sign-in (nonce, issuer or audience differ): refused.");
  }
  keep(res, Date.now());
}

// accessToken returns a valid access token, refreshing it shortly before
// it expires; without one it signs in again (the browser leaves the page).
async function accessToken() {
  if (settings.auth !== "oidc") return "";
  if (tokens && Date.now() < tokens.expiresAt - 30000) return tokens.access;
  if (tokens && tokens.refresh) {
    refreshing = refreshing || tokenRequest({ grant_type: "refresh_token", refresh_token: tokens.refresh, client_id: settings.oidc.client_id })
      .then(res => keep(res)).finally(() => { refreshing = null; });
    try {
      await refreshing;
      return tokens.access;
    } catch (_) { /* the session ended at the issuer: sign in again */ }
  }
  tokens = null;
  return startSignIn(location.hash);
}

// signOut forgets the tokens and ends the session at the issuer, which
// sends the browser to signed-out.html.
function signOut() {
  const o = settings.oidc;
  const id = tokens && tokens.id;
  tokens = null;
  me = null;
  sessionStorage.removeItem(LOGIN_KEY);
  const after = consoleBase() + "signed-out.html";
  if (o && o.end_session_endpoint && id) {
    const q = new URLSearchParams({ id_token_hint: id, post_logout_redirect_uri: after, client_id: o.client_id });
    location.assign(o.end_session_endpoint + (o.end_session_endpoint.includes("?") ? "&" : "?") + q);
  } else {
    location.assign(after);
  }
}

function signInFailedPage(err) {
  const main = document.getElementById("main");
  main.replaceChildren(el("section", { class: "card refused", id: "sign-in-refused", role: "alert" },
    el("h1", {}, "Sign-in refused"),
    el("p", {}, err.message),
    el("p", {}, el("button", { type: "button", class: "button primary", id: "sign-in-again", onclick: () => startSignIn("").catch(() => {}) }, "Sign in again"))));
}

// ---- API ------------------------------------------------------------------

class APIError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.problem = problem;
    this.status = status;
  }
}

async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  const bearer = await accessToken();
  if (bearer) headers.Authorization = "Bearer " + bearer;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch("/api/v1" + path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  if (res.status === 401 && tokens && Date.now() - tokens.since > 10000) {
    // The token stopped working (revoked, keys rotated...): sign in again,
    // unless it was just issued (then say so instead of looping).
    tokens = null;
    return startSignIn(location.hash);
  }
  if (!res.ok) {
    let problem = { title: res.statusText };
    try { problem = JSON.parse(text); } catch (_) { /* not JSON: keep the status text */ }
    throw new APIError(problem, res.status);
  }
  return opts.raw ? text : JSON.parse(text);
}

function errorBox(err) {
  if (err instanceof Redirecting) return notice("info", "Signing in…");
  const box = notice("error", err.message);
  if (err.status === 401) box.append(el("div", { class: "hint" }, settings.auth === "oidc"
    ? "The API refused the token of this sign-in: check that the issuer's access tokens carry the API's audience (see docs/auth.md)."
    : "The API asks for a token, but this console has no sign-in configured: start saga-machine with --issuer (its console signs in with --console-client-id)."));
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
  const out = document.getElementById("sign-out");
  if (out) out.hidden = !(settings.auth === "oidc" && tokens);
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
      el("p", { class: "muted" }, "Ask your administrator for one of these roles, or sign out and sign in with an account that has one.")));
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

// takeFlash returns the one-time notice left by an action, and forgets it.
function takeFlash() {
  const f = flash;
  flash = null;
  return f;
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

// timelineEntry renders one timeline entry. seen (optional) maps the ids
// of the commands named by earlier entries to their latest attempt: a
// command named again with the same attempt is one this entry answers
// (a parallel step's branch reply), with a higher one a re-send.
function timelineEntry(h, seen) {
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
      (h.commands || []).map(c => {
        const before = seen ? seen.get(c.id) : undefined;
        if (seen) seen.set(c.id, Math.max(c.attempt || 0, before || 0));
        const answered = before !== undefined && (c.attempt || 0) <= before;
        return el("div", { class: "command", "data-branch": c.branch || null, "data-verb": answered ? "answers" : "sent" },
        answered ? "⇠ answers " : "⇢ sent ", c.branch ? [branchPill(c.branch), " "] : null,
        el("strong", {}, c.name), ` to ${c.participant}`, c.attempt > 1 ? ` (attempt ${c.attempt})` : "",
        el("span", { class: "mono muted small" }, ` ${shortID(c.id)}`));
      }),
      h.code ? el("div", { class: "refusal" }, el("span", { class: "pill red" }, h.code), " ", h.reason || "") : null,
      !h.code && h.reason ? el("div", { class: "reason" }, "“", h.reason, "”") : null,
      h.actor ? el("div", { class: "actor muted small" }, h.kind === "operator" ? `by operator ${h.actor}` : `fired over the API by ${h.actor}`) : null));
}

// branchPill names a parallel step's branch: "2", or "2[3]" for the
// element at index 3 of the second branch's fan-out.
function branchPill(label) {
  return el("span", { class: "pill branch", title: "branch of the parallel step" }, `branch ${label}`);
}

// branchLabel is the engine's BranchCommand.Label: the branch's position
// from 1, with the fan-out element's index.
function branchLabel(c) {
  return String(Number(c.branch) + 1) + (c.element !== undefined && c.element !== null ? `[${c.element}]` : "");
}

const joinPolicies = { all: "all branches must succeed", first: "the first to succeed", at_least: "at least N must succeed" };
const joinOutcomes = { done: ["done: raised then", "green"], failed: ["failed: raised else", "red"], left: ["left before the join decided", "grey"] };

// joinDecision finds the timeline entry in which the engine raised the
// join's then or else event: the first engine entry leaving the join's
// state after the entry of the event that started the step.
function joinDecision(j, timeline) {
  if (j.outcome !== "done" && j.outcome !== "failed") return null;
  const start = timeline.findIndex(h => h.message_id === j.cause);
  return timeline.slice(start + 1).find(h => h.kind === "timer" && h.from_state === j.state) || null;
}

// joinPanel shows the saga's latest parallel step (GET /sagas/{id}'s
// saga.join): its policy and outcome, and per branch command its label,
// participant, status, attempts, next re-send, deadline and payload. Every
// value goes in as text.
function joinPanel(j, timeline) {
  const commands = j.commands || [];
  const ok = commands.filter(c => c.status === "ok").length;
  const failed = commands.filter(c => c.status === "failed").length;
  const outcome = j.outcome ? joinOutcomes[j.outcome] || [j.outcome, "grey"] : ["waiting for the join", "blue"];
  const decision = joinDecision(j, timeline || []);
  const step = (timeline || []).find(h => h.message_id === j.cause && h.to_state === j.state);
  const facts = [
    ["Started by", [el("strong", {}, j.event), el("span", { class: "mono muted small" }, ` ${shortID(j.cause)}`)]],
    ["Joins in state", pill(j.state, "state")],
    ["Policy", `${j.policy}${j.policy === "at_least" ? " " + j.need : ""} (${joinPolicies[j.policy] || "policy"}): ${j.need} of ${commands.length} needed`],
    step && step.reason ? ["Join", step.reason] : null,
    ["Replies", `${ok} ok, ${failed} failed, ${commands.length - ok - failed} pending`],
    ["Outcome", [pill(outcome[0], outcome[1]), decision ? [" ", el("strong", { class: "decision" }, decision.event), ` → ${decision.to_state || decision.from_state}`] : null]],
  ];
  const rows = commands.map(c => el("tr", { "data-branch": branchLabel(c), "data-status": c.status },
    el("td", {}, branchPill(branchLabel(c))),
    el("td", {}, c.participant),
    el("td", {}, el("strong", {}, c.name), el("div", { class: "mono muted small", title: c.id }, shortID(c.id))),
    el("td", {}, pill(c.status, { ok: "green", failed: "red", pending: "blue" }[c.status] || "grey"),
      c.why ? el("div", { class: "reason small" }, c.why) : null),
    el("td", {}, String(c.attempts || 0)),
    el("td", { class: "time" }, c.next_at ? fmtTime(c.next_at) : "—"),
    el("td", { class: "time" }, c.deadline ? fmtTime(c.deadline) : "none"),
    el("td", {}, c.payload !== undefined
      ? el("details", {}, el("summary", { class: "small" }, "payload"), el("pre", { class: "json" }, JSON.stringify(c.payload, null, 2)))
      : el("span", { class: "muted" }, "—"))));
  return el("section", { class: "card", id: "parallel-step" },
    el("h2", {}, `Parallel step (${commands.length} command${commands.length === 1 ? "" : "s"})`),
    el("dl", { class: "facts" }, facts.filter(f => f).map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("table", { class: "list", id: "branch-table" },
      el("thead", {}, el("tr", {}, ["Branch", "Participant", "Command", "Status", "Attempts", "Next re-send", "Deadline", "Payload"].map(h => el("th", {}, h)))),
      el("tbody", {}, rows)));
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
    ["Pending command", s.pending ? `${s.pending.name} → ${s.pending.participant} (attempt ${s.attempts || 1})`
      : s.join && !s.join.outcome ? "none: the parallel step below waits for its branches" : "none"],
  ];
  if (s.deferred) facts.push(["Held back until compensated", `${s.deferred.name} → ${s.deferred.participant}`]);
  for (const [k, v] of Object.entries(s.keys || {})) facts.push([`Key ${k}`, v]);
  const result = el("div", { class: "result" });
  const reason = el("input", { name: "reason", placeholder: "why (recorded in the timeline)", required: true });
  const act = async (path, body, what) => {
    if (!reason.value.trim()) { result.replaceChildren(notice("error", "Give a reason: it is recorded in the saga's timeline.")); return; }
    try {
      const inst = await api(`/sagas/${encodeURIComponent(id)}/${path}`, { method: "POST", body: Object.assign({ reason: reason.value }, body) });
      flash = `${what}: saga is now ${inst.state} (${inst.status}).`;
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
  const undo = (s.undo || []).map(u => el("tr", { "data-branch": u.branch || null, "data-group": u.group || null },
    el("td", {}, el("strong", {}, u.command), ` → ${u.participant}`),
    el("td", {}, u.branch ? [branchPill(u.branch), " "] : null, `${u.of_kind} ${u.of_name}`, el("span", { class: "mono muted small" }, ` ${shortID(u.of)}`),
      u.group ? el("div", { class: "muted small", title: u.group }, `parallel step ${shortID(u.group)}: compensated together`) : null),
    el("td", {}, pill(u.status, { compensated: "green", resolved: "green", compensating: "amber", expired: "grey", failed: "grey" }[u.status] || "blue"),
      u.stuck ? el("div", { class: "refusal small" }, "unanswered past its last attempt") : null,
      u.resolved_by ? el("div", { class: "muted small" }, `by ${u.resolved_by}: ${u.reason || ""}`) : null,
      u.sent ? el("div", { class: "muted small" }, `sent ${u.sent}×`) : null,
      u.next_at ? el("div", { class: "muted small" }, `next re-send ${fmtTime(u.next_at)}`) : null)));
  const flashText = takeFlash();
  const seen = new Map(); // command id → latest attempt, for timelineEntry
  setView(view,
    el("div", { class: "page-head" },
      el("p", {}, el("a", { href: "#/sagas" }, "← all sagas")),
      el("h1", {}, "Saga ", el("span", { class: "mono" }, s.id)),
      el("p", {}, pill(s.state, "state"), " ", statusPill(s.status))),
    flashText ? notice("ok", flashText) : null,
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Facts"),
        el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))),
      el("section", { class: "card" }, el("h2", {}, "Context"),
        el("pre", { class: "json" }, JSON.stringify(s.context || {}, null, 2)))),
    s.join ? joinPanel(s.join, timeline) : null,
    undo.length ? el("section", { class: "card", id: "compensations" }, el("h2", {}, "Compensations (newest is undone first)"),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Compensation"), el("th", {}, "Undoes"), el("th", {}, "Status"))),
        el("tbody", {}, undo))) : null,
    el("section", { class: "card" }, el("h2", {}, "Operator actions"),
      operate ? el("p", { class: "muted small" }, "Needs the saga-operator role. Your name and reason go into the timeline.") : readOnlyNote(),
      actions, result),
    el("section", { class: "card" }, el("h2", {}, `Timeline (${timeline.length})`),
      el("ol", { class: "timeline", id: "timeline" }, timeline.map(h => timelineEntry(h, seen)))));
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
  const flashText = takeFlash();
  const rows = dls.map(d => {
    const status = el("div", { class: "row-result" });
    const replay = el("button", {
      type: "button", class: "button primary replay", "data-dead-letter": d.id, disabled: !!d.replayed_at || !me.may_operate,
      onclick: async () => {
        replay.disabled = true;
        try {
          const res = await api(`/dead-letters/${d.id}/replay`, { method: "POST", body: {} });
          const s = res.saga;
          flash = `Dead letter ${d.id} replayed` + (s ? `: saga ${shortID(s.id)} is now ${s.state} (${s.status}).` : ".");
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
    flashText ? notice("ok", flashText) : null,
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

// boot reads config.json; with OIDC it either finishes the sign-in the
// issuer answered (?code=…&state=…) or starts one, then renders.
async function boot() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  try {
    // Same-origin credentials: behind oauth2-proxy the console's files need its cookie.
    const res = await fetch("config.json", { cache: "no-store" });
    if (!res.ok) throw new Error(`config.json: HTTP ${res.status}`);
    settings = await res.json();
  } catch (err) {
    document.getElementById("main").replaceChildren(notice("error", `The console's settings could not be read: ${err.message}`));
    return;
  }
  if (settings.auth === "oidc") {
    const params = new URLSearchParams(location.search);
    try {
      if (params.has("code") || params.has("error") || params.has("state")) await finishSignIn(params);
      else await startSignIn(location.hash);
    } catch (err) {
      if (err instanceof Redirecting) {
        document.getElementById("main").replaceChildren(notice("info", "Signing in…"));
        return;
      }
      signInFailedPage(err);
      return;
    }
  }
  window.addEventListener("hashchange", render);
  render();
}

document.addEventListener("DOMContentLoaded", boot);
