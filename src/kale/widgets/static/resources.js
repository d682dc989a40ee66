// ResourceView: small SVG line charts, one line per task (a map's members summed) or per worker.
const PALETTE = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41",
                 "#3949ab", "#c0ca33", "#d81b60", "#546e7a", "#fdd835"];
const NS = "http://www.w3.org/2000/svg";
const s = (tag, attrs = {}) => {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
};

function chart(title, series, key, fmt) {
  const W = 360, H = 150, L = 56, B = 20, T = 18;
  const svg = s("svg", { width: W, height: H, class: "kale-chart", "data-metric": key });
  const names = Object.keys(series).filter((n) => series[n][key].some((v) => v !== null));
  let t0 = Infinity, t1 = -Infinity, top = 0;
  for (const n of names) {
    const line = series[n];
    line.t.forEach((t, i) => { if (line[key][i] !== null) { t0 = Math.min(t0, t); t1 = Math.max(t1, t); top = Math.max(top, line[key][i]); } });
  }
  const label = s("text", { x: 4, y: 13, "font-size": 11, "font-weight": "bold" });
  label.textContent = title;
  svg.append(label);
  if (!names.length) {
    const none = s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "font-size": 11, fill: "#999" });
    none.textContent = "no samples yet";
    svg.append(none);
    return svg;
  }
  top = top > 0 ? top * 1.1 : 1;
  const span = Math.max(1, t1 - t0);
  const x = (t) => L + ((t - t0) / span) * (W - L - 6), y = (v) => T + (1 - v / top) * (H - T - B);
  for (const frac of [0, 0.5, 1]) {
    const yy = y(top * frac);
    svg.append(s("line", { x1: L, x2: W - 6, y1: yy, y2: yy, stroke: "#eee" }));
    const tick = s("text", { x: L - 4, y: yy + 4, "text-anchor": "end", "font-size": 10, fill: "#666" });
    tick.textContent = fmt(top * frac);
    svg.append(tick);
  }
  const axis = s("text", { x: W - 6, y: H - 5, "text-anchor": "end", "font-size": 10, fill: "#666" });
  axis.textContent = `${fmtSeconds(span)} span`;
  svg.append(axis);
  names.forEach((n, i) => {
    const line = series[n];
    const pts = line.t.map((t, j) => line[key][j] === null ? null : `${x(t).toFixed(1)},${y(line[key][j]).toFixed(1)}`).filter(Boolean);
    svg.append(s("polyline", { points: pts.join(" "), fill: "none", stroke: PALETTE[i % PALETTE.length],
                               "stroke-width": 1.5, "data-series": n }));
  });
  return svg;
}

function render({ model, el }) {
  const by = h("select", {}, h("option", { value: "task" }, "per task"), h("option", { value: "worker" }, "per worker"));
  // One task chosen (a member clicked in the graph): say so, with the way back to all.
  const onlyName = h("span", { class: "kale-only-task" });
  const all = h("button", { class: "kale-btn kale-all-tasks", title: "Show every task (a map as one line)" }, "all tasks");
  const only = h("span", { class: "kale-only" }, "only ", onlyName, " ", all);
  const charts = h("div", { class: "kale-charts" });
  const legend = h("div", { class: "kale-legend" });
  el.append(h("div", { class: "kale-resources" }, h("div", { class: "kale-toolbar" }, by, only), banner(model), charts, legend));
  by.addEventListener("change", () => { model.set("by", by.value); model.save_changes(); });
  all.addEventListener("click", () => { model.set("task", ""); model.save_changes(); });
  const draw = () => {
    by.value = model.get("by");
    onlyName.textContent = model.get("task");
    only.style.display = model.get("task") && model.get("by") === "task" ? "" : "none";
    const series = model.get("series");
    charts.replaceChildren(chart("CPU (% of a core)", series, "cpu", (v) => `${v.toFixed(0)}%`),
                           chart("memory (RSS)", series, "rss", fmtBytes));
    if (Object.values(series).some((l) => l.gpu.some((v) => v !== null)))
      charts.append(chart("GPU (%)", series, "gpu", (v) => `${v.toFixed(0)}%`));
    const names = Object.keys(series);
    legend.replaceChildren(...names.slice(0, 24).map((n, i) => h("span", {},
      h("span", { class: "kale-swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), n)),
      names.length > 24 ? h("span", {}, `… and ${names.length - 24} more`) : null);
  };
  draw();
  model.on("change:series", draw);
  model.on("change:by", draw);
  model.on("change:task", draw);
}
export default { render };
