// QueueView: the scheduler's jobs and partitions.
function render({ model, el }) {
  const { head, body } = refreshFrame(model, el, "kale-queue");
  const draw = () => {
    const waiting = model.get("waiting");
    head.textContent = waiting && !model.get("updated") ? waiting
      : `${model.get("scheduler") || "no scheduler"} · updated ${fmtTime(model.get("updated"))}`;
    if (waiting && !model.get("updated")) {  // no answer yet: nothing to list, not "no jobs"
      body.replaceChildren(h("div", { class: "kale-hint", "data-waiting": "" }, waiting));
      return;
    }
    const jobs = model.get("jobs"), parts = model.get("partitions");
    body.replaceChildren(
      ...model.get("problems").map((p) => h("div", { class: "kale-error-text" }, p)),
      h("div", { class: "kale-log-label" }, `jobs (${jobs.length})`),
      jobs.length ? table(["id", "name", "state", "reason", "partition", "nodes", "queued", "starts", "for"],
        jobs.map((j) => ({ attrs: { "data-job": j.id }, cells: [j.id, j.name, j.state, j.reason || "", j.partition || "",
          j.nodes === null ? "" : String(j.nodes), fmtSeconds(j.queued_for), fmtTime(j.start),
          j.kale ? (j.kale.task ? `task ${j.kale.task.slice(0, 2).join("/")}` : `${j.kale.mode} ${j.kale.id}`) : ""] })))
        : h("div", { class: "kale-hint" }, "no jobs in the queue"),
      h("div", { class: "kale-log-label" }, "partitions"),
      table(["partition", "up", "default", "nodes", "idle nodes", "idle CPUs", "max walltime"],
        parts.map((p) => [p.name, p.available ? "yes" : "no", p.default ? "yes" : "",
          p.nodes === null ? "" : String(p.nodes), p.idle_nodes === null ? "" : String(p.idle_nodes),
          p.idle_cpus === null ? "" : String(p.idle_cpus), p.max_walltime ? fmtSeconds(p.max_walltime) : "unlimited"])));
  };
  draw();
  for (const k of ["jobs", "partitions", "problems", "updated", "scheduler", "waiting"]) model.on(`change:${k}`, draw);
}
export default { render };
