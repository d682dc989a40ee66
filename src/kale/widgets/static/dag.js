// DagView: the server draws the graph (kale.widgets.layout.dag_svg); this module shows
// it, recolours only the boxes whose state changed, and turns clicks into selection,
// details and actions. A map is one box, whose drawing (stack, bar, counts) the server
// sends again as its members' counts change ("maps"); clicking it opens its members, one
// page at a time ("members"): the browser never holds a map's 10,000 states.
function render({ model, el }) {
  const root = h("div", { class: "kale-dag" });
  const title = h("div", { class: "kale-title" });
  const counts = h("div", { class: "kale-counts" });
  const buttons = {
    run_selection: h("button", { class: "kale-btn", title: "Run the selected tasks again (a new run)" }, "Run selection"),
    run_from: h("button", { class: "kale-btn", title: "Run the clicked task and everything below it again" }, "Run from here"),
    retry_failed: h("button", { class: "kale-btn kale-primary", title: "Run again what did not succeed; what did is reused" }, "Retry failed"),
    cancel: h("button", { class: "kale-btn kale-danger", title: "Cancel the selected tasks, or else the whole run" }, "Cancel"),
  };
  for (const [action, b] of Object.entries(buttons)) b.addEventListener("click", () => send(model, action));
  // Zoom: the drawing has a viewBox, so scaling its width scales it all.
  let zoom = 1;
  const zoomLabel = h("span", { class: "kale-hint kale-zoom" });
  const applyZoom = () => {
    const svg = canvas.querySelector("svg");
    if (!svg) return;
    const w = Number(svg.getAttribute("width"));
    if (zoom === "fit") { svg.style.width = "100%"; svg.style.height = "auto"; }
    else { svg.style.width = `${w * zoom}px`; svg.style.height = "auto"; }
    zoomLabel.textContent = zoom === "fit" ? "fit" : `${Math.round(zoom * 100)}%`;
  };
  const zoomBy = (f) => () => {
    const svg = canvas.querySelector("svg");
    const current = zoom === "fit" && svg ? svg.getBoundingClientRect().width / Number(svg.getAttribute("width")) : zoom;
    zoom = Math.min(4, Math.max(0.05, current * f));
    applyZoom();
  };
  const zoomButtons = [h("button", { class: "kale-btn", title: "Zoom out", onclick: zoomBy(1 / 1.25) }, "−"),
    h("button", { class: "kale-btn", title: "Fit the graph to the width", onclick: () => { zoom = "fit"; applyZoom(); } }, "Fit"),
    h("button", { class: "kale-btn", title: "Zoom in", onclick: zoomBy(1.25) }, "+"), zoomLabel];
  const toolbar = h("div", { class: "kale-toolbar" }, Object.values(buttons), h("span", { class: "kale-spacer" }), zoomButtons);
  const canvas = h("div", { class: "kale-dag-canvas" });
  const members = h("div", { class: "kale-members" });
  const detail = h("div", { class: "kale-dag-detail" });
  root.append(h("div", { class: "kale-head" }, title, counts), toolbar, banner(model),
              h("div", { class: "kale-dag-body" }, canvas,
                h("div", { class: "kale-dag-side" }, members, detail)));
  el.append(root);

  let nodes = new Map();      // task -> its <g>
  let shown = {};             // task -> state (and condition) drawn
  let drawnMaps = {};         // map -> the drawing of its box put in place
  const paint = (name, state) => {
    const g = nodes.get(name);
    const why = model.get("conditions")[name] || "";
    if (!g || shown[name] === state + why) return;
    g.dataset.state = state;
    shown[name] = state + why;
    g.classList.toggle("kale-cond", !!why);
    if (g.classList.contains("kale-map")) return;  // drawMaps draws it whole
    const box = g.querySelector("rect.kale-box");
    box.setAttribute("fill", model.get("colors")[state] || "#9e9e9e");
    if (why) { box.setAttribute("stroke-dasharray", "4 3"); box.setAttribute("fill-opacity", "0.45"); }
    else { box.removeAttribute("stroke-dasharray"); box.removeAttribute("fill-opacity"); }
    g.querySelector("text").setAttribute("fill", ["PENDING", "SKIPPED", "READY"].includes(state) ? "#222" : "#fff");
    g.querySelector("title").textContent = `${name} ${state}${why ? `: ${why}` : ""}`;
  };
  const drawMaps = () => {
    const maps = model.get("maps") || {};
    for (const name in maps) {
      const g = nodes.get(name);
      if (!g || drawnMaps[name] === maps[name].svg) continue;
      g.classList.add("kale-map");  // (a task that added tasks becomes one)
      g.innerHTML = maps[name].svg;  // drawn by kale.widgets.layout.node_inner
      drawnMaps[name] = maps[name].svg;
    }
  };
  const drawStates = () => {
    const states = model.get("states");
    for (const name in states) paint(name, states[name]);
    drawMaps();
  };
  const drawSelection = () => {
    const sel = new Set(model.get("selected")), focus = model.get("focus");
    for (const [name, g] of nodes) {
      g.classList.toggle("kale-selected", sel.has(name));
      g.classList.toggle("kale-focus", name === focus);
    }
    buttons.run_selection.disabled = !sel.size || !model.get("run_id");
    buttons.run_from.disabled = !focus || !model.get("run_id");
    buttons.retry_failed.disabled = !model.get("run_id");
    buttons.cancel.disabled = !model.get("run_id");
  };
  const drawGraph = () => {
    canvas.innerHTML = model.get("svg");
    nodes = new Map();
    shown = {};
    drawnMaps = {};
    for (const g of canvas.querySelectorAll("g.kale-node")) nodes.set(g.dataset.task, g);
    if (zoom === 1 && Number(canvas.querySelector("svg")?.getAttribute("width")) > 2000) zoom = "fit";
    applyZoom();
    drawStates();
    drawSelection();
  };
  canvas.addEventListener("click", (ev) => {
    const g = ev.target.closest && ev.target.closest("g.kale-node");
    if (!g) return;
    const name = g.dataset.task;
    if (ev.shiftKey || ev.ctrlKey || ev.metaKey) {
      const sel = new Set(model.get("selected"));
      sel.has(name) ? sel.delete(name) : sel.add(name);
      model.set("selected", [...sel]);
    } else {
      model.set("selected", [name]);
      model.set("focus", name);
      if (g.classList.contains("kale-map")) {  // open its members, from the first
        model.set("opened", name);
        model.set("member_filter", "");
        model.set("member_offset", 0);
      }
    }
    model.save_changes();
  });
  // A map's members: counts per state (click one to list only those), a page of rows
  // (click one for its details), and buttons to page.
  const setMembers = (changes) => {
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.save_changes();
  };
  let listedAt = "";  // the page the list shows: redrawn live, it keeps its scroll there
  const drawMembers = () => {
    const page = model.get("members") || {}, opened = model.get("opened");
    const here = `${page.map}|${page.filter}|${page.offset}`;
    const before = members.querySelector(".kale-member-list");
    const scroll = before && here === listedAt ? before.scrollTop : 0;
    listedAt = here;
    members.replaceChildren();
    members.hidden = !opened || !page.map;
    if (members.hidden) return;
    const colors = model.get("colors"), focus = model.get("focus");
    const group = (model.get("maps") || {})[opened] || {};
    const filter = page.filter || "";
    const chip = (label, state, n) => h("button", {
      class: `kale-member-filter${filter === state ? " kale-on" : ""}`, "data-filter": state,
      title: state ? `only the members that are ${state}` : "every member",
      onclick: () => setMembers({ member_filter: state, member_offset: 0 }) },
      state ? [`${n} `, stateChip(state, colors)] : label);
    const filters = [chip(`all ${group.total ?? 0}`, "", group.total ?? 0),
      ...Object.entries(group.counts || {}).map(([s, n]) => chip("", s, n))];
    const last = page.offset + page.rows.length;
    const pager = h("span", { class: "kale-pager" },
      h("button", { class: "kale-btn", title: "Previous page", disabled: page.offset <= 0,
        onclick: () => setMembers({ member_offset: Math.max(0, page.offset - page.limit) }) }, "‹"),
      h("span", { class: "kale-page" }, page.matching ? `${page.offset + 1}–${last} of ${page.matching}` : "none"),
      h("button", { class: "kale-btn", title: "Next page", disabled: last >= page.matching,
        onclick: () => setMembers({ member_offset: page.offset + page.limit }) }, "›"));
    const rows = page.rows.map(([i, name, state]) => ({
      attrs: { "data-member": name, class: name === focus ? "kale-focus" : undefined },
      cells: [String(i), name, stateChip(state, colors)] }));
    const list = table(["#", "member", "state"], rows, { class: "kale-table kale-member-list" });
    list.addEventListener("click", (ev) => {
      const tr = ev.target.closest && ev.target.closest("tr[data-member]");
      if (tr) setMembers({ focus: tr.dataset.member });
    });
    members.append(
      h("div", { class: "kale-members-head" }, h("b", {}, opened),
        group.kind === "added" ? ` · added ${group.total ?? "…"} tasks` : ` · a map of ${group.total ?? "…"}`,
        h("span", { class: "kale-spacer" }),
        h("button", { class: "kale-btn kale-close", title: "Close the list of members",
          onclick: () => setMembers({ opened: "" }) }, "×")),
      h("div", { class: "kale-member-filters" }, filters), pager, list);
    list.scrollTop = scroll;
  };
  const drawHead = () => {
    title.textContent = model.get("title");
    const c = model.get("counts"), colors = model.get("colors");
    const run = model.get("run_state");
    counts.replaceChildren(...(run ? [h("span", { class: "kale-count kale-run-state" }, "run ", stateChip(run, colors), " · tasks:")] : []),
      ...Object.entries(c).map(([s, n]) => h("span", { class: "kale-count", "data-count": s }, `${n} `, stateChip(s, colors))));
  };
  const drawDetail = () => {
    const d = model.get("detail");
    detail.replaceChildren();
    if (!d || !d.name) {
      detail.append(h("div", { class: "kale-hint" }, "Click a task for its details; shift-click to select more."));
      return;
    }
    const colors = model.get("colors");
    const desc = h("div", { class: "kale-markdown" });
    desc.innerHTML = d.description || "";  // rendered by markdown-it with raw HTML off
    const params = Object.entries(d.parameters || {});
    const back = d.group ? h("a", { class: "kale-member-of", href: "#",
      onclick: (ev) => { ev.preventDefault(); setMembers({ focus: d.group, opened: d.group }); } },
      d.member_of && d.index !== null && d.index !== undefined ? `member ${d.index} of ${d.member_of}`
        : `added by ${d.group}`) : null;
    detail.append(...[
      h("div", { class: "kale-detail-head" }, h("b", {}, d.name), " ", stateChip(d.state, colors), ` ${d.kind || ""}`),
      back, desc,
      d.reason && !d.error ? h("div", { class: d.condition ? "kale-reason kale-cond-reason" : "kale-reason" },
        d.condition ? `not run (no failure): ${d.reason}` : d.reason) : null,
      d.after && d.after.length ? h("div", { class: "kale-after" }, `after: ${d.after.join(", ")}`) : null,
      params.length ? table(["parameter", "value"], params) : null,
      d.error ? h("pre", { class: "kale-error-text" }, d.error) : null,
      d.details && d.details.dask_dashboard ? h("div", { class: "kale-engine" }, "ran on Dask: ",
        h("a", { href: d.details.dask_dashboard, target: "_blank", rel: "noopener" }, "its dashboard")) : null,
      d.attempts && d.attempts.length ? table(["#", "state", "started", "took", "exit", "worker", "error"],
        d.attempts.map((a) => [String(a.number), stateChip(a.state, colors), fmtTime(a.started_at),
          a.ended_at && a.started_at ? fmtSeconds(a.ended_at - a.started_at) : "",
          a.exit_code === null ? "" : String(a.exit_code), a.worker, a.error])) : null,
      h("div", { class: "kale-log-label" }, "stdout"), h("pre", { class: "kale-log kale-stdout" }, d.stdout || ""),
      h("div", { class: "kale-log-label" }, "stderr"), h("pre", { class: "kale-log kale-stderr" }, d.stderr || ""),
    ].filter(Boolean));
  };
  drawGraph(); drawHead(); drawDetail(); drawMembers();
  model.on("change:svg", drawGraph);
  model.on("change:states", () => { drawStates(); });
  model.on("change:conditions", () => { drawStates(); });
  model.on("change:maps", () => { drawMaps(); drawMembers(); });
  model.on("change:members", drawMembers);
  model.on("change:opened", drawMembers);
  model.on("change:focus", drawMembers);
  model.on("change:selected", drawSelection);
  model.on("change:focus", drawSelection);
  model.on("change:run_id", drawSelection);
  model.on("change:counts", drawHead);
  model.on("change:run_state", drawHead);
  model.on("change:title", drawHead);
  model.on("change:detail", drawDetail);
}
export default { render };
