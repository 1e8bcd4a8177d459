"use strict";
const $ = (id) => document.getElementById(id);
let searchPage = 1;

function text(tag, content, className) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (className) node.className = className;
  return node;
}

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

function fail(error) { $("error").textContent = String(error.message || error); }

function price(value) { return value === null || value === undefined ? "" : value.toFixed(2); }

async function loadModel() {
  const model = await api("/v1/model");
  $("model-version").textContent = model.version;
  $("model-created").textContent = model.created_at || "";
  const evaluation = model.evaluation || {};
  $("model-k").textContent = evaluation.k || 10;
  $("model-ndcg").textContent = evaluation.value ? evaluation.value.toFixed(4) : "not evaluated";
  document.body.dataset.loaded = "model";
}

async function search(page) {
  searchPage = page;
  const query = $("search-input").value.trim();
  if (!query) return;
  const result = await api(`/v1/catalog/search?q=${encodeURIComponent(query)}&page=${page}&per_page=20`);
  if (page === 1) $("search-results").replaceChildren();
  $("search-summary").textContent = `${result.total} items match "${result.query}"`;
  for (const item of result.items) {
    const entry = text("li", `${item.name || "(no name)"} (${item.item_id}) ${price(item.price)}`);
    entry.dataset.itemId = item.item_id;
    entry.addEventListener("click", () => showItem(item.item_id).catch(fail));
    $("search-results").append(entry);
  }
  $("search-more").hidden = page * result.per_page >= result.total;
  document.body.dataset.searched = String(result.total);
}

function fillTable(table, body, countLabel) {
  table.replaceChildren();
  const head = document.createElement("tr");
  for (const label of ["item", "name", "price", "score", countLabel]) head.append(text("th", label));
  table.append(head);
  for (const entry of body.recommendations) {
    const row = document.createElement("tr");
    row.dataset.itemId = entry.item_id;
    row.append(text("td", entry.item_id), text("td", entry.name), text("td", price(entry.price), "num"),
               text("td", entry.score === null ? "(popular)" : entry.score.toFixed(3), "num"),
               text("td", entry.bought_both === undefined ? "" : String(entry.bought_both), "num"));
    table.append(row);
  }
}

async function showItem(itemId) {
  const [also, together] = await Promise.all([
    api(`/v1/items/${encodeURIComponent(itemId)}/also-bought?k=10`),
    api(`/v1/items/${encodeURIComponent(itemId)}/bought-together?k=10`),
  ]);
  $("item-section").hidden = false;
  $("item-title").textContent = `${also.item.name || itemId} (${itemId})`;
  fillTable($("also-bought"), also, "customers who bought both");
  fillTable($("bought-together"), together, "orders with both");
}

function listEntry(entry) {
  const node = text("li", `${entry.name || entry.item_id} (${entry.item_id}) ${price(entry.price)}`);
  node.dataset.itemId = entry.item_id;
  if (entry.because) node.append(text("div", entry.because.text || `because of ${entry.because.name || entry.because.item_id}`, "because"));
  return node;
}

