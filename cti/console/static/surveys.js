// Surveys: campaigns, their progress (jobs by state, attempt outcomes) and results.

import { barChart } from "./charts.js";
import { errorBox, fmtTime, h, replace, table, unavailable } from "./dom.js";

export async function render({ api, me }, root) {
  const list = h("div", { "data-testid": "campaigns" });
  const detail = h("div", { "data-testid": "campaign-detail" });
  const extra = h("div");
  root.append(list, detail, extra);
  const create = ["supervisor", "admin"].includes(me.role) ? createForm() : null;
  async function loadCampaigns() {
    const campaigns = (await api.get("/surveys/campaigns")).campaigns;
    replace(list, table([
      { key: "name", label: "Campaign" }, { key: "trigger", label: "Trigger" }, { key: "survey", label: "Survey" },
      { key: "active", label: "Active", render: (c) => (c.active ? "yes" : "no") },
    ], campaigns, { testid: "campaign-table", rowId: (c) => c.name, onRow: (c) => open(c.name) }), create);
  }
  try {
    await loadCampaigns();
  } catch (err) {
    replace(list, err.status === 404 ? unavailable("Surveys", err) : errorBox(err));
    return;
  }
  const [praise, followups] = await Promise.all([
    api.get("/surveys/praise").catch(() => ({ praise: {} })),
    api.get("/surveys/followups").catch(() => ({ followups: [] })),
  ]);
  replace(extra,
    h("h2", {}, "Praise by agent"),
    table([{ key: "agent", label: "Agent" }, { key: "count", label: "Praise" }],
      Object.entries(praise.praise).map(([agent, count]) => ({ agent, count })), { testid: "praise" }),
    h("h2", {}, "Follow-ups"),
    table([
      { key: "number", label: "Number" }, { key: "service_order", label: "Order" }, { key: "agent", label: "Agent" },
      { key: "reason", label: "Reason" }, { key: "status", label: "Status" },
      { key: "created_at", label: "Created", render: (f) => fmtTime(f.created_at) },
    ], followups.followups, { testid: "followups" }));

  async function open(name) {
    try {
      const [status, results] = await Promise.all([
        api.get(`/surveys/campaigns/${encodeURIComponent(name)}`),
        api.get(`/surveys/campaigns/${encodeURIComponent(name)}/results`),
      ]);
      const jobs = Object.entries(status.jobs).map(([state, n]) => ({ state, n }));
      const attempts = Object.entries(status.attempts).map(([outcome, n]) => ({ outcome, n }));
      replace(detail, h("h2", {}, `Campaign ${name}`),
        barChart(jobs, { title: "Jobs by state", label: (r) => r.state, series: [{ key: "n", label: "jobs" }],
          testid: "jobs-chart" }),
        barChart(attempts, { title: "Call attempts by outcome", label: (r) => r.outcome,
          series: [{ key: "n", label: "attempts" }], testid: "attempts-chart" }),
        h("h3", {}, "Results"),
        h("button", { type: "button", onclick: () => api.download(`/surveys/campaigns/${encodeURIComponent(name)}/results`,
          { format: "csv" }, `survey-${name}.csv`) }, "CSV"),
        table([
          { key: "number", label: "Number" }, { key: "service_order", label: "Order" },
          { key: "technician", label: "Technician" }, { key: "agent", label: "Agent" },
          { key: "question", label: "Question" }, { key: "value", label: "Answer" }, { key: "score", label: "Score" },
          { key: "at", label: "At", render: (r) => fmtTime(r.at) },
        ], results.results, { testid: "survey-results" }));
    } catch (err) {
      replace(detail, errorBox(err));
    }
  }

  function createForm() {
    const name = h("input", { name: "name", placeholder: "name", required: true });
    const trigger = h("select", { name: "trigger" }, ["manual", "call_ended", "order_closed"].map((t) =>
      h("option", { value: t }, t)));
    const out = h("span");
    return h("form", { class: "inline", onsubmit: async (event) => {
      event.preventDefault();
      try {
        const made = await api.post("/surveys/campaigns", { name: name.value, trigger: trigger.value });
        replace(out, `created ${made.name}`);
        await loadCampaigns();
        await open(made.name);
      } catch (err) { replace(out, errorBox(err)); }
    } }, h("h3", {}, "New campaign"), name, trigger, h("button", { type: "submit" }, "Create"), out);
  }
}
