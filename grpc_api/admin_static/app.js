// The llmrec admin page: reads /v1/admin/* and /v1/users/*/recommendations with the token typed above
// (sent as "Authorization: Bearer"). Everything from the server is put into the page as text, never as
// HTML: dead letters carry whatever bytes a producer sent.
"use strict";

const TOKEN_KEY = "llmrec-admin-token";
const STATUS_EVERY_MS = 5000;
const DEAD_LETTERS_EVERY_MS = 10000;
// The last answer shown per user, so the next inspection can say what changed.
const previousAnswers = new Map();
// Replays done from this page, by dead letter ("partition:offset"), so a refresh keeps showing them.
const replays = new Map();

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function showError(id, error) {
  const box = $(id);
  if (!error) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = error.code ? `${error.code}: ${error.message}` : String(error);
  if (error.code === "UNAUTHENTICATED") box.textContent += " (enter a token above)";
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const reply = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await reply.json();
  } catch (_) {
    body = null;
  }
  if (!reply.ok) {
    throw new ApiError(reply.status, body?.code || `HTTP ${reply.status}`, body?.message || reply.statusText);
  }
  return body;
}

const fmtTime = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "-");
const fmtNum = (n, digits = 3) => (n === null || n === undefined ? "-" : Number(n).toFixed(digits));

function badge(ok) {
  if (ok === null || ok === undefined) return el("span", { class: "badge unknown" }, "UNKNOWN");
  return el("span", { class: ok ? "badge ok" : "badge down" }, ok ? "OK" : "DOWN");
}

function definitions(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { key: k } }, v)]));
}

// -- status ----------------------------------------------------------------------------------------------

async function loadStatus() {
  try {
    const s = await api("/v1/admin/status");
    showError("status-error", null);
    fill(
      $("components").tBodies[0],
      s.components.map((c) =>
        el("tr", { dataset: { component: c.name } }, el("td", {}, c.name), el("td", {}, badge(c.ok)),
          el("td", {}, c.detail), el("td", {}, c.latency_ms === null ? "-" : fmtNum(c.latency_ms, 1))),
      ),
    );
    const v = s.versions;
    definitions($("versions"), v ? [
      ["model_version", v.model_version],
      ["index", `${v.index_version} (${v.index_kind}, ${v.index_rows} rows, dim ${v.dim})`],
      ["items", `${v.servable_items} served of ${v.catalogue_items} in the catalogue, ${v.hidden_items} hidden`],
      ["ranker", `${v.ranker_version} (${v.ranker})`],
      ["process", `pid ${s.pid}, up since ${fmtTime(s.started_at)}`],
    ] : [["model_version", "warming up"], ["process", `pid ${s.pid}`]]);
    $("lag-group").textContent = `(group ${s.consumer_group})`;
    $("lag-total").textContent = s.lag_total === null ? "unknown (Kafka unreadable)" : String(s.lag_total);
    fill(
      $("lag").tBodies[0],
      s.lag.map((p) =>
        el("tr", { class: p.lag > 0 ? "behind" : "" }, el("td", {}, p.topic), el("td", {}, p.partition),
          el("td", {}, p.committed === null ? "none" : p.committed), el("td", {}, p.end), el("td", {}, p.lag)),
      ),
    );
    $("updated").textContent = `updated ${fmtTime(s.checked_at)}`;
  } catch (error) {
    showError("status-error", error);
  }
}

// -- dead letters ----------------------------------------------------------------------------------------

