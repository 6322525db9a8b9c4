// subledger dashboard: a client of the public HTTP API, nothing more. No framework, no build
// step, no third-party code: the server compiles this file into its binary.
//
// Money arrives as exact JSON numbers (up to 8 decimals, up to 10^12). JavaScript numbers
// would round them, so every number is parsed as its source text and summed as BigInt units.

const PAGE_TITLE = document.title;
/** Most entries kept in the live activity list. */
const ACTIVITY_ITEMS_MAX = 50;
/** Most statement pages fetched for one chart (1,000 entries each). */
const CHART_PAGES_MAX = 10;
/** Longest wait between reconnection attempts of the event stream, in milliseconds. */
const RECONNECT_DELAY_MS_MAX = 10_000;
/** Least time between two refreshes after events, in milliseconds (a throttle, not a debounce:
 * a steady stream of events still refreshes the page). */
const REFRESH_DELAY_MS = 100;
/** Least time between two reloads of an open chart, in milliseconds (a chart may take ten
 * statement pages). */
const CHART_REFRESH_MS_MIN = 2_000;
/** The response header naming the secret a request authenticated with. */
const AUTHENTICATED_SECRET_HEADER = "subledger-authenticated-secret";
const SCALE = 100_000_000n;

const $ = (id) => document.getElementById(id);

const session = {
  mode: null, // "primary" | "operator"
  key: null, // the primary's key (signed in, or opened by the operator)
  auth: null, // the Authorization header value; only ever in memory
  stream: null, // AbortController of the live event stream
  streamSeq: 0, // last event received from the stream: where a reconnect resumes
  epoch: 0, // bumped at sign-out: answers to requests of an earlier session are dropped
  accounts: [], // the family's accounts from the last overview
  asOf: null, // ISO instant while showing a past state
  detail: null, // api key whose chart is open
  history: { cursors: [null], index: 0, next: null },
  primaries: { cursors: [null], index: 0, next: null },
  refreshTimer: null,
  refreshing: false,
  dirty: false,
  chartLoadedAt: 0,
  chartTimer: null,
};

// --- money ---------------------------------------------------------------------------------

/** Parses a decimal string such as "-12.5" into BigInt units of 10^-8, or null. */
function units(text) {
  if (text === null || text === undefined) return null;
  const match = /^(-?)(\d+)(?:\.(\d{1,8}))?$/.exec(String(text));
  if (!match) return null;
  const value = BigInt(match[2]) * SCALE + BigInt((match[3] || "").padEnd(8, "0"));
  return match[1] ? -value : value;
}

/** Formats units as a decimal with thousands separators and at least two decimals. */
function formatUnits(value) {
  if (value === null) return "–";
  const negative = value < 0n;
  const magnitude = negative ? -value : value;
  const whole = (magnitude / SCALE).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  let fraction = (magnitude % SCALE).toString().padStart(8, "0").replace(/0+$/, "");
  fraction = fraction.padEnd(2, "0");
  return `${negative ? "−" : ""}${whole}.${fraction}`;
}

const money = (text) => formatUnits(units(text));

// --- HTTP ------------------------------------------------------------------------------------

/** An API failure carrying the problem document's readable parts. */
class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title || `HTTP ${status}`;
    super(problem.detail ? `${title}: ${problem.detail}` : title);
    this.status = status;
    this.fields = problem.invalid_parameters || [];
  }
}

/** An answer that arrived after sign-out: dropped silently. */
class Stale extends Error {}

/** Whether JSON.parse hands revivers the source text (exact numbers). */
const EXACT_NUMBERS = (() => {
  try {
    return JSON.parse("[1.10]", (key, value, context) => (typeof value === "number" && context ? context.source : value))[0] === "1.10";
  } catch {
    return false;
  }
})();

/** JSON with every number kept as its exact source text. */
function parseExact(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && context && typeof context.source === "string" ? context.source : value,
  );
}

async function api(method, path, body) {
  return (await apiResponse(method, path, body)).document;
}

/** The answer's document and headers; throws `ApiError` for a problem, `Stale` after sign-out. */
async function apiResponse(method, path, body) {
  const epoch = session.epoch;
  const headers = { Authorization: session.auth, Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = body;
  }
  const response = await fetch(path, init);
  const text = await response.text();
  if (epoch !== session.epoch) throw new Stale("signed out meanwhile");
  let document = {};
  if (text) {
    try {
      document = parseExact(text);
    } catch {
      document = { title: `HTTP ${response.status}`, detail: "the server's answer was not JSON" };
    }
  }
  if (!response.ok) throw new ApiError(response.status, document);
  return { document, headers: response.headers };
}

