// Recordings: search, the call's legs with players (Range-capable stream; every play
// needs a reason and is logged by the server), analysis, flags, case library.

import { errorBox, fmtSeconds, fmtTime, h, replace, table } from "./dom.js";

const FILTERS = ["agent", "queue", "customer", "since", "until", "outcome"];

export async function render({ api, me }, root) {
  const form = h("form", { class: "filters", "data-testid": "recording-filters" },
    FILTERS.map((f) => h("label", {}, f, h("input", { name: f, type: f === "since" || f === "until" ? "date" : "text" }))),
    h("label", {}, "flagged", h("select", { name: "flagged" }, h("option", { value: "" }, "any"),
      h("option", { value: "true" }, "flagged"), h("option", { value: "false" }, "not flagged"))),
    h("label", {}, "case", h("select", { name: "case" }, ["", "any", "praise", "complaint"].map((c) =>
      h("option", { value: c }, c || "-")))),
    h("button", { type: "submit" }, "Search"),
    h("button", { type: "button", "data-testid": "library", onclick: () => search(true) }, "Case library"));
  const list = h("div", { "data-testid": "recording-list" });
  const detail = h("div", { "data-testid": "recording-detail" });
  root.append(form, list, detail);

  async function search(library = false) {
    try {
      const params = Object.fromEntries(new FormData(form).entries());
      const sets = library ? (await api.get("/recordings/library")).library
        : (await api.get("/recordings", params)).recordings;
      replace(list, table([
        { key: "started_at", label: "Started", render: (r) => fmtTime(r.started_at) },
        { key: "caller_num", label: "Caller" }, { key: "queue", label: "Queue" },
        { key: "agents", label: "Agents", render: (r) => r.agents.join(", ") }, { key: "outcome", label: "Outcome" },
        { key: "flags", label: "Flags", render: (r) => r.flags.join(", ") },
        { key: "case", label: "Case", render: (r) => (r.case ? r.case.kind : "") },
      ], sets, { testid: "recordings-table", rowId: (r) => r.linkedid, onRow: (r) => open(r) }));
    } catch (err) {
      replace(list, errorBox(err));
    }
  }

  async function open(listed) {
    let set;
    try {
      set = (await api.get(`/recordings/${listed.legs[0].id}`)).call;  // fresh: the analysis may have landed
    } catch (err) {
      replace(detail, errorBox(err));
      return;
    }
    const reason = h("input", { name: "reason", placeholder: "why you listen (logged)", required: true,
      "data-testid": "play-reason" });
    const players = h("div", { class: "players", "data-testid": "players" });
    // One leg at a time: each play is an access-log row, so only what is chosen is fetched.
    const legNames = { mix: "both parties", rx: "the caller", tx: "what the caller heard" };
    const legPick = h("select", { name: "leg", "data-testid": "play-leg" }, set.legs.map((leg) => h("option",
      { value: String(leg.id) }, `${leg.leg}: ${legNames[leg.leg] || leg.leg} (${fmtSeconds(leg.duration_seconds)}`
        + `${leg.has_speech ? ", speech" : ""})`)));
    const loadPlayers = (event) => {
      event.preventDefault();
      const leg = set.legs.find((l) => String(l.id) === legPick.value);
      replace(players, h("div", { class: "leg" }, h("span", {}, leg.leg),
        h("audio", { controls: true, preload: "metadata", "data-leg": leg.leg, "data-testid": `audio-${leg.leg}`,
          src: api.mediaUrl(`/recordings/${leg.id}/audio`, { reason: reason.value }) })));
    };
    const analysis = set.analysis || {};
    replace(detail,
      h("h2", {}, `Call ${set.linkedid}`),
      h("p", {}, `${set.caller_num || ""} · ${set.queue || ""} · agent ${set.agent || "-"} · ${set.outcome || ""}`,
        set.legal_hold ? h("span", { class: "badge warn" }, "legal hold") : null),
      h("form", { class: "inline", onsubmit: loadPlayers }, legPick, reason, h("button", { type: "submit" }, "Listen")),
      players,
      h("h3", {}, "Analysis"),
      set.flags.length ? h("p", { "data-testid": "flags" }, set.flags.map((f) => h("span", { class: "badge warn" }, f)))
        : null,
      h("button", { type: "button", onclick: () => open(set) }, "Reload"),
      Object.keys(analysis).length ? table([{ key: "k", label: "Measure" }, { key: "v", label: "Value" }],
        Object.entries(analysis).filter(([k]) => k !== "flags").map(([k, v]) => ({ k, v: show(v) })),
        { testid: "analysis" }) : h("p", { class: "note" }, "Not analysed yet."),
      caseForm(set),
      ["supervisor", "admin"].includes(me.role) ? await accessLog(set) : null);
  }

  function caseForm(set) {
    const kind = h("select", { name: "case" }, ["none", "praise", "complaint"].map((c) =>
      h("option", { value: c, selected: set.case && set.case.kind === c }, c)));
    const note = h("input", { name: "note", value: set.case ? set.case.note : "", placeholder: "note" });
    const result = h("span");
    return h("form", { class: "inline", "data-testid": "case-form", onsubmit: async (event) => {
      event.preventDefault();
      try {
        const updated = await api.post(`/recordings/${set.legs[0].id}/case`,
          { case: kind.value === "none" ? null : kind.value, note: note.value });
        replace(result, `saved: ${updated.case ? updated.case.kind : "none"}`);
      } catch (err) { replace(result, errorBox(err)); }
    } }, h("h3", {}, "Case library"), kind, note, h("button", { type: "submit" }, "Save"), result);
  }

  async function accessLog(set) {
    const rows = [];
    for (const leg of set.legs) {
      const log = await api.get(`/recordings/${leg.id}/access`).catch(() => ({ access: [] }));
      rows.push(...log.access.map((a) => ({ leg: leg.leg, ...a })));
    }
    return h("div", {}, h("h3", {}, "Access log"), table(
      Object.keys(rows[0] || { leg: 1, user: 1, at: 1, reason: 1 }).map((k) => ({ key: k, label: k })), rows,
      { testid: "access-log" }));
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); search(); });
  await search();
}

function show(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? value : value.toFixed(2);
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
