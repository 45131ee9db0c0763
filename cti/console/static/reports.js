// Reports with inline-SVG charts; CSV export of each report's main table.
// An agent sees only their own piece-rate statement (the server enforces it too).

import { barChart } from "./charts.js";
import { errorBox, fmtPercent, fmtSeconds, h, replace, table } from "./dom.js";

export async function render({ api, me }, root) {
  const month = new Date().toISOString().slice(0, 7);
  const monthInput = h("input", { name: "month", type: "month", value: month, "data-testid": "report-month" });
  const agentInput = h("input", { name: "agent", value: me.agent || "", placeholder: "agent", disabled: me.role === "agent" });
  const out = h("div", { "data-testid": "report" });
  const names = me.role === "agent" ? [] : ["summary", "queues", "agents", "volume"];
  const tabs = [...names.map((n) => h("button", { type: "button", "data-report": n, onclick: () => show(n) }, n)),
    h("button", { type: "button", "data-report": "statement", onclick: () => show("statement") }, "statement")];
  root.append(h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); show(current); } },
    h("label", {}, "Month ", monthInput), h("label", {}, "Agent ", agentInput), tabs,
    h("button", { type: "button", onclick: csv }, "CSV"),
    me.role === "admin" ? h("button", { type: "button", "data-testid": "import-logs", onclick: importLogs },
      "Import Asterisk logs") : null), out);
  let current = names[0] || "statement";

  function path(name) {
    return name === "statement" ? `/reports/statements/${encodeURIComponent(agentInput.value)}` : `/reports/${name}`;
  }

  async function csv() {
    try {
      await api.download(path(current), { month: monthInput.value, format: "csv" }, `${current}-${monthInput.value}.csv`);
    } catch (err) { replace(out, errorBox(err)); }
  }

  async function importLogs() {
    try {
      const body = await api.post("/reports/import");
      await show(current);
      out.prepend(h("p", { class: "ok", "data-testid": "import-result" },
        body.imports.map((r) => `${r.source}: ${r.added} new, ${r.already_imported} already there, `
          + `${r.rejected.length} rejected`).join("; ")));
    } catch (err) { replace(out, errorBox(err)); }
  }

  // Only the latest request may draw: a slow earlier answer (the first report loading
  // while the user already picked another) must not overwrite the newer view.
  let shown = 0;
  async function show(name) {
    const ticket = ++shown;
    current = name;
    for (const t of tabs) t.classList.toggle("active", t.dataset.report === name);
    if (name === "statement" && !agentInput.value) {
      replace(out, h("p", { class: "note" }, "Enter an agent extension."));
      return;
    }
    try {
      const body = await api.get(path(name), { month: monthInput.value });
      if (ticket !== shown) return;
      replace(out, ...VIEWS[name](body), notes(body.notes));
    } catch (err) {
      if (ticket === shown) replace(out, errorBox(err));
    }
  }
  await show(current);
}

function notes(list) {
  return list && list.length ? h("ul", { class: "note" }, list.map((n) => h("li", {}, n))) : null;
}

function tiles(pairs) {
  return h("div", { class: "tiles", "data-testid": "tiles" }, pairs.map(([label, value]) =>
    h("div", { class: "tile" }, h("span", { class: "value" }, value === null || value === undefined ? "–" : value),
      h("span", { class: "label" }, label))));
}

const QUEUE_COLUMNS = [
  { key: "queue", label: "Queue" }, { key: "offered", label: "Offered" }, { key: "answered", label: "Answered" },
  { key: "service_level", label: "Service level", render: (q) => fmtPercent(q.service_level) },
  { key: "abandoned", label: "Abandoned" }, { key: "short_abandons", label: "Short abandons" },
  { key: "abandon_rate", label: "Abandon rate", render: (q) => fmtPercent(q.abandon_rate) },
  { key: "timeouts", label: "Timeouts" }, { key: "asa_seconds", label: "ASA", render: (q) => fmtSeconds(q.asa_seconds) },
  { key: "aht_seconds", label: "AHT", render: (q) => fmtSeconds(q.aht_seconds) },
  { key: "max_wait_seconds", label: "Max wait", render: (q) => fmtSeconds(q.max_wait_seconds) },
];