/** A JSON object text where `amount` is written as the exact decimal the user typed. */
function jsonWithAmount(fields, amountText) {
  const text = JSON.stringify(fields);
  return `${text.slice(0, -1)}${text.length > 2 ? "," : ""}"amount":${amountText}}`;
}

// --- messages --------------------------------------------------------------------------------

function showError(error) {
  const text = error instanceof ApiError ? error.message : `Something went wrong: ${error.message}`;
  $("notice").className = "notice error";
  $("notice-text").textContent = text;
  const list = $("notice-fields");
  list.replaceChildren(
    ...(error.fields || []).map((field) => {
      const item = document.createElement("li");
      item.textContent = `${field.name}: ${field.reason}`;
      return item;
    }),
  );
  $("notice").hidden = false;
}

function showInfo(text) {
  $("notice").className = "notice info";
  $("notice-text").textContent = text;
  $("notice-fields").replaceChildren();
  $("notice").hidden = false;
}

function clearNotice() {
  $("notice").hidden = true;
}

/** Runs an action, showing its failure as a readable message instead of throwing. */
async function guarded(action) {
  try {
    return await action();
  } catch (error) {
    if (!(error instanceof Stale)) showError(error);
    return undefined;
  }
}

function setLive(text, state) {
  $("live").textContent = text;
  $("live").dataset.state = state;
}

// --- DOM helpers -----------------------------------------------------------------------------

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(text, label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = text;
  if (label) element.setAttribute("aria-label", label);
  element.addEventListener("click", onClick);
  return element;
}

function badge(text, kind) {
  const element = document.createElement("span");
  element.className = `badge ${kind}`;
  element.textContent = text;
  return element;
}

const when = (iso) => {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
};

/** The value of a datetime-local input as an RFC 3339 UTC instant, or null when empty. */
function instant(input) {
  if (!input.value) return null;
  const date = new Date(input.value);
  if (Number.isNaN(date.getTime())) throw new Error(`${input.labels[0].textContent} is not a date`);
  return date.toISOString();
}

/** A datetime-local value for a Date, in local time. */
function localValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function nameOf(key) {
  const account = session.accounts.find((candidate) => candidate.api_key === key);
  return account && account.name ? `${account.name} (${key})` : key;
}

