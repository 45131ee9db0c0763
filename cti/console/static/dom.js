// DOM helpers: every server value becomes text (never HTML), so a hostile caller-ID
// name or customer note cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function table(columns, rows, { testid, onRow, rowId } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", {}, c.label)));
  const body = rows.map((row) => {
    const tr = h("tr", { dataset: rowId ? { id: rowId(row) } : {} },
      columns.map((c) => h("td", { dataset: { col: c.key } }, cell(c, row))));
    if (onRow) {
      tr.classList.add("clickable");
      tr.addEventListener("click", () => onRow(row, tr));
    }
    return tr;
  });
  return h("table", { "data-testid": testid }, h("thead", {}, head),
    h("tbody", {}, body.length ? body : h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, "nothing yet"))));
}

function cell(column, row) {
  const value = column.render ? column.render(row) : row[column.key];
  return value === null || value === undefined ? "" : value;
}

export function fmtTime(value) {
  if (value === null || value === undefined || value === "") return "";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function fmtSeconds(value) {
  if (value === null || value === undefined) return "";
  const total = Math.max(0, Math.round(Number(value)));
  const m = Math.floor(total / 60);
  return `${m}:${String(total % 60).padStart(2, "0")}`;
}

export function fmtPercent(value) {
  return value === null || value === undefined ? "" : `${(Number(value) * 100).toFixed(1)} %`;
}

export function errorBox(error) {
  const box = h("div", { class: "error", role: "alert", "data-testid": "error" }, error.message || String(error));
  if (error.errorId) box.append(h("code", {}, ` (${error.errorId})`));
  return box;
}

export function unavailable(what, error) {
  return h("div", { class: "unavailable", "data-testid": "unavailable" },
    h("strong", {}, `${what} is not available`), h("p", {}, error ? error.message : ""));
}
