// DagView: the server draws the graph (kale.widgets.layout.dag_svg); this module shows
// it, recolours only the boxes whose state changed, and turns clicks into selection,
// details and actions. The server sends everything now and then ("base_states",
// "base_groups") and, between, each batch's changes ("delta"). A map (or a group of
// similar tasks) is one box, whose drawing (stack, bar, counts) the server sends again as
// its members' counts change; clicking it opens its members, one page at a time
// ("members"): the browser never holds a map's 10,000 states.
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
  // Pan and zoom: the drawing is moved and scaled as a whole (a CSS transform), by the
  // wheel (about the cursor), by dragging, and by the buttons; "Fit" shows it all. Labels
  // too small to read at this zoom are hidden (the canvas's data-lod "far"), not blurred.
  const view = { k: 1, tx: 0, ty: 0, moved: false, first: true };  // first: not yet "Fit"
  const zoomLabel = h("span", { class: "kale-hint kale-zoom" });
  const READABLE = 7;  // px: a 12 px label smaller than this on screen is hidden
  const graph = () => canvas.querySelector("svg");
  const size = () => { const svg = graph();
    return svg ? [Number(svg.getAttribute("width")), Number(svg.getAttribute("height"))] : [1, 1]; };
  const fitScale = () => { const [w, hgt] = size();
    return Math.min(1, (canvas.clientWidth || 800) / w, (canvas.clientHeight || 520) / hgt); };
  const applyView = () => {
    const svg = graph();
    if (!svg) return;
    svg.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.k})`;
    const far = 12 * view.k < READABLE;
    canvas.dataset.lod = far ? "far" : "near";
    canvas.dataset.zoom = view.k.toFixed(4);
    zoomLabel.textContent = `${Math.round(view.k * 100)}%`;
  };
  // Fit: the whole graph. A graph so big that its labels could not be read whole is first
  // shown at the smallest zoom where they can (its top, centred); "Fit" then shows it all.
  const fit = (readable) => {
    const [w] = size();
    view.k = fitScale();
    if (readable === true && 12 * view.k < READABLE) view.k = Math.min(1, READABLE / 12);
    const cw = canvas.clientWidth || 800;
    view.tx = (cw - w * view.k) / 2;  // centred (a wider graph: its middle)
    view.ty = 0;
    view.moved = false;
    applyView();
  };
  const zoomAt = (f, cx, cy) => {
    const k = Math.min(4, Math.max(Math.min(0.01, fitScale()), view.k * f));
    view.tx = cx - (cx - view.tx) * (k / view.k);
    view.ty = cy - (cy - view.ty) * (k / view.k);
    view.k = k;
    view.moved = true;
    applyView();
  };
  const zoomBy = (f) => () => zoomAt(f, canvas.clientWidth / 2, canvas.clientHeight / 2);
  const zoomButtons = [h("button", { class: "kale-btn", title: "Zoom out (or the mouse wheel)", onclick: zoomBy(1 / 1.25) }, "−"),
    h("button", { class: "kale-btn kale-fit", title: "Show the whole graph (reset pan and zoom)", onclick: () => { view.first = false; fit(false); } }, "Fit"),
    h("button", { class: "kale-btn", title: "Zoom in (or the mouse wheel; drag to pan)", onclick: zoomBy(1.25) }, "+"), zoomLabel];
  const toolbar = h("div", { class: "kale-toolbar" }, Object.values(buttons), h("span", { class: "kale-spacer" }), zoomButtons);
  const canvas = h("div", { class: "kale-dag-canvas", title: "Wheel: zoom · drag: pan · click a box: its details" });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = canvas.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  let drag = null, dragged = false;  // a drag pans; the click that ends it is no click
  canvas.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, tx: view.tx, ty: view.ty, id: ev.pointerId };
    dragged = false;
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!dragged && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!dragged) { dragged = true; canvas.setPointerCapture(drag.id); canvas.classList.add("kale-panning"); }
    view.tx = drag.tx + dx; view.ty = drag.ty + dy; view.moved = true;
    applyView();
  });
  const endDrag = () => { drag = null; canvas.classList.remove("kale-panning"); };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  new ResizeObserver(() => { if (!view.moved && canvas.clientWidth) fit(view.first); }).observe(canvas);
  const members = h("div", { class: "kale-members" });
  const detail = h("div", { class: "kale-dag-detail" });
  root.append(h("div", { class: "kale-head" }, title, counts), toolbar, banner(model),
              h("div", { class: "kale-dag-body" }, canvas,
                h("div", { class: "kale-dag-side" }, members, detail)));
  el.append(root);

  let nodes = new Map();      // box (a task, or a group's name) -> its <g>
  let shown = {};             // box -> state (and condition) drawn
  let drawnMaps = {};         // group -> the drawing of its box put in place
  let boxStates = {};         // box -> state: the last full sync, then each delta on it
  let groups = {};            // group -> {total, counts, kind, state, svg}: likewise
  const paint = (name, state) => {
    const g = nodes.get(name);
    const why = model.get("conditions")[name] || "";
    if (!g || shown[name] === state + why) return 0;
    g.dataset.state = state;
    shown[name] = state + why;
    g.classList.toggle("kale-cond", !!why);
    if (g.classList.contains("kale-map")) return 1;  // drawGroup draws it whole
    const box = g.querySelector("rect.kale-box");
    box.setAttribute("fill", model.get("colors")[state] || "#9e9e9e");
    if (why) { box.setAttribute("stroke-dasharray", "4 3"); box.setAttribute("fill-opacity", "0.45"); }
    else { box.removeAttribute("stroke-dasharray"); box.removeAttribute("fill-opacity"); }
    g.querySelector("text").setAttribute("fill", ["PENDING", "SKIPPED", "READY"].includes(state) ? "#222" : "#fff");
    g.querySelector("title").textContent = `${name} ${state}${why ? `: ${why}` : ""}`;
    return 1;
  };
  const drawGroup = (name) => {
    const g = nodes.get(name), group = groups[name];
    if (!g || !group || drawnMaps[name] === group.svg) return 0;
    g.classList.add("kale-map");  // (a task that added tasks becomes one)
    g.innerHTML = group.svg;  // drawn by kale.widgets.layout.node_inner
    if (!(name in boxStates) && group.state) g.dataset.state = group.state;  // similar tasks
    drawnMaps[name] = group.svg;
    return 1;
  };
  // How many boxes the last update redrew (a test reads it: only those that changed).
  const painted = (n) => { canvas.dataset.painted = String(n);
    canvas.dataset.updates = String(Number(canvas.dataset.updates || 0) + 1); };
  const drawStates = () => {
    let n = 0;
    for (const name in boxStates) n += paint(name, boxStates[name]);
    for (const name in groups) n += drawGroup(name);
    painted(n);
  };
  const fullSync = () => {
    boxStates = { ...(model.get("base_states") || {}) };
    groups = { ...(model.get("base_groups") || {}) };
    drawStates();
    drawMembers();
  };
  const applyDelta = () => {
    const d = model.get("delta") || {};
    let n = 0;
    for (const [name, state] of Object.entries(d.states || {})) { boxStates[name] = state; n += paint(name, state); }
    for (const [name, group] of Object.entries(d.maps || {})) { groups[name] = group; n += drawGroup(name); }
    painted(n);
    if (model.get("opened") in (d.maps || {})) drawMembers();
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
    const svg = graph();
    if (svg) {
      svg.style.transformOrigin = "0 0"; svg.style.display = "block";
      canvas.style.height = `${Math.max(160, Math.min(520, size()[1] + 4))}px`;
    }
    view.first = true;
    fit(true);
    drawStates();
    drawSelection();
  };
  canvas.addEventListener("click", (ev) => {
    if (dragged) { dragged = false; return; }  // the end of a drag
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
    const group = groups[opened] || {};
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
        group.kind === "added" ? ` · added ${group.total ?? "…"} tasks`
          : group.kind === "similar" ? ` · ${group.total ?? "…"} similar tasks` : ` · a map of ${group.total ?? "…"}`,
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
        : d.similar ? `one of ${d.group}` : `added by ${d.group}`) : null;
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
  boxStates = { ...(model.get("base_states") || {}) };
  groups = { ...(model.get("base_groups") || {}) };
  drawGraph(); drawHead(); drawDetail(); drawMembers();
  send(model, "sync");  // everything as of now; then only what changes
  model.on("change:svg", drawGraph);
  model.on("change:base_states", fullSync);
  model.on("change:base_groups", fullSync);
  model.on("change:delta", applyDelta);
  model.on("change:conditions", () => { drawStates(); });
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