/** An HTTP Basic header value for UTF-8 credentials. */
function basic(key, secret) {
  const bytes = new TextEncoder().encode(`${key}:${secret}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

// --- sign in / out ---------------------------------------------------------------------------

function modeChanged() {
  const operator = document.querySelector('input[name="mode"]:checked').value === "operator";
  $("primary-fields").hidden = operator;
  $("operator-fields").hidden = !operator;
}

async function signIn(event) {
  event.preventDefault();
  clearNotice();
  const operator = document.querySelector('input[name="mode"]:checked').value === "operator";
  if (operator) {
    const token = $("admin-token").value.trim();
    if (!token) return showError(new Error("enter the admin token"));
    session.mode = "operator";
    session.auth = `Bearer ${token}`;
    session.key = null;
    const ok = await guarded(() => loadPrimaries(true));
    if (ok === undefined) return resetSession();
    $("who").textContent = "Operator (read-only)";
    show("operator");
    startStream(session.primariesSeq);
  } else {
    const key = $("api-key").value.trim();
    const secret = $("api-secret").value;
    if (!key || !secret) return showError(new Error("enter the API key and the secret"));
    session.mode = "primary";
    session.auth = basic(key, secret);
    session.key = key;
    const ok = await guarded(() => openFamily(key));
    if (ok === undefined) return resetSession();
    $("who").textContent = `Primary ${key}`;
  }
  $("api-secret").value = "";
  $("admin-token").value = "";
  $("sign-out").hidden = false;
  $("main").focus();
}

function resetSession() {
  stopStream();
  clearTimeout(session.refreshTimer);
  clearTimeout(session.chartTimer);
  Object.assign(session, {
    mode: null, key: null, auth: null, streamSeq: 0, accounts: [], asOf: null, detail: null,
    history: { cursors: [null], index: 0, next: null },
    primaries: { cursors: [null], index: 0, next: null },
    refreshTimer: null, refreshing: false, dirty: false, chartLoadedAt: 0, chartTimer: null,
    epoch: session.epoch + 1,
  });
  $("who").textContent = "";
  $("sign-out").hidden = true;
  // Nothing of the previous session stays on the page.
  for (const table of ["accounts", "primaries", "transfers", "statement"]) $(table).tBodies[0].replaceChildren();
  for (const total of ["total-balance", "total-credit", "total-available", "total-accounts", "total-alerts"]) $(total).textContent = "–";
  $("chart").replaceChildren();
  $("as-of-banner").hidden = true;
  $("as-of-live").hidden = true;
  document.title = PAGE_TITLE;
  $("activity-list").replaceChildren();
  $("detail").hidden = true;
  setLive("Signed out", "off");
  show("sign-in");
}

function signOut() {
  resetSession();
  clearNotice();
  $("api-key").focus();
}

function show(section) {
  for (const id of ["sign-in", "operator", "family"]) $(id).hidden = id !== section;
}

// --- operator: primaries ---------------------------------------------------------------------

async function loadPrimaries(first) {
  const state = session.primaries;
  if (first) Object.assign(state, { cursors: [null], index: 0 });
  const cursor = state.cursors[state.index];
  const query = `page_size=25${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
  const page = await api("GET", `/admin/primaries?${query}`);
  session.primariesSeq = Number(page.seq);
  const focus = focusedControl($("primaries"));
  const rows = page._embedded.primaries.map((primary) => {
    const row = document.createElement("tr");
    if (Number(primary.low_balance_alerts) > 0) row.classList.add("alert");
    const status = document.createElement("td");
    if (primary.suspended) status.append(badge("Suspended", "warn"));
    if (Number(primary.low_balance_alerts) > 0) status.append(badge(`${primary.low_balance_alerts} low balance`, "alert"));
    if (!status.childNodes.length) status.append(badge("Active", "ok"));
    const open = document.createElement("td");
    open.append(button("Open", `Open family of ${primary.primary_account_api_key}`, async () => {
      if (await guarded(() => openFamily(primary.primary_account_api_key))) $("family-title").focus();
    }));
    row.append(
      cell(primary.primary_account_api_key, "mono"),
      cell(primary.name),
      cell(String(primary.subaccounts), "num"),
      cell(money(primary.balance), "num"),
      cell(money(primary.total_balance), "num"),
      cell(money(primary.total_credit_limit), "num"),
      status,
      open,
    );
    return row;
  });
  $("primaries").tBodies[0].replaceChildren(...rows);
  restoreFocus($("primaries"), focus);
  const next = page._links.next ? new URL(page._links.next.href, location.href).searchParams.get("cursor") : null;
  state.next = next;
  $("primaries-prev").disabled = state.index === 0;
  $("primaries-next").disabled = !next;
  $("primaries-page").textContent = `Page ${state.index + 1}`;
  return true;
}

async function primariesPage(step) {
  const state = session.primaries;
  if (step > 0 && state.next) {
    state.cursors[state.index + 1] = state.next;
    state.index += 1;
  } else if (step < 0 && state.index > 0) {
    state.index -= 1;
  }
  await guarded(() => loadPrimaries(false));
}

// --- family ----------------------------------------------------------------------------------

async function openFamily(key) {
  session.key = key;
  session.asOf = null;
  session.detail = null;
  Object.assign(session.history, { cursors: [null], index: 0, next: null });
  const overview = await loadOverview();
  const readOnly = session.mode === "operator";
  $("actions").hidden = readOnly;
  $("back-to-primaries").hidden = !readOnly;
  $("detail").hidden = true;
  $("activity-list").replaceChildren();
  fillSelectors();
  await loadHistory();
  show("family");
  // The stream starts where the overview's consistent read ended: nothing missed, nothing twice.
  if (session.mode === "primary") startStream(Number(overview.seq));
  return true;
}

async function loadOverview() {
  const query = session.asOf ? `?at=${encodeURIComponent(session.asOf)}` : "";
  const overview = await api("GET", `/accounts/${encodeURIComponent(session.key)}/overview${query}`);
  if (!session.asOf) session.accounts = overview.accounts;
  renderOverview(overview);
  return overview;
}

/** The aria-label of the focused button inside `container`, to find it again after a redraw. */
function focusedControl(container) {
  const focused = document.activeElement;
  return focused && container.contains(focused) ? focused.getAttribute("aria-label") : null;
}

/** Puts the focus back on the redrawn button with that label, if there still is one. */
function restoreFocus(container, label) {
  if (!label) return;
  const again = container.querySelector(`button[aria-label="${CSS.escape(label)}"]`);
  if (again) again.focus();
}

function renderOverview(overview) {
  const past = overview.as_of === "past";
  const primary = overview.accounts[0];
  $("family-title").textContent = `${primary.name || "Primary"} · ${primary.api_key}`;
  $("total-balance").textContent = money(overview.total_balance);
  $("total-credit").textContent = money(overview.total_credit_limit);
  $("total-available").textContent = money(primary.available);
  $("total-accounts").textContent = String(overview.accounts.length);
  $("total-alerts").textContent = past ? "–" : String(overview.low_balance_alerts);
  $("totals").classList.toggle("has-alerts", !past && Number(overview.low_balance_alerts) > 0);
  const readOnly = session.mode === "operator" || past;
  const rows = overview.accounts.map((account) => accountRow(account, readOnly));
  const focus = focusedControl($("accounts"));
  $("accounts").tBodies[0].replaceChildren(...rows);
  restoreFocus($("accounts"), focus);
  document.title = !past && Number(overview.low_balance_alerts) > 0 ? `(${overview.low_balance_alerts}) ${PAGE_TITLE}` : PAGE_TITLE;
}

function accountRow(account, readOnly) {
  const row = document.createElement("tr");
  row.dataset.key = account.api_key;
  const isPrimary = !account.primary_account_api_key;
  const shared = account.use_primary_account_balance;
  const status = document.createElement("td");
  if (isPrimary) status.append(badge("Primary", "info"));
  if (account.closed) status.append(badge("Closed", "muted"));
  else if (account.suspended) status.append(badge("Suspended", "warn"));
  else status.append(badge("Active", "ok"));
  if (shared) status.append(badge("Shares primary balance", "muted"));
  if (account.low_balance) {
    row.classList.add("alert");
    status.append(badge(`Low balance (below ${money(account.low_balance_threshold)})`, "alert"));
  }
  const actions = document.createElement("td");
  actions.className = "row-actions";
  const label = account.name || account.api_key;
  actions.append(button("Chart", `Balance chart of ${label}`, () => openDetail(account.api_key)));
  if (!readOnly && !account.closed) {
    if (!isPrimary) {
      const suspend = !account.suspended;
      actions.append(
        button(suspend ? "Suspend" : "Reactivate", `${suspend ? "Suspend" : "Reactivate"} ${label}`, () =>
          guarded(() => setSuspended(account.api_key, suspend)),
        ),
      );
    }
    actions.append(button("Rotate secret", `Rotate the secret of ${label}`, () => guarded(() => rotateSecret(account.api_key))));
  }
  row.append(
    cell(account.api_key, "mono"),
    cell(account.name || "—"),
    cell(shared ? "shared" : money(account.balance), "num"),
    cell(shared ? "shared" : money(account.credit_limit), "num"),
    cell(shared ? "shared" : money(account.available), "num"),
    status,
    actions,
  );
  // Narrow screens show each row as a card: every cell carries its column's name.
  const headings = [...$("accounts").tHead.rows[0].cells].map((heading) => heading.textContent);
  [...row.cells].forEach((td, index) => {
    td.dataset.label = headings[index];
  });
  return row;
}

/** Fills the account pickers of the forms, keeping what was chosen. */
function fillSelectors() {
  const open = session.accounts.filter((account) => !account.closed);
  const fill = (select, accounts, first) => {
    const chosen = select.value;
    const options = accounts.map((account) => new Option(nameOf(account.api_key), account.api_key));
    if (first) options.unshift(first);
    select.replaceChildren(...options);
    if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
  };
  fill($("transfer-from"), open);
  fill($("transfer-to"), open);
  if ($("transfer-from").value === $("transfer-to").value && $("transfer-to").options.length > 1) {
    $("transfer-to").selectedIndex = 1;
  }
  fill($("history-sub"), session.accounts.slice(1), new Option("All", ""));
}

// --- point in time ---------------------------------------------------------------------------

async function showAsOf(event) {
  event.preventDefault();
  clearNotice();
  await guarded(async () => {
    const at = instant($("as-of"));
    if (!at) throw new Error("choose a date and time");
    session.asOf = at;
    await loadOverview();
    $("as-of-banner").textContent = `Showing the state at ${new Date(at).toLocaleString()}. Live updates are paused for this table.`;
    $("as-of-banner").hidden = false;
    $("as-of-live").hidden = false;
  });
}

async function backToLive() {
  session.asOf = null;
  $("as-of-banner").hidden = true;
  $("as-of-live").hidden = true;
  await guarded(loadOverview);
  $("as-of").focus();
}

// --- actions ---------------------------------------------------------------------------------

async function transfer(event) {
  event.preventDefault();
  clearNotice();
  const kind = $("transfer-kind").value;
  const amount = $("transfer-amount").value.trim();
  if (!/^(0|[1-9]\d{0,12})(\.\d{1,8})?$/.test(amount)) {
    return showError(new Error("the amount must be a positive decimal such as 10 or 10.25 (at most 8 decimals)"));
  }
  const fields = { from: $("transfer-from").value, to: $("transfer-to").value };
  const reference = $("transfer-reference").value.trim();
  if (reference) fields.reference = reference;
  const collection = kind === "credit" ? "credit-transfers" : "balance-transfers";
  const done = await guarded(() =>
    api("POST", `/accounts/${encodeURIComponent(session.key)}/${collection}`, jsonWithAmount(fields, amount)),
  );
  if (done) {
    showInfo(`Transferred ${money(done.amount)} ${kind === "credit" ? "credit" : "balance"} from ${nameOf(done.from)} to ${nameOf(done.to)}.`);
    $("transfer-amount").value = "";
    $("transfer-reference").value = "";
    scheduleRefresh();
  }
}

async function createSubaccount(event) {
  event.preventDefault();
  clearNotice();
  const body = { name: $("create-name").value.trim(), use_primary_account_balance: !$("create-own").checked };
  const created = await guarded(() =>
    api("POST", `/accounts/${encodeURIComponent(session.key)}/subaccounts`, JSON.stringify(body)),
  );
  if (created) {
    $("create-name").value = "";
    $("create-own").checked = false;
    showSecret(`Subaccount ${created.name || ""} ${created.api_key} was created. Its secret:`, created.secret);
    scheduleRefresh();
  }
}

async function setSuspended(key, suspended) {
  clearNotice();
  await api("PATCH", `/accounts/${encodeURIComponent(session.key)}/subaccounts/${encodeURIComponent(key)}`, JSON.stringify({ suspended }));
  showInfo(`${nameOf(key)} is ${suspended ? "suspended" : "active again"}.`);
  await loadOverview();
  const row = $("accounts").querySelector(`tr[data-key="${CSS.escape(key)}"] .row-actions button:nth-child(2)`);
  if (row) row.focus();
}

/** A random secret that meets the API's rules: 20 characters with lower, upper and digits. */
function generateSecret() {
  const sets = ["abcdefghijkmnopqrstuvwxyz", "ABCDEFGHJKLMNPQRSTUVWXYZ", "23456789"];
  const random = new Uint32Array(20);
  crypto.getRandomValues(random);
  return Array.from(random, (value, index) => {
    const set = sets[index % 3];
    return set[value % set.length];
  }).join("");
}

/** Adds a fresh secret, then revokes every older one, so only the new secret works. */
async function rotateSecret(key) {
  clearNotice();
  const base = `/accounts/${encodeURIComponent(key)}/secrets`;
  const before = await apiResponse("GET", base);
  // The server names the secret this page signed in with (only for the page's own account):
  // never revoke that one before the page holds the new secret.
  const inUse = before.headers.get(AUTHENTICATED_SECRET_HEADER);
  let existing = before.document._embedded.secrets.map((secret) => secret.id);
  const plaintext = generateSecret();
  // At most two secrets may exist: make room first by revoking the oldest one not in use.
  if (existing.length >= 2) {
    const spare = existing.find((id) => id !== inUse);
    await api("DELETE", `${base}/${encodeURIComponent(spare)}`);
    existing = existing.filter((id) => id !== spare);
  }
  const created = await api("POST", base, JSON.stringify({ secret: plaintext }));
  const ownKey = session.mode === "primary" && key === session.key;
  if (ownKey) session.auth = basic(key, plaintext);
  for (const id of existing) {
    if (id !== created.id) await api("DELETE", `${base}/${encodeURIComponent(id)}`);
  }
  showSecret(`The secret of ${nameOf(key)} was rotated; older secrets are refused from now on.${ownKey ? " This page now uses the new one." : ""}`, plaintext);
}

function showSecret(intro, secret) {
  $("secret-intro").textContent = intro;
  $("secret-value").textContent = secret;
  $("secret-dialog").showModal();
  $("secret-done").focus();
}

function closeSecret() {
  $("secret-value").textContent = "";
  $("secret-dialog").close();
}

// --- history ---------------------------------------------------------------------------------

async function loadHistory() {
  const state = session.history;
  const params = new URLSearchParams();
  const from = instant($("history-from"));
  const to = instant($("history-to"));
  if (from) params.set("start_date", from);
  if (to) params.set("end_date", to);
  if ($("history-sub").value) params.set("subaccount", $("history-sub").value);
  params.set("page_size", $("history-size").value);
  const cursor = state.cursors[state.index];
  if (cursor) params.set("cursor", cursor);
  const kind = $("history-kind").value;
  const collection = kind === "credit" ? "credit-transfers" : "balance-transfers";
  const page = await api("GET", `/accounts/${encodeURIComponent(session.key)}/${collection}?${params}`);
  const items = page._embedded[kind === "credit" ? "credit_transfers" : "balance_transfers"];
  const rows = items.map((item) => {
    const row = document.createElement("tr");
    row.append(cell(when(item.created_at)), cell(nameOf(item.from)), cell(nameOf(item.to)), cell(money(item.amount), "num"), cell(item.reference || ""));
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    const empty = cell("No transfers match these filters.");
    empty.colSpan = 5;
    row.append(empty);
    rows.push(row);
  }
  $("transfers").tBodies[0].replaceChildren(...rows);
  state.next = page._links.next ? new URL(page._links.next.href, location.href).searchParams.get("cursor") : null;
  $("history-prev").disabled = state.index === 0;
  $("history-next").disabled = !state.next;
  $("history-page").textContent = `Page ${state.index + 1}`;
}

async function filterHistory(event) {
  event.preventDefault();
  clearNotice();
  Object.assign(session.history, { cursors: [null], index: 0, next: null });
  await guarded(loadHistory);
}

async function historyPage(step) {
  const state = session.history;
  if (step > 0 && state.next) {
    state.cursors[state.index + 1] = state.next;
    state.index += 1;
  } else if (step < 0 && state.index > 0) {
    state.index -= 1;
  }
  await guarded(loadHistory);
}

// --- chart -----------------------------------------------------------------------------------

async function openDetail(key) {
  session.detail = key;
  $("detail").hidden = false;
  await guarded(loadDetail);
  $("detail-title").focus();
}

function closeDetail() {
  const key = session.detail;
  session.detail = null;
  $("detail").hidden = true;
  // Back to the Chart button that opened it.
  const opener = $("accounts").querySelector(`tr[data-key="${CSS.escape(key || "")}"] button`);
  if (opener) opener.focus();
}

async function loadDetail() {
  const key = session.detail;
  if (!key) return;
  session.chartLoadedAt = Date.now();
  const range = $("chart-range").value;
  // Newest first, so that a long period keeps its latest changes when the page limit cuts it.
  const params = new URLSearchParams({ page_size: "1000", order: "newest" });
  if (range !== "all") params.set("start_date", new Date(Date.now() - Number(range) * 1000).toISOString());
  const entries = [];
  let truncated = false;
  for (let page = 0; ; page += 1) {
    const answer = await api("GET", `/accounts/${encodeURIComponent(key)}/statement?${params}`);
    entries.push(...answer._embedded.entries);
    if (!answer._links.next) break;
    if (page + 1 >= CHART_PAGES_MAX) {
      truncated = true;
      break;
    }
    params.set("cursor", new URL(answer._links.next.href, location.href).searchParams.get("cursor"));
  }
  entries.reverse();
  const account = session.accounts.find((candidate) => candidate.api_key === key);
  $("detail-title").textContent = `Balance over time · ${nameOf(key)}`;
  $("detail-title").tabIndex = -1;
  drawChart(entries, account, truncated);
  $("statement-summary").textContent = "Statement entries (the latest 50)";
  const rows = entries.slice(-50).reverse().map((entry) => {
    const row = document.createElement("tr");
    row.append(cell(when(entry.created_at)), cell(entry.type.replaceAll("_", " ")), cell(money(entry.balance_change), "num"), cell(money(entry.balance), "num"), cell(money(entry.credit_limit), "num"), cell(entry.reference || ""));
    return row;
  });
  $("statement").tBodies[0].replaceChildren(...rows);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [attribute, value] of Object.entries(attributes)) element.setAttribute(attribute, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/** A step chart of the balance after each statement entry, with the low-balance threshold. */
function drawChart(entries, account, truncated) {
  const box = $("chart");
  if (account && account.use_primary_account_balance) {
    box.textContent = "This subaccount uses its primary's balance: open the primary's chart.";
    return;
  }
  if (!entries.length) {
    box.textContent = "No balance changes in this period.";
    return;
  }
  const width = 640;
  const height = 240;
  const pad = { left: 90, right: 16, top: 16, bottom: 36 };
  const points = entries.map((entry) => ({ t: new Date(entry.created_at).getTime(), v: units(entry.balance) }));
  // The balance holds until now.
  points.push({ t: Math.max(Date.now(), points[points.length - 1].t), v: points[points.length - 1].v });
  const threshold = account ? units(account.low_balance_threshold) : null;
  let low = points.reduce((min, point) => (point.v < min ? point.v : min), points[0].v);
  let high = points.reduce((max, point) => (point.v > max ? point.v : max), points[0].v);
  if (threshold !== null) {
    if (threshold < low) low = threshold;
    if (threshold > high) high = threshold;
  }
  if (low === high) {
    low -= SCALE;
    high += SCALE;
  }
  const t0 = points[0].t;
  const t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  // BigInt to plot space: the ratio is taken in BigInt with 1e6 resolution, then scaled.
  const y = (v) => pad.top + (Number(((high - v) * 1_000_000n) / (high - low)) / 1_000_000) * (height - pad.top - pad.bottom);
  let path = `M${x(points[0].t).toFixed(1)},${y(points[0].v).toFixed(1)}`;
  for (let index = 1; index < points.length; index += 1) {
    path += ` H${x(points[index].t).toFixed(1)} V${y(points[index].v).toFixed(1)}`;
  }
  const last = formatUnits(points[points.length - 1].v);
  const summary = `${entries.length} changes from ${new Date(t0).toLocaleString()}; lowest ${formatUnits(low)}, highest ${formatUnits(high)}, now ${last}.`;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title chart-desc", class: "chart-svg" });
  chart.append(svg("title", { id: "chart-title" }, `Balance of ${nameOf(account ? account.api_key : session.detail)}`));
  chart.append(svg("desc", { id: "chart-desc" }, summary));
  chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom, class: "axis" }));
  chart.append(svg("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom, class: "axis" }));
  chart.append(svg("text", { x: pad.left - 6, y: pad.top + 4, "text-anchor": "end", class: "tick" }, formatUnits(high)));
  chart.append(svg("text", { x: pad.left - 6, y: height - pad.bottom, "text-anchor": "end", class: "tick" }, formatUnits(low)));
  chart.append(svg("text", { x: pad.left, y: height - 10, class: "tick" }, new Date(t0).toLocaleString()));
  chart.append(svg("text", { x: width - pad.right, y: height - 10, "text-anchor": "end", class: "tick" }, new Date(t1).toLocaleString()));
  if (low < 0n && high > 0n) {
    chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(0n), y2: y(0n), class: "zero" }));
  }
  if (threshold !== null) {
    chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(threshold), y2: y(threshold), class: "threshold" }));
    chart.append(svg("text", { x: width - pad.right, y: y(threshold) - 4, "text-anchor": "end", class: "tick threshold-label" }, `alert below ${formatUnits(threshold)}`));
  }
  chart.append(svg("path", { d: path, class: "line" }));
  const note = document.createElement("p");
  note.className = "chart-note";
  note.textContent = summary + (truncated ? ` Only the latest ${CHART_PAGES_MAX * 1000} changes of this period are drawn; earlier ones are left out.` : "");
  box.replaceChildren(chart, note);
}

