// Login: a token (typed or from a file) or SSH. The token goes to the kernel in a
// message and is never kept in the widget's state (which a saved notebook keeps).
function render({ model, el }) {
  const field = (name, input) => h("label", {}, name, input);
  const method = h("select", { name: "method" }, h("option", { value: "token" }, "manager URL + token"),
                   h("option", { value: "ssh" }, "SSH (key or agent)"));
  const url = h("input", { name: "url", placeholder: "https://127.0.0.1:PORT", style: "width:16em" });
  const token = h("input", { name: "token", type: "password", autocomplete: "off", style: "width:14em" });
  const tokenFile = h("input", { name: "token_file", placeholder: "~/.kale/token", style: "width:12em" });
  const host = h("input", { name: "host", placeholder: "login.cluster.org", style: "width:14em" });
  const identity = h("input", { name: "identity", placeholder: "agent / default key", style: "width:12em" });
  const home = h("input", { name: "remote_home", style: "width:8em" });
  const cert = h("input", { name: "cert", placeholder: "manager.crt (its TLS certificate)", style: "width:14em" });
  const tokenFields = [field("URL", url), field("token", token), field("or token file", tokenFile),
    field("certificate", cert)];
  const sshFields = [field("host", host), field("key file", identity), field("Kale home there", home)];
  const connect = h("button", { class: "kale-btn kale-primary" }, "Connect");
  const status = h("span", { class: "kale-hint kale-connected" });
  connect.addEventListener("click", () => {
    const form = method.value === "ssh"
      ? { method: "ssh", host: host.value, identity: identity.value, remote_home: home.value }
      : { method: "token", url: url.value, token: token.value, token_file: tokenFile.value,
          cert: cert.value };
    token.value = "";
    send(model, "connect", { form });
  });
  const shown = () => {
    tokenFields.forEach((f) => { f.style.display = method.value === "ssh" ? "none" : ""; });
    sshFields.forEach((f) => { f.style.display = method.value === "ssh" ? "" : "none"; });
  };
  method.addEventListener("change", () => { model.set("method", method.value); model.save_changes(); shown(); });
  el.append(h("div", { class: "kale-login" },
    h("div", { class: "kale-form" }, field("connect with", method), ...tokenFields, ...sshFields, connect),
    status, banner(model)));
  const draw = () => {
    method.value = model.get("method"); url.value = model.get("url"); host.value = model.get("host");
    identity.value = model.get("identity"); home.value = model.get("remote_home");
    status.textContent = model.get("connected") ? `connected: ${model.get("connected")}` : "not connected";
    shown();
  };
  draw();
  for (const k of ["method", "url", "host", "identity", "remote_home", "connected"]) model.on(`change:${k}`, draw);
}
export default { render };
