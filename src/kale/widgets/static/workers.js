// WorkersView: workers, the manager's batch jobs, and a form to start more.
function render({ model, el }) {
  const field = (name, input) => h("label", {}, name, input);
  const kind = h("select", { name: "kind" });
  const count = h("input", { name: "count", type: "number", min: 1, max: 64, value: 1, style: "width:4em" });
  const slots = h("input", { name: "slots", type: "number", min: 1, placeholder: "auto", style: "width:5em" });
  const nodes = h("input", { name: "nodes", type: "number", min: 1, value: 1, style: "width:4em" });
  const walltime = h("input", { name: "walltime", value: "00:30:00", style: "width:6em" });
  const queue = h("input", { name: "queue", placeholder: "default", style: "width:7em" });
  const batchOnly = [field("nodes", nodes), field("walltime", walltime), field("queue", queue)];
  const start = h("button", { class: "kale-btn kale-primary" }, "Start");
  start.addEventListener("click", () => {
    const form = { kind: kind.value, count: count.value, slots: slots.value };
    if (kind.value !== "local") Object.assign(form, { nodes: nodes.value, walltime: walltime.value, queue: queue.value });
    send(model, "start", { form });
  });
  const refresh = h("button", { class: "kale-btn", onclick: () => send(model, "refresh") }, "Refresh");
  const form = h("div", { class: "kale-form" }, field("kind", kind), field("count", count), field("slots", slots),
                 ...batchOnly, start, refresh);
  const showBatch = () => batchOnly.forEach((f) => { f.style.display = kind.value === "local" ? "none" : ""; });
  kind.addEventListener("change", showBatch);
  const body = h("div");
  el.append(h("div", { class: "kale-workers" }, form, banner(model), body));
  const drawKinds = () => { kind.replaceChildren(...model.get("kinds").map((k) => h("option", { value: k }, k))); showBatch(); };
  const draw = () => {
    const ws = model.get("workers"), jobs = model.get("jobs");
    body.replaceChildren(
      h("div", { class: "kale-log-label" }, `workers (${ws.length}) · updated ${fmtTime(model.get("updated"))}`),
      ws.length ? table(["id", "where", "provider", "slots", "running", "job", "heard", ""],
        ws.map((w) => ({ attrs: { "data-worker": w.id }, cells: [w.id, `${w.host} pid ${w.pid}`, w.provider || "", String(w.slots),
          String(w.running), w.job || "", `${fmtSeconds(w.silent_for)} ago`,
          h("button", { class: "kale-btn kale-danger", onclick: () => send(model, "stop", { id: w.id }) }, "Stop")] })))
        : h("div", { class: "kale-hint" }, "no workers connected"),
      h("div", { class: "kale-log-label" }, `batch jobs (${jobs.length})`),
      jobs.length ? table(["id", "scheduler", "native id", "mode", "state", "nodes", ""],
        jobs.map((j) => ({ attrs: { "data-job": j.id }, cells: [j.id, j.scheduler, j.native_id || "", j.mode, j.state, String(j.nodes),
          h("button", { class: "kale-btn kale-danger", onclick: () => send(model, "cancel_job", { id: j.id }) }, "Cancel")] })))
        : h("div", { class: "kale-hint" }, "no batch jobs"));
  };
  drawKinds(); draw();
  model.on("change:kinds", drawKinds);
  for (const k of ["workers", "jobs", "updated"]) model.on(`change:${k}`, draw);
}
export default { render };