// --- live updates ----------------------------------------------------------------------------

function stopStream() {
  if (session.stream) session.stream.abort();
  session.stream = null;
}

/** Streams events after `since`, reconnecting with backoff and resuming after the last event
 * received. */
function startStream(since) {
  stopStream();
  session.streamSeq = since;
  const controller = new AbortController();
  session.stream = controller;
  const path = session.mode === "operator" ? "/admin/events" : `/accounts/${encodeURIComponent(session.key)}/events`;
  let delay = 500;
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        setLive("Connecting…", "connecting");
        const response = await fetch(`${path}?since=${session.streamSeq}`, {
          headers: { Authorization: session.auth, Accept: "text/event-stream" },
          signal: controller.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          const problem = await response.text().then((text) => (text ? parseExact(text) : {})).catch(() => ({}));
          throw new ApiError(response.status, problem);
        }
        setLive("Live", "live");
        // The backoff resets only once events flow: a stream that the server keeps ending
        // at once must not be reopened twice a second forever.
        await readEvents(response.body, controller.signal, () => {
          delay = 500;
        });
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          setLive("Stopped: signed out by the server", "off");
          showError(error);
          return;
        }
      }
      if (controller.signal.aborted) return;
      setLive(`Reconnecting in ${Math.round(delay / 1000)} s…`, "connecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, RECONNECT_DELAY_MS_MAX);
    }
  };
  run();
}