async function showCustomer(userId) {
  const id = encodeURIComponent(userId);
  const [history, personal, page, alerts, again] = await Promise.all([
    api(`/v1/users/${id}/history`), api(`/v1/users/${id}/recommendations?k=10`), api(`/v1/users/${id}/page-you-made?k=10`),
    api(`/v1/users/${id}/alerts`), api(`/v1/users/${id}/buy-again?k=10`),
  ]);
  $("customer-section").hidden = false;
  $("history").replaceChildren(...history.purchases.map(listEntry));
  if (!history.purchases.length) $("history").append(text("li", "no purchases in this model"));
  $("personal-strategy").textContent = `strategy: ${personal.strategy}` + (personal.fallback_reason ? ` (${personal.fallback_reason})` : "");
  $("personal").replaceChildren(...personal.recommendations.map(listEntry));
  $("buy-again").replaceChildren(...again.recommendations.map((entry) => {
    const node = listEntry(entry);
    const every = entry.usually_every_days ? `, usually every ${Math.round(entry.usually_every_days)} days` : "";
    node.append(text("div", `last bought ${entry.last_bought}, ${entry.times_bought} times${every}`, "because"));
    return node;
  }));
  if (!again.recommendations.length) $("buy-again").append(text("li", `nothing to buy again (${again.fallback_reason || ""})`));
  $("greeting").textContent = page.greeting || "";
  const groups = $("page-you-made");
  groups.replaceChildren();
  for (const group of page.groups) {
    const block = document.createElement("div");
    block.className = "group";
    block.append(text("h4", group.because.text));
    const list = document.createElement("ul");
    list.append(...group.recommendations.map(listEntry));
    block.append(list);
    groups.append(block);
  }
  if (!page.groups.length) groups.append(text("p", `no recent activity (${page.fallback_reason || ""})`));
  const reasons = { back_in_stock: "back in stock", price_drop: "price dropped", new_for_you: "new for you", time_to_reorder: "time to reorder" };
  $("alerts").replaceChildren(...alerts.alerts.map((alert) => {
    const was = alert.previous_price ? `, was ${price(alert.previous_price)}` : "";
    const node = text("li", `${reasons[alert.reason]}: ${alert.name || alert.item_id} (${alert.item_id}) ${price(alert.price)}${was}`);
    node.dataset.itemId = alert.item_id;
    node.append(text("div", `${alert.because}${alert.emailed ? " (e-mailed)" : ""}`, "because"));
    return node;
  }));
  if (!alerts.alerts.length) $("alerts").append(text("li", alerts.reason ? `none (${alerts.reason})` : "none"));
  document.body.dataset.customer = userId;
}

// ------------------------------------------------------------------ the Performance view
// The one part of the page that calls admin endpoints: the merchandiser types the admin token,
// which is kept in this tab's sessionStorage only and sent in the Authorization header.
const TOKEN_KEY = "recommender-admin-token";
const METRICS = {
  ctr: { label: "CTR", rate: true },
  conversion: { label: "conversion", rate: true },
  clicks_per_shopper: { label: "clicks per shopper" },
  revenue_per_shopper: { label: "revenue per shopper" },
  revenue_per_mille: { label: "revenue per 1,000 lists" },
};
const NOT_ATTRIBUTED = {
  forged: "forged (not a recommendation_id this server signed)",
  expired: "expired (cited after the attribution window)",
  not_shown: "not shown (the item was not in the cited list)",
  unverified: "unverified (tracing was not ready)",
};

async function admin(path, accept) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const response = await fetch(path, { headers: { Accept: accept, Authorization: `Bearer ${token}` } });
  if (response.status === 403) {
    throw new Error("admin endpoints disabled: no admin token configured (start the server with --admin-token or RECO_ADMIN_TOKEN)");
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new Error("wrong token: the server refused it; type the admin token again");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : response.statusText);
  }
  return accept === "application/json" ? response.json() : response.text();
}

const missingValue = (value) => value === null || value === undefined;
function percent(value) { return missingValue(value) ? "–" : `${(100 * value).toFixed(1)}%`; }
function amount(value) { return missingValue(value) ? "–" : value.toFixed(2); }
function count(value) { return missingValue(value) ? "–" : value.toLocaleString("en"); }
function label(metric) { return METRICS[metric] ? METRICS[metric].label : metric.replaceAll("_", " "); }

function change(metric, value) {
  if (missingValue(value)) return "–";
  const sign = value > 0 ? "+" : value < 0 ? "−" : "±";
  return METRICS[metric] && METRICS[metric].rate ? `${sign}${(100 * Math.abs(value)).toFixed(1)} pts` : `${sign}${Math.abs(value).toFixed(2)}`;
}

function when(seconds) { return `${new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC`; }

function tableRow(cells, className) {
  const row = document.createElement("tr");
  if (className) row.className = className;
  row.append(...cells);
  return row;
}

