// Test calls: launch (a generated menu path or a scenario), schedules, results with
// what the test caller heard, and the QA review form.

import { errorBox, fmtTime, h, replace, table, unavailable } from "./dom.js";

const EXAMPLE = `name: console-check
number: "4000"
steps:
  - expect_prompt: welcome
  - expect_prompt: menu
  - hangup
`;

export async function render({ api, me }, root) {
  const writer = ["qa", "admin"].includes(me.role);
  const launchBox = h("div", { "data-testid": "launch" });
  const results = h("div", { "data-testid": "testcall-results" });
  const detail = h("div", { "data-testid": "testcall-detail" });
  const schedules = h("div", { "data-testid": "schedules" });
  root.append(launchBox, h("h2", {}, "Results"), results, detail, h("h2", {}, "Schedules"), schedules);

  let generated;
  try {
    generated = await api.get("/testcalls/generated");
  } catch (err) {
    replace(launchBox, err.status === 404 ? unavailable("Test calls", err) : errorBox(err));
    return;
  }
  const scenario = h("textarea", { name: "scenario", rows: 8, cols: 60, "data-testid": "scenario" }, EXAMPLE);
  const pick = h("select", { name: "generated" }, h("option", { value: "" }, "(the scenario text below)"),
    generated.scenarios.map((s) => h("option", { value: `generated:${s.name}` }, `${s.name}: ${s.path.join(" → ")}`)));
  const status = h("div", { "data-testid": "launch-status" });
  if (writer) {
    replace(launchBox, h("form", { "data-testid": "launch-form", onsubmit: launch },
      h("h2", {}, "Launch a test call"), h("label", {}, "Scenario ", pick), scenario,
      h("button", { type: "submit" }, "Run test call")), status);
  } else {
    replace(launchBox, h("p", { class: "note" }, "Your role may read test calls; qa and admin launch them."));
  }

  async function launch(event) {
    event.preventDefault();
    try {
      const started = await api.post("/testcalls", { scenario: pick.value || scenario.value, wait: false });
      replace(status, `running ${started.run_id} …`);
      status.dataset.run = started.run_id;
      await poll(started.run_id);
    } catch (err) {
      replace(status, errorBox(err), ...(err.details.errors || []).map((e) => h("p", { class: "error" },
        typeof e === "string" ? e : JSON.stringify(e))));
    }
  }

  async function poll(runId) {
    const row = await api.get(`/testcalls/${runId}`);
    if (row.status === "running") {
      setTimeout(() => poll(runId).catch((err) => replace(status, errorBox(err))), 1000);
      return;
    }
    replace(status, `${runId}: ${row.status}`);
    await loadResults();
    await open(runId);
  }

  async function loadResults() {
    const rows = (await api.get("/testcalls")).results;
    replace(results, table([
      { key: "started_at", label: "Started", render: (r) => fmtTime(r.started_at) },
      { key: "scenario", label: "Scenario" }, { key: "trigger", label: "Trigger" },
      { key: "status", label: "Result" }, { key: "failures", label: "Failures", render: (r) => r.failures.join("; ") },
    ], rows, { testid: "testcall-table", rowId: (r) => r.run_id, onRow: (r) => open(r.run_id) }));
  }

  async function open(runId) {
    const [row, reviews] = await Promise.all([api.get(`/testcalls/${runId}`),
      api.get(`/testcalls/${runId}/reviews`)]);
    const result = row.result || {};
    const measures = result.measures || {};
    replace(detail,
      h("h2", {}, `Test call ${runId}`),
      h("p", { "data-testid": "testcall-verdict", class: row.passed ? "ok" : "error" },
        row.passed ? "passed" : `${row.status}: ${row.failures.join("; ")}`),
      table(Object.keys(measures).map((k) => ({ key: k, label: k })), [measures], { testid: "measures" }),
      table([
        { key: "index", label: "#" }, { key: "kind", label: "Step" },
        { key: "ok", label: "OK", render: (s) => (s.ok ? "yes" : "no") }, { key: "detail", label: "Detail" },
        { key: "score", label: "Score" },
      ], result.steps || [], { testid: "steps" }),
      h("h3", {}, "What the test caller heard"),
      h("audio", { controls: true, preload: "metadata", "data-testid": "heard-audio",
        src: api.mediaUrl(`/testcalls/${runId}/audio`) }),
      h("h3", {}, "QA reviews"),
      table([{ key: "reviewer", label: "Reviewer" }, { key: "total", label: "Total" },
        { key: "comment", label: "Comment" }], reviews.reviews, { testid: "reviews" }),
      writer ? reviewForm(runId, reviews.criteria, reviews.max_score) : null);
  }

  function reviewForm(runId, criteria, maxScore) {
    const inputs = criteria.map((c) => h("label", {}, c, h("input", { name: c, type: "number", min: 0, max: maxScore,
      value: maxScore })));
    const comment = h("input", { name: "comment", placeholder: "comment" });
    const out = h("span");
    return h("form", { class: "inline", onsubmit: async (event) => {
      event.preventDefault();
      const scores = Object.fromEntries(inputs.map((l) => [l.firstChild.textContent, Number(l.lastChild.value)]));
      try {
        await api.post(`/testcalls/${runId}/reviews`, { scores, comment: comment.value });
        await open(runId);
      } catch (err) { replace(out, errorBox(err)); }
    } }, inputs, comment, h("button", { type: "submit" }, "Save review"), out);
  }

  async function loadSchedules() {
    const body = await api.get("/testcalls/schedules");
    replace(schedules, table([
      { key: "name", label: "Name" }, { key: "interval_seconds", label: "Every (s)" },
      { key: "enabled", label: "Enabled", render: (s) => (s.enabled ? "yes" : "no") },
      { key: "last_status", label: "Last result" },
      { key: "last_run_at", label: "Last run", render: (s) => fmtTime(s.last_run_at) },
      { key: "id", label: "", render: (s) => (writer && s.enabled ? h("button", { type: "button", onclick: async () => {
        await api.del(`/testcalls/schedules/${s.id}`);
        await loadSchedules();
      } }, "Stop") : "") },
    ], body.schedules, { testid: "schedule-table", rowId: (s) => s.name }));
    if (writer) {
      const name = h("input", { name: "name", placeholder: "name", required: true });
      const every = h("input", { name: "interval", type: "number", min: 60, value: 900 });
      const out = h("span");
      schedules.append(h("form", { class: "inline", onsubmit: async (event) => {
        event.preventDefault();
        try {
          await api.post("/testcalls/schedules", { name: name.value, scenario: pick.value || scenario.value,
            interval_seconds: Number(every.value) });
          await loadSchedules();
        } catch (err) { replace(out, errorBox(err)); }
      } }, h("h3", {}, "Schedule the selected scenario"), name, "every", every, "s",
      h("button", { type: "submit" }, "Schedule"), out));
    }
  }

  await Promise.all([loadResults(), loadSchedules()]);
}