async function readEvents(body, signal, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (handleBlock(block)) onEvent();
    }
  }
}

/** Handles one SSE block; true when it carried a new event. */
function handleBlock(block) {
  let kind = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trimStart();
  }
  if (!data) return false;
  if (kind === "error") {
    // The server ended the stream (for instance: the secret it was opened with was rotated).
    // The loop reconnects with the current credentials and backs off; a refusal then is
    // reported as a sign-out.
    setLive(`Reconnecting (the server ended the stream: ${data})`, "connecting");
    return false;
  }
  let notice;
  try {
    notice = parseExact(data);
  } catch {
    return false;
  }
  const seq = Number(notice.seq);
  if (seq <= session.streamSeq) return false;
  session.streamSeq = seq;
  if (session.mode === "primary") addActivity(notice);
  if (notice.type === "low_balance_alert" && session.mode === "primary") {
    const event = notice.event || {};
    showInfo(`Low balance: ${nameOf(event.api_key)} has ${money(event.available)} available, below the alert threshold of ${money(event.threshold)}.`);
    $("notice").className = "notice alert";
  }
  scheduleRefresh();
  return true;
}

function describe(notice) {
  const event = notice.event || {};
  const amount = event.amount !== undefined ? ` ${money(event.amount)}` : "";
  const parts = [notice.type.replaceAll("_", " ") + amount];
  if (event.from && event.to) parts.push(`from ${nameOf(event.from)} to ${nameOf(event.to)}`);
  else if (event.api_key) parts.push(nameOf(event.api_key));
  if (event.reference) parts.push(`“${event.reference}”`);
  return parts.join(" · ");
}