// Headers over numbers are right-aligned; the first ``words`` columns hold words.
function headRow(labels, words = 1) { return tableRow(labels.map((label, position) => text("th", label, position < words ? "words" : ""))); }

function withInterval(value, interval, format) {
  const cell = text("td", format(value), "num");
  if (interval) cell.append(" ", text("span", `(${format(interval[0])} to ${format(interval[1])})`, "interval"));
  return cell;
}

function showTotals(summary) {
  const totals = summary.totals;
  $("totals").replaceChildren(
    headRow(["lists shown", "clicks", "CTR (clicks per list)", "carts", "purchases", "conversion (purchases per list)", "attributed revenue"], 0),
    tableRow([count(totals.impressions), count(totals.clicks), percent(totals.ctr), count(totals.carts),
              count(totals.purchases), percent(totals.conversion), amount(totals.revenue)].map((value) => text("td", value, "num"))));
  const missed = Object.entries(summary.not_attributed).filter(([, events]) => events > 0);
  const attributed = totals.clicks + totals.carts + totals.purchases;
  $("not-attributed").textContent = missed.length
    ? `Events that cited a list and were not attributed: ${missed.map(([reason, events]) => `${events} ${NOT_ATTRIBUTED[reason] || reason}`).join("; ")}.`
    : attributed ? "Every event that cited a list was attributed." : "No event has cited a list yet.";
}

function showPlots(markup) {
  const parsed = new DOMParser().parseFromString(markup, "image/svg+xml");
  const svg = parsed.documentElement;
  if (svg.nodeName !== "svg" || parsed.getElementsByTagName("parsererror").length) throw new Error("the plots are not an SVG document");
  for (const node of svg.querySelectorAll("script, foreignObject")) node.remove();
  for (const node of [svg, ...svg.querySelectorAll("*")]) {
    for (const attribute of [...node.attributes]) if (attribute.name.toLowerCase().startsWith("on")) node.removeAttribute(attribute.name);
  }
  svg.removeAttribute("width");  // the viewBox keeps the proportions; CSS sets the page's width
  svg.removeAttribute("height");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "lists shown, CTR, conversion and attributed revenue by day; each experiment's variants");
  $("plots").replaceChildren(document.importNode(svg, true));
}

function showExperiment(experiment, results) {
  const block = document.createElement("div");
  block.className = "experiment";
  block.dataset.experiment = experiment.name;
  const stopped = experiment.stopped_at ? `, stopped ${when(experiment.stopped_at)}` : "";
  block.append(text("h4", `${experiment.name}: ${experiment.status}, started ${when(experiment.started_at)}${stopped}`));
  const covers = experiment.endpoints.length ? experiment.endpoints.join(", ") : "every endpoint";
  block.append(text("p", `covers ${covers}; decided on ${label(results.metric)}; ${Math.round(100 * results.confidence)}% intervals`, "because"));
  const variants = document.createElement("table");
  variants.className = "variants";
  variants.append(headRow(["variant", "serves", "shoppers", "lists shown", "CTR", "conversion (buyers per shopper)", "revenue per shopper"], 2));
  for (const variant of results.variants) {
    const row = tableRow([
      text("td", variant.name + (variant.name === results.control && variant.name !== "control" ? " (control)" : "")), text("td", variant.serves),
      text("td", count(variant.shoppers), "num"), text("td", count(variant.impressions), "num"),
      withInterval(variant.ctr.value, variant.ctr.interval, percent),
      withInterval(variant.conversion.value, variant.conversion.interval, percent),
      withInterval(variant.revenue_per_shopper.value, variant.revenue_per_shopper.interval, amount),
    ]);
    row.dataset.variant = variant.name;
    variants.append(row);
  }
  block.append(variants);
  for (const comparison of results.comparisons) {
    const verdict = text("p", `${comparison.variant} against ${comparison.against}: ${comparison.verdict}`, "verdict");
    verdict.dataset.variant = comparison.variant;
    const table = document.createElement("table");
    table.className = "comparison";
    table.append(headRow(["metric", "difference", "95% interval", "relative", "p-value"]));
    for (const [metric, found] of Object.entries(comparison.metrics)) {
      const interval = found.interval ? `${change(metric, found.interval[0])} to ${change(metric, found.interval[1])}` : "–";
      const relative = missingValue(found.relative) ? "–" : `${found.relative > 0 ? "+" : found.relative < 0 ? "−" : "±"}${Math.abs(100 * found.relative).toFixed(1)}%`;
      table.append(tableRow([
        text("td", label(metric) + (metric === results.metric ? " (decides)" : "")),
        text("td", change(metric, found.difference), "num"), text("td", interval, "num"), text("td", relative, "num"),
        text("td", missingValue(found.p_value) ? "–" : found.p_value.toFixed(3), "num"),
      ], metric === results.metric ? "decides" : ""));
    }
    block.append(verdict, table);
  }
  const needed = results.shoppers_needed;
  const goal = `a ${percent(needed.lift)} lift in ${label(needed.metric)} (${percent(needed.power)} power, two-sided ${percent(1 - results.confidence)})`;
  const fewest = Math.min(...results.variants.map((variant) => variant.shoppers));
  block.append(text("p", needed.per_variant === null
    ? `Shoppers needed to detect ${goal}: not known until the control's shoppers differ`
    : `Shoppers needed to detect ${goal}: ${count(needed.per_variant)} per variant; the smallest variant has ${count(fewest)}.`, "shoppers-needed"));
  return block;
}

