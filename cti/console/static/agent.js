// The agent's screen pop: the ringing call's customer card (who, where, what is
// installed since when, repair history), kept until the call ends.

import { fmtTime, h, replace, table } from "./dom.js";

export async function render({ api, me, stream }, root) {
  const status = h("p", { class: "call-state", "data-testid": "call-state" }, "Waiting for a call.");
  const cardBox = h("div", { "data-testid": "screen-pop" });
  const history = h("ul", { "data-testid": "pop-history", class: "history" });
  root.append(h("p", {}, `Agent ${me.agent}: the card of the call ringing on your phone appears here.`),
    status, cardBox, h("h2", {}, "Earlier calls this session"), history);
  let current = null;

  function show(linkedid, call, customer, state) {
    current = linkedid;
    replace(status, `${state}: ${call.caller_num || "unknown number"}${call.queue ? ` (queue ${call.queue})` : ""}`);
    status.dataset.state = state;
    replace(cardBox, customerView(customer, call));
  }

  const unsubscribe = stream.subscribe(async (event) => {
    if (event.type === "screen_pop") {
      show(event.linkedid, event.data.call, event.data.customer, "ringing");
    } else if (event.type === "call_update" && event.linkedid === current) {
      const state = event.data.state;
      const label = { answered: "in call", answered_elsewhere: "answered by a colleague", missed: "missed",
        transferred: "transferred", ended: `ended (${event.data.outcome || ""})` }[state] || state;
      replace(status, `${label}: ${event.data.call.caller_num || ""}`);
      status.dataset.state = state;
      if (["ended", "answered_elsewhere", "missed"].includes(state)) {
        history.prepend(h("li", {}, `${fmtTime(event.at)} ${event.data.call.caller_num || ""} ${label}`));
      }
    } else if (event.type === "snapshot") {
      // A call already ringing when the page opened: look its caller up now.
      const ringing = (event.data.calls || []).find((c) => !c.agent || c.agent === me.agent);
      if (ringing && current === null && ringing.caller_num) {
        const customer = await api.get("/customers/lookup", { number: ringing.caller_num })
          .catch((err) => ({ status: "error", cards: [], error: err.message }));
        show(ringing.linkedid, ringing, customer, ringing.agent ? "in call" : "ringing");
      }
    }
  });
  return unsubscribe;
}

export function customerView(customer, call) {
  const kind = customer ? customer.status : "unknown";
  if (kind === "match") return card(customer.cards[0]);
  if (kind === "several") {
    const box = h("div", { class: "several", "data-testid": "several-matches" },
      h("p", { class: "warning" }, `Several customers share ${call.caller_num}: ask the caller who they are.`));
    const chosen = h("div");
    box.append(h("ul", {}, customer.cards.map((c) => h("li", {},
      h("button", { type: "button", onclick: () => replace(chosen, card(c)) }, c.name),
      ` ${c.address || ""}`))), chosen);
    return box;
  }
  const text = {
    unknown: `Unknown caller ${call.caller_num || ""}: no customer with this number.`,
    invalid: `The number ${call.caller_num || "(none)"} is not a valid phone number.`,
    error: `The customer lookup failed${customer && customer.error ? `: ${customer.error}` : ""}.`,
  }[kind] || `No customer card (${kind}).`;
  return h("div", { class: "unknown", "data-testid": "unknown-caller" }, text);
}

function card(c) {
  return h("article", { class: "card", "data-testid": "customer-card" },
    h("h2", { "data-testid": "customer-name" }, c.name, c.vip ? h("span", { class: "badge vip" }, "VIP") : null,
      c.open_repair ? h("span", { class: "badge warn", "data-testid": "open-repair" }, "open repair") : null),
    h("p", { "data-testid": "customer-address" }, c.address || [c.province, c.city, c.district, c.street].join(" ")),
    h("p", { class: "note" }, `Customer ${c.customer_no}${c.language ? ` · language ${c.language}` : ""}`),
    c.notes ? h("p", { class: "note" }, c.notes) : null,
    h("h3", {}, "Products"),
    table([
      { key: "model", label: "Model" }, { key: "serial", label: "Serial" },
      { key: "installed_on", label: "Installed" }, { key: "installer", label: "Installer" },
      { key: "days_since_install", label: "Days since" },
    ], c.products || [], { testid: "products" }),
    h("h3", {}, "Service orders (repair history)"),
    table([
      { key: "kind", label: "Kind" }, { key: "status", label: "Status" },
      { key: "opened_at", label: "Opened", render: (o) => fmtTime(o.opened_at) },
      { key: "product_model", label: "Product" }, { key: "fault_description", label: "Fault" },
      { key: "technician", label: "Technician" },
    ], c.service_orders || [], { testid: "service-orders" }),
    (c.recent_contacts || []).length ? h("h3", {}, "Recent contacts") : null,
    (c.recent_contacts || []).length ? h("ul", {}, c.recent_contacts.map((r) =>
      h("li", {}, `${fmtTime(r.at)} ${r.kind} ${r.summary || ""}`))) : null);
}