const VIEWS = {
  summary: (r) => {
    const q = r.queues_total;
    return [h("h2", {}, `Summary ${r.period.label}`), tiles([
      ["calls", r.hotline.calls], ["answered", r.hotline.answered], ["IVR hang-ups", r.hotline.ivr_hangups],
      ["service level", fmtPercent(q.service_level)], ["abandon rate", fmtPercent(q.abandon_rate)],
      ["ASA", fmtSeconds(q.asa_seconds)], ["AHT", fmtSeconds(q.aht_seconds)], ["test calls", r.hotline.test_calls],
    ]),
    r.test_calls ? [h("h3", {}, "Test calls"), table([{ key: "scenario", label: "Scenario" },
      { key: "runs", label: "Runs" }, { key: "passed", label: "Passed" },
      { key: "pass_rate", label: "Pass rate", render: (t) => fmtPercent(t.pass_rate) }], r.test_calls,
    { testid: "test-call-rates" })] : null,
    r.praise ? [h("h3", {}, "Praise"), table([{ key: "agent", label: "Agent" }, { key: "praise", label: "Praise" }],
      r.praise, { testid: "praise" })] : null,
    satisfaction(r.satisfaction)];
  },
  queues: (r) => [
    barChart(r.queues.filter((q) => q.queue !== "(all)"), {
      title: "Offered and answered per queue", label: (q) => q.queue, testid: "queues-chart",
      series: [{ key: "offered", label: "offered" }, { key: "answered", label: "answered" },
        { key: "abandoned", label: "abandoned" }] }),
    table(QUEUE_COLUMNS, r.queues, { testid: "queues-table" }),
    h("h3", {}, "Per interval"),
    table([{ key: "queue", label: "Queue" }, { key: "interval_start", label: "From" },
      { key: "offered", label: "Offered" }, { key: "answered", label: "Answered" },
      { key: "abandoned", label: "Abandoned" }], r.intervals, { testid: "intervals-table" }),
  ],
  agents: (r) => [
    barChart(r.agents, { title: "Handled calls per agent", label: (a) => a.agent, testid: "agents-chart",
      series: [{ key: "handled", label: "handled" }, { key: "ring_no_answer", label: "rang, not answered" }] }),
    table([
      { key: "agent", label: "Agent" }, { key: "handled", label: "Handled" },
      { key: "handled_internal", label: "Internal" }, { key: "talk_seconds", label: "Talk", render: (a) => fmtSeconds(a.talk_seconds) },
      { key: "aht_seconds", label: "AHT", render: (a) => fmtSeconds(a.aht_seconds) },
      { key: "ring_no_answer", label: "Ring, no answer" },
      { key: "praise", label: "Praise",
        render: (a) => ((r.praise || []).find((p) => p.agent === a.agent) || { praise: "" }).praise },
      { key: "qa", label: "QA score", render: (a) => (r.qa_scores ? r.qa_scores[a.agent] ?? "" : "") },
    ], r.agents, { testid: "agents-table" }),
    satisfaction(r.satisfaction),
  ],
  volume: (r) => [
    barChart(r.by_hour, { title: `Calls by hour of day (${r.timezone})`, label: (x) => String(x.hour),
      testid: "hour-chart", series: [{ key: "calls", label: "calls" }] }),
    barChart(r.by_region, { title: "Calls by region", label: (x) => x.region, testid: "region-chart",
      series: [{ key: "calls", label: "calls" }] }),
  ],
  statement: (r) => [
    h("h2", {}, `Statement ${r.agent} ${r.month}`), h("p", {}, r.formula),
    tiles([["total", r.total_points], ["base", r.base_points], ["piece", r.piece_points],
      ["composite", r.composite_points], ["counted calls", r.counted_calls], ["callbacks", r.counted_callbacks],
      ["not counted", r.not_counted]]),
    h("h3", {}, "Composite inputs"), h("pre", {}, JSON.stringify(r.composite, null, 1)),
    table(Object.keys(r.lines[0] || {}).map((k) => ({ key: k, label: k })), r.lines, { testid: "statement-lines" }),
  ],
};

function satisfaction(groups) {
  if (!groups) return null;
  return [h("h3", {}, "Survey satisfaction"), Object.entries(groups).map(([dim, rows]) => table([
    { key: dim, label: dim }, { key: "responses", label: "Responses" }, { key: "mean_score", label: "Mean score" },
  ], rows, { testid: `satisfaction-${dim}` }))];
}
