// Wallboard: queues (waiting, longest wait, agents available), agents and live calls.
// The websocket drives it: the snapshot seeds it, every call event updates the call
// list and triggers one coalesced re-read of /queues and /agents (the tracker's state).

import { errorBox, fmtSeconds, h, replace, table } from "./dom.js";

export async function render({ api, me, stream }, root) {
  const calls = new Map();
  let queues = {};
  let agents = {};
  let fetching = false;
  let dirty = false;
  const queuesBox = h("div", { "data-testid": "queues" });
  const agentsBox = h("div", { "data-testid": "agents" });
  const callsBox = h("div", { "data-testid": "calls" });
  const note = h("p", { class: "note", "data-testid": "freshness" });
  // Supervisors listen in, whisper or barge from a talking call's row (their phone rings).
  const canMonitor = ["supervisor", "admin"].includes(me.role);
  const endpoint = h("input", { name: "endpoint", placeholder: "your extension", size: 8,
    "data-testid": "monitor-endpoint", value: localStorage.getItem("hotline-monitor-endpoint") || "" });
  const monitorState = h("span", { "data-testid": "monitor-state" });
  root.append(note, h("h2", {}, "Queues"), queuesBox, h("h2", {}, "Agents"), agentsBox,
    h("h2", {}, "Live calls"),
    canMonitor ? h("p", { class: "inline" }, "Monitor from the phone ", endpoint, " ", monitorState) : null, callsBox);

  async function monitor(call, mode) {
    localStorage.setItem("hotline-monitor-endpoint", endpoint.value);
    try {
      const row = await api.post("/monitor", { linkedid: call.linkedid, mode, endpoint: endpoint.value });
      replace(monitorState, `${mode} on agent ${row.agent}: ringing ${row.supervisor_endpoint}`);
    } catch (err) {
      replace(monitorState, errorBox(err));
    }
  }

  function monitorButtons(call) {
    if (!canMonitor || !call.agent) return "";
    return ["listen", "whisper", "barge"].map((mode) => h("button", { type: "button", "data-mode": mode,
      onclick: () => monitor(call, mode) }, mode));
  }

  async function refresh() {
    if (fetching) { dirty = true; return; }
    fetching = true;
    try {
      do {
        dirty = false;
        const [q, a] = await Promise.all([api.get("/queues"), api.get("/agents")]);
        queues = q.queues;
        agents = a.agents;
        replace(note, q.fresh ? "" : "Call state is being resynchronised with Asterisk (numbers may be stale).");
      } while (dirty);
    } catch (err) {
      replace(note, `Could not read queues: ${err.message}`);
    } finally {
      fetching = false;
    }
    draw();
  }

  function drawQueues() {
    const now = Date.now() / 1000;
    const rows = Object.entries(queues).sort(([a], [b]) => a.localeCompare(b)).map(([name, q]) => ({
      queue: name, waiting: q.waiting,
      longest: q.longest_wait_since ? fmtSeconds(now - q.longest_wait_since) : "",
      available: q.members.filter((m) => m.state === "available").length,
      members: q.members.length,
    }));
    replace(queuesBox, table([
      { key: "queue", label: "Queue" }, { key: "waiting", label: "Waiting" },
      { key: "longest", label: "Longest wait" }, { key: "available", label: "Agents available" },
      { key: "members", label: "Members" },
    ], rows, { testid: "queue-table", rowId: (r) => r.queue }));
  }

  function draw() {
    drawQueues();
    const agentRows = Object.values(agents).sort((a, b) => a.agent.localeCompare(b.agent));
    replace(agentsBox, table([
      { key: "agent", label: "Agent" }, { key: "state", label: "State" },
      { key: "paused_reason", label: "Pause reason" },
      { key: "queues", label: "Queues", render: (r) => r.queues.join(", ") },
      { key: "calls_taken", label: "Calls taken" },
    ], agentRows, { testid: "agent-table", rowId: (r) => r.agent }));
    const now = Date.now() / 1000;
    const callRows = [...calls.values()].sort((a, b) => (a.started_at || 0) - (b.started_at || 0));
    replace(callsBox, table([
      { key: "caller_num", label: "Caller" }, { key: "caller_name", label: "Name" },
      { key: "state", label: "State", render: callState }, { key: "queue", label: "Queue" },
      { key: "agent", label: "Agent" },
      { key: "since", label: "Duration", render: (c) => (c.started_at ? fmtSeconds(now - c.started_at) : "") },
      ...(canMonitor ? [{ key: "monitor", label: "Monitor", render: monitorButtons }] : []),
    ], callRows, { testid: "call-table", rowId: (c) => c.linkedid }));
  }

  const unsubscribe = stream.subscribe((event) => {
    if (event.type === "snapshot") {
      calls.clear();
      for (const c of event.data.calls || []) calls.set(c.linkedid, c);
      queues = event.data.queues || {};
      draw();
      refresh();
    } else if (event.type === "call") {
      const call = event.data.call;
      if (event.data.kind === "call_ended") calls.delete(event.linkedid);
      else if (call) calls.set(event.linkedid, { ...calls.get(event.linkedid), ...call, last: event.data.kind });
      refresh();
    } else if (event.type === "status") {
      refresh();
    }
  });
  // Show the tracker's state at once; later events keep it current.
  const now = await api.get("/calls").catch(() => null);
  if (now) for (const c of now.live) if (!calls.has(c.linkedid)) calls.set(c.linkedid, c);
  await refresh();
  const ticker = setInterval(drawQueues, 1000);  // the longest-wait clock
  return () => { unsubscribe(); clearInterval(ticker); };
}

function callState(call) {
  if (call.agent) return "talking";
  if (call.queue) return "waiting";
  return call.last === "ivr_decided" ? "routing" : "in IVR";
}
