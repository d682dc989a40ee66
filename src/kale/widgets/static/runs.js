// RunsView: runs, newest first; open one.
function render({ model, el }) {
  const { head, body } = refreshFrame(model, el, "kale-runs");
  const draw = () => {
    const runs = model.get("runs"), colors = model.get("colors"), opened = model.get("opened");
    head.textContent = `${runs.length} runs · updated ${fmtTime(model.get("updated"))}`;
    body.replaceChildren(runs.length ? table(["run", "workflow", "state", "started", "took", ""],
      runs.map((r) => ({ attrs: { "data-run": r.id, class: r.id === opened ? "kale-opened" : "" },
        cells: [r.id, r.workflow, stateChip(r.state, colors), new Date(r.created_at * 1000).toLocaleString(),
          r.ended_at ? fmtSeconds(r.ended_at - r.created_at) : "",
          h("button", { class: "kale-btn", onclick: () => send(model, "open", { id: r.id }) }, "Open")] })))
      : h("div", { class: "kale-hint" }, "no runs yet"));
  };
  draw();
  for (const k of ["runs", "opened", "updated"]) model.on(`change:${k}`, draw);
}
export default { render };
