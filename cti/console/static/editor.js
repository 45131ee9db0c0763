// Hotline editor (admin): the live definition as YAML text; validate (findings with
// their line), diff against live, publish, roll back, history with each version's log.

import { errorBox, fmtTime, h, replace, table, unavailable } from "./dom.js";

export async function render({ api }, root) {
  const text = h("textarea", { name: "definition", rows: 28, cols: 100, spellcheck: "false",
    "data-testid": "definition" });
  const reason = h("input", { name: "reason", placeholder: "reason for this change", "data-testid": "reason" });
  const quick = h("input", { type: "checkbox", name: "quick" });
  const output = h("div", { "data-testid": "editor-output" });
  const history = h("div", { "data-testid": "history" });
  const version = h("div", { "data-testid": "version-detail" });
  const button = (label, testid, fn) => h("button", { type: "button", "data-testid": testid, onclick: () => run(label, fn) },
    label);
  let busy = false;

  async function run(label, fn) {
    if (busy) return;
    busy = true;
    replace(output, h("p", { class: "note", "data-testid": "working" }, `${label} …`));
    try {
      await fn();
    } catch (err) {
      replace(output, errorBox(err), findings(err.details.errors || []));
      if (err.details.step) output.append(h("p", {}, `failed at step ${err.details.step}; the previous version is live`));
    } finally {
      busy = false;
    }
  }

  function findings(errors) {
    if (!errors.length) return null;
    return h("ul", { class: "findings", "data-testid": "findings" }, errors.map((e) => h("li", {},
      h("button", { type: "button", class: "link", onclick: () => goToLine(e.line) }, e.line ? `line ${e.line}` : "—"),
      ` ${e.where ? `${e.where}: ` : ""}${e.message} [${e.check}]`)));
  }

  function goToLine(line) {
    if (!line) return;
    const lines = text.value.split("\n");
    const start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
    text.focus();
    text.setSelectionRange(start, start + (lines[line - 1] || "").length);
  }

  async function validate() {
    const report = await api.request("POST", "/dialplan/validate", { text: text.value, contentType: "text/yaml",
      params: quick.checked ? { sandbox: "0" } : {} });
    replace(output, h("p", { class: report.ok ? "ok" : "error", "data-testid": "validate-result" },
      report.ok ? "valid" : `${report.errors.length} problem(s)`), findings(report.errors));
  }

  async function diff() {
    const body = await api.request("POST", "/dialplan/diff", { text: text.value, contentType: "text/yaml" });
    replace(output, h("pre", { class: "diff", "data-testid": "diff" }, body.diff || "(no change)"));
  }

  async function publish() {
    const result = await api.post("/dialplan/publish", { definition: text.value, reason: reason.value });
    replace(output, h("p", { class: "ok", "data-testid": "publish-result" },
      `published version ${result.version.id} (${result.version.status})`), steps(result.steps));
    await loadHistory();
  }

  async function rollback() {
    const result = await api.post("/dialplan/rollback", { reason: reason.value || "rollback from the console" });
    replace(output, h("p", { class: "ok", "data-testid": "rollback-result" },
      `rolled back: version ${result.version.id} is ${result.version.status}`), steps(result.steps));
    await loadHistory();
    await loadLive();
  }

  function steps(list) {
    return table([{ key: "step", label: "Step" }, { key: "ok", label: "OK", render: (s) => String(s.ok ?? "") },
      { key: "detail", label: "Detail", render: (s) => {
        const { step, ok, ...rest } = s;
        return Object.keys(rest).length ? JSON.stringify(rest) : "";
      } }], list || [], { testid: "steps" });
  }

  let versions = [];
  async function loadHistory() {
    versions = (await api.get("/dialplan/history")).versions;
    replace(history, table([
      { key: "id", label: "Version" }, { key: "status", label: "Status" }, { key: "kind", label: "Kind" },
      { key: "author", label: "Author" }, { key: "reason", label: "Reason" },
      { key: "created_at", label: "When", render: (v) => fmtTime(v.created_at) },
    ], versions, { testid: "history-table", rowId: (v) => String(v.id), onRow: (v) => showVersion(v.id) }));
  }

  async function showVersion(id) {
    const v = await api.get(`/dialplan/versions/${id}`);
    replace(version, h("h3", {}, `Version ${v.id} (${v.status})`), v.error ? h("p", { class: "error" }, v.error) : null,
      h("pre", { class: "diff" }, v.diff || "(no diff)"),
      h("button", { type: "button", onclick: () => { text.value = v.definition; } }, "Load into the editor"),
      h("button", { type: "button", onclick: () => run("Rollback", async () => {
        const result = await api.post("/dialplan/rollback", { version: v.id, reason: reason.value || `back to ${v.id}` });
        replace(output, h("p", { class: "ok" }, `version ${result.version.id} is ${result.version.status}`));
        await loadHistory();
      }) }, "Roll back to this version"));
  }

  const noLive = h("p", { class: "note", "data-testid": "no-live-version", hidden: true },
    "The running definition is not in the history yet (it is recorded at the first publish): paste it, or ",
    h("input", { type: "file", accept: ".yaml,.yml,text/yaml", onchange: async (event) => {
      const file = event.target.files[0];
      if (file) text.value = await file.text();
    } }));

  async function loadLive() {
    const live = versions.find((v) => v.status === "live");
    noLive.hidden = Boolean(live);
    if (live) text.value = (await api.get(`/dialplan/versions/${live.id}`)).definition;
  }

  try {
    await loadHistory();
  } catch (err) {
    replace(root.appendChild(h("div")), err.status === 503 ? unavailable("Publishing", err) : errorBox(err));
    return;
  }
  await loadLive();
  root.append(
    h("div", { class: "toolbar" }, button("Validate", "validate", validate),
      h("label", {}, quick, " quick (skip the throwaway Asterisk)"),
      button("Diff", "diff-button", diff), reason, button("Publish", "publish", publish),
      button("Roll back to previous", "rollback", rollback)),
    output, noLive, text, h("h2", {}, "History"), history, version);
}