async function loadDeadLetters() {
  try {
    const answer = await api("/v1/admin/dead-letters?limit=50");
    showError("dl-error", null);
    $("dl-topic").textContent = `(${answer.topic})`;
    const rows = answer.letters.map((d) => {
      const id = `${d.partition}:${d.offset}`;
      const button = el("button", { type: "button", class: "replay" }, "Replay");
      const outcome = el("span", { class: "outcome" });
      button.disabled = !d.replayable || replays.has(id);
      if (replays.has(id)) {
        outcome.textContent = replays.get(id);
        outcome.className = "outcome done";
      }
      button.addEventListener("click", () => replay(d, id, button, outcome));
      const payload = d.payload === null ? "-" : el("details", {}, el("summary", {}, `${d.payload.length} chars`),
        el("pre", {}, d.payload + (d.payload_truncated ? "\n..." : "")));
      return el("tr", { dataset: { letter: id, reason: d.reason } },
        el("td", {}, fmtTime(d.failed_at)), el("td", { class: "reason" }, d.reason), el("td", {}, d.detail),
        el("td", {}, d.topic ? `${d.topic}[${d.source_partition}]@${d.source_offset}` : "-"),
        el("td", {}, d.key ?? "-"), el("td", {}, payload), el("td", {}, button, outcome));
    });
    fill($("dead-letters").tBodies[0], rows.length ? rows : [el("tr", {}, el("td", { colspan: 7 }, "none"))]);
  } catch (error) {
    showError("dl-error", error);
  }
}

async function replay(letter, id, button, outcome) {
  button.disabled = true;
  outcome.textContent = " replaying...";
  try {
    const done = await api(`/v1/admin/dead-letters/${letter.partition}/${letter.offset}/replay`, { method: "POST" });
    outcome.textContent = ` replayed to ${done.topic} at ${fmtTime(new Date().toISOString())}`;
    outcome.className = "outcome done";
    replays.set(id, outcome.textContent);
  } catch (error) {
    outcome.textContent = ` ${error.code}: ${error.message}`;
    outcome.className = "outcome failed";
    button.disabled = false;
  }
}

// -- user inspector --------------------------------------------------------------------------------------

function describeChanges(before, now) {
  if (!before) return "First look at this user: inspect again after new events to see what changed.";
  const parts = [];
  const p0 = before.profile, p1 = now.profile;
  for (const field of ["ratings", "reviews", "watch_events"]) {
    const a = p0 ? p0[field] : 0, b = p1 ? p1[field] : 0;
    if (a !== b) parts.push(`${field} ${a} → ${b}`);
  }
  const r0 = before.recommendations, r1 = now.recommendations;
  if (r0.strategy !== r1.strategy) parts.push(`strategy ${r0.strategy} → ${r1.strategy}`);
  if (r0.model_version !== r1.model_version) parts.push(`model ${r0.model_version} → ${r1.model_version}`);
  const old = new Set(r0.items.map((i) => i.item_id));
  const cur = new Set(r1.items.map((i) => i.item_id));
  const added = [...cur].filter((i) => !old.has(i)).length;
  const dropped = [...old].filter((i) => !cur.has(i)).length;
  if (added || dropped) parts.push(`${added} new, ${dropped} dropped recommendations`);
  if (now.seen.length !== before.seen.length) parts.push(`seen items ${before.seen.length} → ${now.seen.length}`);
  const since = `since ${fmtTime(before.at)}`;
  return parts.length ? `Changed ${since}: ${parts.join("; ")}.` : `Unchanged ${since}.`;
}

function changeCell(before, item, rank) {
  if (!before) return el("td", {}, "");
  const was = before.recommendations.items.findIndex((i) => i.item_id === item.item_id);
  if (was < 0) return el("td", { class: "new" }, "new");
  if (was === rank) return el("td", { class: "same" }, "=");
  return el("td", { class: was > rank ? "up" : "down" }, was > rank ? `▲${was - rank}` : `▼${rank - was}`);
}

