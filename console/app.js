// actiongate console: a static page that calls the JSON API with a bearer token kept in memory
// (never in localStorage). Every change it makes is an API call an operator could make with
// curl, and is audited under their identity. No inline script, no other origin: the strict CSP
// the stack sends allows only this file, the page's stylesheet and the vendored uPlot.
"use strict";

(() => {
  const state = { config: null, token: null, user: null, admin: false, email: null };

  // ------------------------------------------------------------------ DOM helpers (no innerHTML)

  /** An element with attributes and children (strings become text nodes: never parsed as HTML). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const main = () => document.getElementById("main");

  function show(...nodes) {
    const m = main();
    m.replaceChildren(...nodes);
    m.focus({ preventScroll: true });
  }

  function toast(text, bad) {
    const t = document.getElementById("toast");
    t.textContent = text;
    t.className = bad ? "bad shown" : "shown";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.className = ""), 5000);
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }

  async function api(method, path, body) {
    const headers = { authorization: `Bearer ${state.token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { message: text };
    }
    if (res.status === 401) {
      signOut("Your sign-in has ended; sign in again.");
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  const query = (params) =>
    Object.entries(params)
      .filter(([, v]) => v !== "" && v !== null && v !== undefined)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
      .join("&");

  // ------------------------------------------------------------------ sign-in

  function signedIn(token, user, admin) {
    state.token = token;
    state.user = user;
    state.admin = admin;
    state.email = user.includes("@") ? user : null;
    document.getElementById("nav").hidden = false;
    document.getElementById("sign-out").hidden = false;
    document.getElementById("nav-settings").hidden = !admin;
    document.getElementById("who").textContent = `${user}${admin ? " (admin)" : ""}`;
    if (!location.hash || location.hash === "#/sign-in") location.hash = "#/queue";
    else route();
  }

  function signOut(message) {
    state.token = null;
    state.user = null;
    state.admin = false;
    document.getElementById("nav").hidden = true;
    document.getElementById("sign-out").hidden = true;
    document.getElementById("who").textContent = "";
    signInPage(message);
  }

  function signInPage(message) {
    if (state.config && state.config.sign_in === "dev") {
      const form = h(
        "form",
        { id: "sign-in", onsubmit: (e) => {
          e.preventDefault();
          const user = form.elements.user.value.trim();
          if (!/^[A-Za-z0-9._@+-]{1,128}$/.test(user)) {
            form.querySelector(".error").textContent = "A user id: letters, digits and . _ @ + -";
            return;
          }
          const admin = form.elements.admin.checked;
          signedIn(`dev:${user}${admin ? ":admin" : ""}`, user, admin);
        } },
        h("h1", {}, "Sign in"),
        h("p", { class: "muted" }, "Local stack: the development identity the local gateway accepts. The deployed console signs in through your identity provider instead."),
        h("label", { for: "user" }, "User"),
        h("input", { id: "user", name: "user", autocomplete: "username", required: true }),
        h("label", { class: "check" }, h("input", { type: "checkbox", name: "admin" }), " Administrator"),
        h("p", { class: "error", role: "alert" }, message || ""),
        h("button", { type: "submit", class: "primary" }, "Sign in"),
      );
      show(form);
      form.elements.user.focus();
      return;
    }
    show(
      h("h1", {}, "Sign in"),
      h("p", { class: "error", role: "alert" }, message || ""),
      h("button", { type: "button", class: "primary", onclick: startOidc }, "Sign in with your identity provider"),
    );
  }

  // OpenID Connect authorization code with PKCE: the verifier and state live in sessionStorage
  // only for the round trip to the identity provider; the tokens stay in memory.
  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

  async function startOidc() {
    const o = state.config.oidc;
    const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    const st = b64url(crypto.getRandomValues(new Uint8Array(16)));
    sessionStorage.setItem("pkce", JSON.stringify({ verifier, state: st }));
    const redirect = `${location.origin}/console`;
    location.assign(`${o.authorize_url}?${query({ response_type: "code", client_id: o.client_id, redirect_uri: redirect, scope: o.scope, state: st, code_challenge: challenge, code_challenge_method: "S256" })}`);
  }

  /** A JWT's claims (unverified: only for the page's own display; the API verifies). */
  function claimsOf(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === "object" ? claims : {};
    } catch {
      return {};
    }
  }

  async function finishOidc() {
    const params = new URLSearchParams(location.search);
    const code = params.get("code");
    const failed = params.get("error");
    if (!code && !failed) return false;
    let saved = {};
    try {
      saved = JSON.parse(sessionStorage.getItem("pkce") || "{}") || {};
    } catch {}
    sessionStorage.removeItem("pkce");
    history.replaceState(null, "", "/console");
    if (failed) {
      signInPage(`The identity provider did not sign you in (${failed}).`);
      return true;
    }
    if (!saved.verifier || saved.state !== params.get("state")) {
      signInPage("The sign-in did not match the one started here; try again.");
      return true;
    }
    const o = state.config.oidc || {};
    let tokens = null;
    let ok = false;
    try {
      const res = await fetch(o.token_url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: query({ grant_type: "authorization_code", code, redirect_uri: `${location.origin}/console`, client_id: o.client_id, code_verifier: saved.verifier }),
      });
      ok = res.ok;
      tokens = await res.json().catch(() => null);
    } catch {}
    // The ID token carries the email an approver is asked by (list the console's client id in
    // the API's JwtAudience); an access token without one is the fallback.
    const token = tokens && (tokens.id_token || tokens.access_token);
    if (!ok || typeof token !== "string" || !token) {
      signInPage("The identity provider did not sign you in.");
      return true;
    }
    const claims = claimsOf(token);
    const text = (v) => (typeof v === "string" && v ? v : null);
    const user = text(claims.email) || text(claims.sub) || "you";
    const groups = [].concat(claims["cognito:groups"] || claims.groups || []);
    // Only what the API itself treats as an administrator: the group `admin`.
    signedIn(token, user, groups.includes("admin"));
    return true;
  }

  // ------------------------------------------------------------------ shared views

  const TIERS = { 1: ["Auto", "tier-auto"], 2: ["On approval", "tier-approval"], 3: ["Manual", "tier-manual"] };

  function badge(tier) {
    const [label, cls] = TIERS[tier] || ["Untiered", "tier-none"];
    return h("span", { class: `badge ${cls}`, title: tier ? `tier ${tier}` : "blocked before it was tiered" }, label);
  }

  const statusBadge = (s) => h("span", { class: `status s-${s}` }, s.replace(/_/g, " "));
  const when = (t) => (t ? new Date(t).toLocaleString() : "—");

  function errorText(e) {
    if (!(e instanceof ApiError)) return String(e);
    const b = e.body || {};
    return `${b.error ? b.error + ": " : ""}${b.message || e.message}`;
  }

  /** What each step will do: its type and payload, and its connector's words. */
  function preview(action) {
    return h(
      "ol",
      { class: "steps" },
      (action.steps || []).map((s) =>
        h(
          "li",
          {},
          s.kind === "action" ? h("code", {}, s.action_type) : h("span", {}, s.wait_for ? `wait ${s.wait_for}` : `wait until ${s.wait_until}`),
          s.preview ? h("span", { class: "muted" }, ` — the connector says “${s.preview}”`) : null,
          s.payload ? h("details", {}, h("summary", {}, "Payload"), h("pre", {}, JSON.stringify(s.payload, null, 2))) : null,
        ),
      ),
    );
  }

  function quorum(action) {
    if (action.status !== "awaiting_approval") return null;
    const votes = action.approvals || [];
    const yes = votes.filter((v) => v.decision === "approved").length;
    return h(
      "p",
      { class: "quorum" },
      `${yes} of ${action.approvals_required} approvals`,
      votes.length ? ` (${votes.map((v) => `${v.approver} ${v.decision}`).join("; ")})` : "",
      action.approvers && action.approvers.length ? ` — asked: ${action.approvers.join(", ")}` : "",
    );
  }

  function mayDecide(action) {
    if (action.status !== "awaiting_approval" || action.user_id === state.user) return false;
    if (state.admin) return true;
    const me = (state.email || "").toLowerCase();
    return (action.approvers || []).some((a) => a.toLowerCase() === me);
  }

  /** The buttons a signed-in person may use on `action`; each is one API call. */
  function actionButtons(action, after) {
    const box = h("div", { class: "buttons" });
    const reason = h("input", { name: "reason", placeholder: "Reason (optional)", "aria-label": "Reason", maxlength: 1000 });
    const run = async (label, method, path, body) => {
      try {
        await api(method, path, body);
        toast(`${label}: done`);
        after();
      } catch (e) {
        toast(`${label}: ${errorText(e)}`, true);
      }
    };
    const id = action.action_id;
    if (mayDecide(action)) {
      box.append(
        reason,
        h("button", { type: "button", class: "primary", onclick: () => run("Approve", "POST", `/actions/${id}/approve`, { reason: reason.value || null, plan_digest: action.plan_digest }) }, "Approve"),
        h("button", { type: "button", class: "danger", onclick: () => run("Reject", "POST", `/actions/${id}/reject`, { reason: reason.value || null, plan_digest: action.plan_digest }) }, "Reject"),
      );
    }
    if (action.status === "manual" && (action.user_id === state.user || state.admin)) {
      box.append(
        h("button", { type: "button", class: "primary", onclick: () => run("Done", "POST", `/actions/${id}/done`, {}) }, "Done"),
        h("button", { type: "button", onclick: () => run("Dismiss", "POST", `/actions/${id}/dismiss`, {}) }, "Dismiss"),
      );
    }
    const cancellable = ["awaiting_approval", "pending", "queued", "waiting"].includes(action.status);
    if (cancellable && action.user_id === state.user) {
      box.append(h("button", { type: "button", onclick: () => run("Cancel", "POST", `/actions/${id}/cancel`, {}) }, "Cancel"));
    }
    return box.childElementCount ? box : null;
  }

  function card(action, after) {
    return h(
      "article",
      { class: "card", "data-action": action.action_id },
      h(
        "header",
        {},
        badge(action.tier),
        " ",
        h("a", { href: `#/action/${action.action_id}` }, h("strong", {}, action.action_type)),
        " ",
        statusBadge(action.status),
        h("span", { class: "muted" }, ` by ${action.user_id}, ${when(action.created_at)}`),
      ),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Risk"),
        h("dd", {}, action.risk_score ?? "not given"),
        h("dt", {}, "Confidence"),
        h("dd", {}, action.confidence ?? "not given"),
        action.hold_reason ? [h("dt", {}, "Held because"), h("dd", {}, action.hold_reason)] : null,
        action.reasons && action.reasons.length ? [h("dt", {}, "Reasons"), h("dd", {}, action.reasons.join(", "))] : null,
      ),
      quorum(action),
      preview(action),
      actionButtons(action, after),
    );
  }

  /** A list of actions from `path`, a page at a time through the API's cursors. */
  function pagedList(title, path, params, empty, render) {
    const list = h("div", { class: "list" });
    const more = h("button", { type: "button", hidden: true }, "More");
    const section = h("section", {}, h("h2", {}, title), list, more);
    let cursor = null;
    const load = async () => {
      try {
        const page = await api("GET", `${path}?${query({ ...params, cursor })}`);
        const items = page.actions || page.approvals || [];
        if (!cursor && !items.length && !page.next_cursor) list.append(h("p", { class: "muted" }, empty));
        for (const a of items) list.append(render(a));
        cursor = page.next_cursor || null;
        more.hidden = !cursor;
      } catch (e) {
        list.append(h("p", { class: "error" }, errorText(e)));
      }
    };
    more.addEventListener("click", load);
    load();
    return section;
  }

  // ------------------------------------------------------------------ pages

  function queuePage() {
    const reload = () => route();
    const listPath = state.admin ? "/admin/actions" : "/actions";
    const sections = [];
    if (state.email) sections.push(pagedList("Waiting for your decision", "/approvals", { status: "pending" }, "Nothing waits for your decision.", (a) => card(a, reload)));
    sections.push(
      pagedList("Awaiting approval", listPath, { status: "awaiting_approval" }, "No action awaits approval.", (a) => card(a, reload)),
      pagedList("Held", listPath, { status: "pending" }, "Nothing is held.", (a) => card(a, reload)),
      pagedList("Manual (tier 3)", listPath, { status: "manual" }, "No manual work.", (a) => card(a, reload)),
    );
    show(h("h1", {}, "Queue"), ...sections);
  }

  /** The view's parameters from the hash (`_` only makes the same view load again). */
  const hashParams = () => Object.fromEntries([...new URLSearchParams(location.hash.split("?")[1] || "")].filter(([k]) => !k.startsWith("_")));

  const STATUSES = ["", "received", "blocked", "awaiting_approval", "approved", "rejected", "expired", "cancelled", "manual", "done_manually", "dismissed", "pending", "queued", "executing", "waiting", "completed", "failed", "rolling_back", "rolled_back", "rollback_failed"];

  function historyPage() {
    const params = hashParams();
    const field = (label, input) => h("label", {}, label, input);
    const form = h(
      "form",
      { class: "filters", onsubmit: (e) => {
        e.preventDefault();
        const q = query(Object.fromEntries([...new FormData(form)].filter(([, v]) => v !== "")));
        location.hash = `#/history${q ? "?" + q : ""}`;
      } },
      field("Execution", h("select", { name: "execution" }, ["", "auto", "approved", "manual"].map((v) => h("option", { value: v, selected: params.execution === v }, v || "any")))),
      field("Status", h("select", { name: "status" }, STATUSES.map((v) => h("option", { value: v, selected: params.status === v }, v || "any")))),
      field("Type", h("input", { name: "action_type", value: params.action_type || "", placeholder: "send_email" })),
      state.admin ? field("User", h("input", { name: "user", value: params.user || "" })) : null,
      field("From", h("input", { type: "date", name: "from", value: params.from || "" })),
      field("To", h("input", { type: "date", name: "to", value: params.to || "" })),
      h("button", { type: "submit", class: "primary" }, "Filter"),
    );
    const path = state.admin ? "/admin/actions" : "/actions";
    const row = (a) =>
      h(
        "div",
        { class: "row" },
        badge(a.tier),
        h("a", { href: `#/action/${a.action_id}` }, a.action_type),
        statusBadge(a.status),
        h("span", { class: "muted" }, a.user_id),
        h("time", {}, when(a.created_at)),
      );
    show(h("h1", {}, "History"), form, pagedList("Actions", path, params, "No action matches.", row));
  }

  async function actionPage(id) {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) {
      show(h("h1", {}, "Action"), h("p", { class: "error" }, "That is not an action id."));
      return;
    }
    show(h("p", { class: "muted" }, "Loading…"));
    let action, trail;
    try {
      [action, trail] = await Promise.all([api("GET", `/actions/${id}`), api("GET", `/actions/${id}/audit`)]);
    } catch (e) {
      show(h("h1", {}, "Action"), h("p", { class: "error" }, errorText(e)));
      return;
    }
    const reload = () => actionPage(id);
    const rollback = async (partial) => {
      try {
        const r = await api("POST", `/actions/${id}/rollback`, partial ? { partial: true } : {});
        toast(`Roll back: ${r.status}${r.not_undone_steps && r.not_undone_steps.length ? ` (steps not undone: ${r.not_undone_steps.join(", ")})` : ""}`);
        reload();
      } catch (e) {
        const steps = e.body && e.body.irreversible_steps;
        if (steps && steps.length) {
          rollbackBox.replaceChildren(
            h("p", { class: "error" }, `Steps ${steps.join(", ")} cannot be undone (${errorText(e)}).`),
            h("button", { type: "button", class: "danger", onclick: () => rollback(true) }, "Roll back partial"),
          );
        } else toast(`Roll back: ${errorText(e)}`, true);
      }
    };
    const rollbackBox = h("div", { class: "buttons" });
    if (["completed", "failed"].includes(action.status) && (action.user_id === state.user || state.admin)) {
      rollbackBox.append(h("button", { type: "button", class: "danger", onclick: () => rollback(false) }, "Roll back"));
    }
    const steps = (action.steps || []).map((s) =>
      h(
        "tr",
        {},
        h("td", {}, s.index),
        h("td", {}, s.action_type || (s.wait_for ? `wait ${s.wait_for}` : "wait")),
        h("td", {}, s.state),
        h("td", {}, s.attempts),
        h("td", {}, s.result ? h("pre", {}, JSON.stringify(s.result, null, 2)) : ""),
        h("td", {}, s.error ? h("pre", {}, JSON.stringify(s.error, null, 2)) : ""),
      ),
    );
    const events = (trail.events || []).map((e) =>
      h("tr", {}, h("td", {}, e.seq), h("td", {}, when(e.at)), h("td", {}, e.actor), h("td", {}, `${e.from || "—"} → ${e.to}`), h("td", {}, e.reason)),
    );
    show(
      h("h1", {}, badge(action.tier), " ", action.action_type, " ", statusBadge(action.status)),
      h("p", { class: "muted" }, `${action.action_id} · requested by ${action.user_id} · ${when(action.created_at)}`),
      card(action, reload),
      rollbackBox,
      h("h2", {}, "Steps"),
      h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["#", "Step", "State", "Attempts", "Output", "Error"].map((c) => h("th", {}, c)))), h("tbody", {}, steps))),
      action.error ? [h("h2", {}, "Error"), h("pre", {}, JSON.stringify(action.error, null, 2))] : null,
      h("h2", {}, "Audit trail"),
      h("div", { class: "scroll" }, h("table", { class: "trail" }, h("thead", {}, h("tr", {}, ["#", "When", "Who", "Move", "Why"].map((c) => h("th", {}, c)))), h("tbody", {}, events))),
    );
  }

  const day = (d) => d.toISOString().slice(0, 10);

  async function statsPage() {
    const params = hashParams();
    const to = params.to || day(new Date());
    const from = params.from || day(new Date(Date.now() - 13 * 86400000));
    const form = h(
      "form",
      { class: "filters", onsubmit: (e) => {
        e.preventDefault();
        location.hash = `#/stats?${query({ from: form.elements.from.value, to: form.elements.to.value })}`;
      } },
      h("label", {}, "From", h("input", { type: "date", name: "from", value: from })),
      h("label", {}, "To", h("input", { type: "date", name: "to", value: to })),
      h("button", { type: "submit", class: "primary" }, "Show"),
    );
    show(h("h1", {}, "Stats"), form, h("p", { class: "muted" }, "Loading…"));
    let stats;
    try {
      stats = await api("GET", `/stats?${query({ from, to })}`);
    } catch (e) {
      show(h("h1", {}, "Stats"), form, h("p", { class: "error" }, errorText(e)));
      return;
    }
    const days = stats.days || [];
    const t = stats.today;
    const today = h(
      "dl",
      { class: "facts today" },
      h("dt", {}, "Auto-executed today"), h("dd", {}, t.auto_executed),
      h("dt", {}, "Approved and executed"), h("dd", {}, t.approved_executed),
      h("dt", {}, "Failed"), h("dd", {}, t.failed),
      h("dt", {}, "Rolled back"), h("dd", {}, t.rolled_back),
      h("dt", {}, "Success rate"), h("dd", {}, stats.success_rate === null ? "—" : `${Math.round(stats.success_rate * 100)}%`),
    );
    const chartBox = h("div", { class: "chart", id: "rates-chart" });
    const countBox = h("div", { class: "chart", id: "counts-chart" });
    const byType = Object.entries(stats.by_type || {}).map(([k, v]) =>
      h("tr", {}, h("td", {}, k), h("td", {}, v.executed), h("td", {}, v.succeeded), h("td", {}, v.failed), h("td", {}, v.rolled_back)),
    );
    show(
      h("h1", {}, "Stats"),
      form,
      h("h2", {}, "Today"),
      today,
      h("h2", {}, "Success and failure rates per day"),
      chartBox,
      h("h2", {}, "Executions and rollbacks per day"),
      countBox,
      h("h2", {}, `By type (${from} to ${to})`),
      h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["Type", "Executed", "Succeeded", "Failed", "Rolled back"].map((c) => h("th", {}, c)))), h("tbody", {}, byType))),
    );
    if (!window.uPlot || !days.length) return;
    const xs = days.map((d) => Date.parse(`${d.day}T00:00:00Z`) / 1000);
    const ok = days.map((d) => d.auto_executed + d.approved_executed);
    const total = days.map((d, i) => ok[i] + d.failed);
    const rate = (n, i) => (total[i] ? Math.round((1000 * n) / total[i]) / 10 : null);
    const width = Math.max(280, Math.min(900, main().clientWidth - 8));
    new window.uPlot(
      { width, height: 240, scales: { y: { range: [0, 100] } }, axes: [{}, { label: "%" }], series: [{}, { label: "success %", stroke: "#1a7f37", width: 2 }, { label: "failure %", stroke: "#cf222e", width: 2 }] },
      [xs, ok.map(rate), days.map((d, i) => rate(d.failed, i))],
      chartBox,
    );
    new window.uPlot(
      { width, height: 240, series: [{}, { label: "succeeded", stroke: "#1a7f37" }, { label: "failed", stroke: "#cf222e" }, { label: "rolled back", stroke: "#9a6700" }] },
      [xs, ok, days.map((d) => d.failed), days.map((d) => d.rolled_back)],
      countBox,
    );
  }

  async function settingsPage() {
    if (!state.admin) {
      show(h("h1", {}, "Settings"), h("p", { class: "error", role: "alert" }, "Settings are for administrators only."));
      return;
    }
    let status, breaker;
    try {
      [status, breaker] = await Promise.all([api("GET", "/admin/policy"), api("GET", "/admin/circuit-breaker")]);
    } catch (e) {
      show(h("h1", {}, "Settings"), h("p", { class: "error", role: "alert" }, errorText(e)));
      return;
    }
    const policy = status.policy;
    const auto = policy.auto_execution || {};
    const defaults = policy.defaults || {};
    const errorSpot = (path) => h("span", { class: "field-error", "data-error-for": path });
    const form = h("form", { id: "settings", class: "settings" });
    form.append(
      h("h2", {}, "Automatic execution"),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "enabled", checked: auto.enabled !== false }), " Automatic execution on (the kill switch)"),
      errorSpot("auto_execution.enabled"),
      h("label", {}, "Limit per hour", h("input", { type: "number", min: 0, name: "per_hour", value: auto.per_hour ?? "" })),
      errorSpot("auto_execution.per_hour"),
      h("label", {}, "Limit per day", h("input", { type: "number", min: 0, name: "per_day", value: auto.per_day ?? "" })),
      errorSpot("auto_execution.per_day"),
      h("label", {}, "Minimum confidence", h("input", { type: "number", min: 0, max: 1, step: "0.01", name: "min_confidence", value: defaults.min_confidence ?? "" })),
      errorSpot("defaults.min_confidence"),
      h("h2", {}, "Action types"),
    );
    const types = Object.entries(policy.types || {}).sort(([a], [b]) => a.localeCompare(b));
    const rows = types.map(([name, rule]) =>
      h(
        "tr",
        { "data-type": name },
        h("th", { scope: "row" }, name),
        h("td", {}, h("select", { name: `tier:${name}`, "aria-label": `${name} tier` }, [["1", "1 Auto"], ["2", "2 On approval"], ["3", "3 Manual"]].map(([v, l]) => h("option", { value: v, selected: String(rule.tier) === v }, l)))),
        h("td", {}, h("input", { type: "checkbox", name: `blocked:${name}`, "aria-label": `${name} blocked`, checked: !!rule.blocked })),
        h("td", {}, h("input", { type: "checkbox", name: `requires_approval:${name}`, "aria-label": `${name} requires approval`, checked: !!rule.requires_approval })),
        h("td", {}, errorSpot(`types.${name}`)),
      ),
    );
    form.append(
      h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, ["Type", "Tier", "Blocked", "Requires approval", ""].map((c) => h("th", {}, c)))), h("tbody", {}, rows))),
      h("p", { class: "error", id: "settings-error", role: "alert" }),
      h("button", { type: "submit", class: "primary" }, "Save policy"),
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      form.querySelectorAll("[data-error-for]").forEach((s) => (s.textContent = ""));
      form.querySelector("#settings-error").textContent = "";
      const next = structuredClone(policy);
      next.auto_execution = next.auto_execution || {};
      next.defaults = next.defaults || {};
      const f = form.elements;
      next.auto_execution.enabled = f.enabled.checked;
      const num = (v) => (v === "" ? undefined : Number(v));
      if (f.per_hour.value !== "") next.auto_execution.per_hour = num(f.per_hour.value);
      if (f.per_day.value !== "") next.auto_execution.per_day = num(f.per_day.value);
      if (f.min_confidence.value !== "") next.defaults.min_confidence = num(f.min_confidence.value);
      for (const [name] of types) {
        const rule = next.types[name];
        rule.tier = Number(f[`tier:${name}`].value);
        rule.blocked = f[`blocked:${name}`].checked;
        rule.requires_approval = f[`requires_approval:${name}`].checked;
      }
      try {
        await api("PUT", "/admin/policy", next);
        toast("Policy saved");
        settingsPage();
      } catch (err) {
        // "invalid policy: types.x.tier …": shown next to the field it names.
        const message = errorText(err);
        const named = (message.match(/(auto_execution\.[a-z_]+|defaults\.[a-z_]+|types\.[A-Za-z0-9_.:-]+?)(?=[ .:\[]|$)/) || [])[1];
        const spots = [...form.querySelectorAll("[data-error-for]")];
        const spot = named && spots.filter((s) => named.startsWith(s.dataset.errorFor)).sort((a, b) => b.dataset.errorFor.length - a.dataset.errorFor.length)[0];
        (spot || form.querySelector("#settings-error")).textContent = message;
      }
    });
    const breakerBox = h(
      "section",
      { id: "breaker" },
      h("h2", {}, "Circuit breaker"),
      h("p", {}, h("span", { class: `status s-breaker-${breaker.state}` }, breaker.state), breaker.reason ? ` — ${breaker.reason}` : "", breaker.opened_at ? ` (since ${when(breaker.opened_at)})` : ""),
      h("p", { class: "muted" }, `failure ratio ${breaker.failure_ratio} over ${breaker.sample}; ${breaker.consecutive_failures} failures in a row`),
      h("button", { type: "button", onclick: async () => {
        try {
          await api("POST", "/admin/circuit-breaker/reset", {});
          toast("Breaker reset");
          settingsPage();
        } catch (e) {
          toast(`Reset: ${errorText(e)}`, true);
        }
      } }, "Reset"),
      h("ul", { class: "events" }, (breaker.events || []).slice(-20).reverse().map((e) => h("li", {}, `${when(e.at)} ${e.actor}: ${e.reason}`))),
    );
    const historyBox = h(
      "section",
      {},
      h("h2", {}, "Policy changes"),
      h("p", { class: "muted" }, `In force: ${status.source}, version ${status.version}${status.updated_by ? `, by ${status.updated_by} at ${when(status.updated_at)}` : ""}`),
      h("ul", { class: "events" }, (status.events || []).slice(-20).reverse().map((e) => h("li", {}, `${when(e.at)} ${e.actor}: ${e.reason}`))),
    );
    show(h("h1", {}, "Settings"), form, breakerBox, historyBox);
  }

  // ------------------------------------------------------------------ routing

  function route() {
    if (!state.token) return signInPage();
    const [path] = location.hash.slice(1).split("?");
    document.querySelectorAll("#nav a").forEach((a) => a.setAttribute("aria-current", path.startsWith(`/${a.dataset.page}`) || (a.dataset.page === "history" && path.startsWith("/action/")) ? "page" : "false"));
    if (path.startsWith("/action/")) return actionPage(decodeURIComponent(path.slice("/action/".length)));
    switch (path) {
      case "/history":
        return historyPage();
      case "/stats":
        return statsPage();
      case "/settings":
        return settingsPage();
      default:
        return queuePage();
    }
  }

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", async () => {
    document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
    try {
      state.config = await (await fetch("/console/config.json")).json();
    } catch {
      state.config = { sign_in: "oidc", oidc: {} };
    }
    if (state.config.sign_in !== "dev" && (await finishOidc())) return;
    route();
  });
})();