function addActivity(notice) {
  const item = document.createElement("li");
  if (notice.type === "low_balance_alert") item.className = "alert";
  const time = document.createElement("time");
  time.dateTime = notice.created_at;
  time.textContent = new Date(notice.created_at).toLocaleTimeString();
  item.append(time, ` #${notice.seq} `, describe(notice));
  const list = $("activity-list");
  list.prepend(item);
  while (list.children.length > ACTIVITY_ITEMS_MAX) list.lastElementChild.remove();
}

/** Refreshes what events may have changed: at most one refresh at a time, at most one per
 * REFRESH_DELAY_MS, and always one after the last event. */
function scheduleRefresh() {
  session.dirty = true;
  if (session.refreshTimer !== null || session.refreshing) return;
  session.refreshTimer = setTimeout(runRefresh, REFRESH_DELAY_MS);
}

async function runRefresh() {
  session.refreshTimer = null;
  if (!session.dirty) return;
  session.dirty = false;
  session.refreshing = true;
  const epoch = session.epoch;
  try {
    await refresh();
  } finally {
    if (epoch === session.epoch) {
      session.refreshing = false;
      if (session.dirty) scheduleRefresh();
    }
  }
}

async function refresh() {
  if (!session.auth) return;
  if (session.mode === "operator" && !$("operator").hidden) {
    await guarded(() => loadPrimaries(false));
    return;
  }
  if ($("family").hidden) return;
  if (session.asOf) {
    // The past does not change, but names and pickers follow the live family.
    const overview = await guarded(() => api("GET", `/accounts/${encodeURIComponent(session.key)}/overview`));
    if (overview) session.accounts = overview.accounts;
  } else {
    await guarded(loadOverview);
  }
  fillSelectors();
  if (session.history.index === 0) await guarded(loadHistory);
  if (session.detail) {
    const wait = session.chartLoadedAt + CHART_REFRESH_MS_MIN - Date.now();
    if (wait <= 0) {
      await guarded(loadDetail);
    } else if (session.chartTimer === null) {
      // Too soon to reload the chart again: do it once the interval is over, so the chart
      // never stays behind the last change.
      const epoch = session.epoch;
      session.chartTimer = setTimeout(() => {
        session.chartTimer = null;
        if (epoch === session.epoch && session.detail) guarded(loadDetail);
      }, wait);
    }
  }
}

