// LogView: a task's log, followed.
function render({ model, el }) {
  const taskSel = h("select", { class: "kale-task-select" });
  const streamSel = h("select", { class: "kale-stream-select" },
    h("option", { value: "stdout" }, "stdout"), h("option", { value: "stderr" }, "stderr"));
  const follow = h("input", { type: "checkbox", class: "kale-follow" });
  const pre = h("pre", { class: "kale-log-text" });
  el.append(h("div", { class: "kale-log-view" },
    h("div", { class: "kale-toolbar" }, h("label", {}, "task ", taskSel), h("label", {}, "stream ", streamSel),
      h("label", {}, follow, " follow")), banner(model), pre));
  const drawTasks = () => {
    taskSel.replaceChildren(...model.get("tasks").map((t) => h("option", { value: t }, t)));
    taskSel.value = model.get("task");
  };
  const drawText = () => {
    pre.textContent = model.get("text");
    pre.classList.toggle("kale-stderr", model.get("stream") === "stderr");
    if (model.get("follow")) pre.scrollTop = pre.scrollHeight;
  };
  const drawControls = () => {
    taskSel.value = model.get("task");
    streamSel.value = model.get("stream");
    follow.checked = model.get("follow");
  };
  taskSel.addEventListener("change", () => { model.set("task", taskSel.value); model.save_changes(); });
  streamSel.addEventListener("change", () => { model.set("stream", streamSel.value); model.save_changes(); });
  follow.addEventListener("change", () => { model.set("follow", follow.checked); model.save_changes(); drawText(); });
  drawTasks(); drawControls(); drawText();
  model.on("change:tasks", drawTasks);
  model.on("change:task", drawControls);
  model.on("change:stream", drawControls);
  model.on("change:follow", drawControls);
  model.on("change:text", drawText);
}
export default { render };