async function loadPerformance() {
  $("performance-error").textContent = "";
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    $("performance-content").hidden = true;
    $("performance-error").textContent = "type the admin token to see the performance figures";
    document.body.dataset.performance = "no-token";
    return;
  }
  const days = $("days-input").value;
  const summary = await admin(`/v1/admin/performance?days=${days}`, "application/json");
  const [plots, results] = await Promise.all([
    admin(`/v1/admin/performance/plots.svg?days=${days}`, "image/svg+xml"),
    Promise.all(summary.experiments.map((experiment) => admin(`/v1/admin/experiments/${encodeURIComponent(experiment.name)}/results`, "application/json"))),
  ]);
  $("performance-content").hidden = false;
  $("missing-section").hidden = !summary.missing.length;
  $("missing").replaceChildren(...summary.missing.map((sentence) => text("li", sentence)));
  showTotals(summary);
  showPlots(plots);
  $("experiments").replaceChildren(...summary.experiments.map((experiment, position) => showExperiment(experiment, results[position])));
  if (!summary.experiments.length) $("experiments").append(text("p", "none yet"));
  document.body.dataset.performance = "loaded";
}

function failPerformance(error) {
  $("performance-content").hidden = true;
  $("performance-error").textContent = String(error.message || error);
  document.body.dataset.performance = "failed";
}

function showView() {
  const performance = location.hash === "#performance";
  $("explore-view").hidden = performance;
  $("performance-view").hidden = !performance;
  $("nav-explore").className = performance ? "" : "current";
  $("nav-performance").className = performance ? "current" : "";
  if (performance && document.body.dataset.performance !== "loaded") loadPerformance().catch(failPerformance);
}

$("search-form").addEventListener("submit", (event) => { event.preventDefault(); search(1).catch(fail); });
$("search-more").addEventListener("click", () => search(searchPage + 1).catch(fail));
$("customer-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showCustomer($("customer-input").value.trim()).catch(fail);
});
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token-input").value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  $("token-input").value = "";
  loadPerformance().catch(failPerformance);
});
$("days-input").addEventListener("change", () => loadPerformance().catch(failPerformance));
$("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  delete document.body.dataset.performance;
  loadPerformance().catch(failPerformance);
});
window.addEventListener("hashchange", showView);
showView();
loadModel().catch(fail);