// --- wiring ----------------------------------------------------------------------------------

function wire() {
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", modeChanged);
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("notice-close").addEventListener("click", clearNotice);
  $("primaries-prev").addEventListener("click", () => primariesPage(-1));
  $("primaries-next").addEventListener("click", () => primariesPage(1));
  $("back-to-primaries").addEventListener("click", async () => {
    session.key = null;
    session.detail = null;
    show("operator");
    $("operator-title").focus();
    await guarded(() => loadPrimaries(false));
  });
  $("as-of-form").addEventListener("submit", showAsOf);
  $("as-of-live").addEventListener("click", backToLive);
  $("transfer-form").addEventListener("submit", transfer);
  $("create-form").addEventListener("submit", createSubaccount);
  $("history-form").addEventListener("submit", filterHistory);
  $("history-prev").addEventListener("click", () => historyPage(-1));
  $("history-next").addEventListener("click", () => historyPage(1));
  $("chart-range").addEventListener("change", () => guarded(loadDetail));
  $("detail-close").addEventListener("click", closeDetail);
  $("secret-done").addEventListener("click", closeSecret);
  $("secret-dialog").addEventListener("close", () => {
    $("secret-value").textContent = "";
  });
  $("as-of").value = localValue(new Date());
  modeChanged();
  resetSession();
  for (const heading of ["family-title", "operator-title", "detail-title"]) $(heading).tabIndex = -1;
  if (!EXACT_NUMBERS) {
    showError(new Error("this browser cannot read amounts exactly (JSON.parse source text); use a current Chromium, Firefox or Safari"));
  }
  $("api-key").focus();
}

wire();
