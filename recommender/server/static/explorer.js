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

$("search-form").addEventListener("submit", (event) => { event.preventDefault(); search(1).catch(fail); });
$("search-more").addEventListener("click", () => search(searchPage + 1).catch(fail));
$("customer-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showCustomer($("customer-input").value.trim()).catch(fail);
});
loadModel().catch(fail);
