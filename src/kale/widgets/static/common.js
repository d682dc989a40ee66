// Shared by every Kale widget (prepended to each widget's module by kale.widgets.base).
const h = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined)
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
};

const fmtBytes = (n) => {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
};

const fmtTime = (ts) => ts ? new Date(ts * 1000).toLocaleTimeString() : "";

const fmtSeconds = (s) => {
  if (s === null || s === undefined) return "";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  return new Date(s * 1000).toISOString().substring(11, 19);
};

// The error and message lines every widget has (traits "error" and "message").
function banner(model) {
  const el = h("div", { class: "kale-banner" });
  const draw = () => {
    el.replaceChildren();
    const err = model.get("error"), msg = model.get("message");
    if (err) el.append(h("div", { class: "kale-error", text: err }));
    if (msg) el.append(h("div", { class: "kale-message", text: msg }));
  };
  draw();
  model.on("change:error", draw);
  model.on("change:message", draw);
  return el;
}

const send = (model, action, extra = {}) => model.send({ action, ...extra });

function stateChip(state, colors) {
  return h("span", { class: "kale-chip", "data-state": state,
                     style: `background:${(colors || {})[state] || "#9e9e9e"}` }, state);
}

// A table from rows of cells (strings or nodes); header cells first.
function table(headers, rows, attrs = {}) {
  return h("table", { class: "kale-table", ...attrs },
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r) => h("tr", r.attrs || {}, (r.cells || r).map((c) => h("td", {}, c))))));
}

// A view read again on a timer (kale.widgets.base.Refreshing): a Refresh button and a
// status line above the error/message lines and the view's body.
function refreshFrame(model, el, cls) {
  const refresh = h("button", { class: "kale-btn", onclick: () => send(model, "refresh") }, "Refresh");
  const head = h("span", { class: "kale-hint" });
  const body = h("div");
  el.append(h("div", { class: cls }, h("div", { class: "kale-toolbar" }, refresh, head), banner(model), body));
  return { head, body };
}