async function inspectUser(event) {
  event?.preventDefault();
  const userId = $("user-id").value.trim();
  if (!userId) return;
  const k = Number($("user-k").value) || 10;
  try {
    const answer = await api(`/v1/admin/users/${encodeURIComponent(userId)}?k=${k}`);
    showError("user-error", null);
    const before = previousAnswers.get(userId);
    answer.at = new Date().toISOString();
    $("user-result").hidden = false;
    $("user-changes").textContent = describeChanges(before, answer);
    const p = answer.profile;
    definitions($("user-profile"), p ? [
      ["ratings", p.ratings], ["reviews", p.reviews], ["watch_events", p.watch_events],
      ["top genres", p.top_genres.map((g) => `${g.genre} ${(100 * g.weight).toFixed(0)}%`).join(", ") || "-"],
      ["last event", fmtTime(p.last_event_time)], ["updated", fmtTime(p.updated_at)],
    ] : [["profile", "none: no events applied for this user"]]);
    $("seen-count").textContent = `(${answer.seen.length})`;
    fill($("user-seen").tBodies[0], answer.seen.map((s) =>
      el("tr", {}, el("td", {}, s.item_id), el("td", {}, s.title), el("td", {}, s.event_types.join(", ")),
        el("td", {}, s.rating ?? "-"), el("td", {}, fmtNum(s.strength)), el("td", {}, fmtTime(s.event_time)))));
    const recs = answer.recommendations;
    $("user-strategy").textContent = `(${recs.strategy}, ${recs.model_version})`;
    fill($("user-recs").tBodies[0], recs.items.map((item, rank) =>
      el("tr", { dataset: { item: item.item_id } }, el("td", {}, rank + 1), changeCell(before, item, rank),
        el("td", {}, item.item_id), el("td", {}, item.title), el("td", {}, item.genres.join(", ")),
        el("td", {}, fmtNum(item.score)), el("td", {}, item.reason))));
    const dropped = before
      ? before.recommendations.items.filter((i) => !recs.items.some((j) => j.item_id === i.item_id))
      : [];
    $("user-dropped").replaceChildren(...(dropped.length
      ? [el("p", { class: "muted" }, "Dropped since last time: ", dropped.map((i) => `${i.title} (${i.item_id})`).join(", "))]
      : []));
    previousAnswers.set(userId, answer);
  } catch (error) {
    showError("user-error", error);
  }
}

// -- item search and Recommend ---------------------------------------------------------------------------

async function searchItems(event) {
  event.preventDefault();
  const q = $("item-q").value.trim();
  try {
    const answer = await api(`/v1/admin/items?q=${encodeURIComponent(q)}&limit=25`);
    showError("item-error", null);
    $("item-count").textContent = `${answer.total_matches} match(es), ${answer.items.length} shown`;
    fill($("items").tBodies[0], answer.items.map((i) =>
      el("tr", {}, el("td", {}, i.item_id), el("td", {}, i.title), el("td", {}, i.genres.join(", ")),
        el("td", {}, i.members), el("td", {}, i.hidden ? "hidden" : i.served ? "served" : "not in the index"))));
  } catch (error) {
    showError("item-error", error);
  }
}

async function tryRecommend(event) {
  event.preventDefault();
  const params = new URLSearchParams({ k: String(Number($("try-k").value) || 0) });
  for (const [field, name] of [["try-include", "include_genres"], ["try-exclude", "exclude_genres"]]) {
    for (const genre of $(field).value.split(",").map((g) => g.trim()).filter(Boolean)) params.append(name, genre);
  }
  if ($("try-seen").checked) params.set("include_seen", "true");
  const userId = $("try-user").value.trim();
  try {
    const answer = await api(`/v1/users/${encodeURIComponent(userId)}/recommendations?${params}`);
    showError("try-error", null);
    $("try-meta").textContent = `${answer.strategy}, ${answer.model_version}`;
    fill($("try-items").tBodies[0], answer.items.map((item, rank) =>
      el("tr", {}, el("td", {}, rank + 1), el("td", {}, item.item_id), el("td", {}, item.title),
        el("td", {}, item.genres.join(", ")), el("td", {}, fmtNum(item.score)), el("td", {}, item.reason))));
  } catch (error) {
    showError("try-error", error);
  }
}

// -- wiring ----------------------------------------------------------------------------------------------

function refreshAll() {
  loadStatus();
  loadDeadLetters();
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    refreshAll();
  });
  $("status-refresh").addEventListener("click", loadStatus);
  $("dl-refresh").addEventListener("click", loadDeadLetters);
  $("user-form").addEventListener("submit", inspectUser);
  $("item-form").addEventListener("submit", searchItems);
  $("try-form").addEventListener("submit", tryRecommend);
  setInterval(() => $("auto").checked && loadStatus(), STATUS_EVERY_MS);
  setInterval(() => $("auto").checked && loadDeadLetters(), DEAD_LETTERS_EVERY_MS);
  refreshAll();
});
