// The console shell: login with a token, role-aware navigation, hash routing.
// The nav only hides what a role cannot use; the server refuses it anyway (403).

import { Api, ApiError, EventStream } from "./api.js";
import { h, replace } from "./dom.js";

export const PAGES = [
  { id: "wallboard", title: "Wallboard", roles: ["supervisor", "qa", "admin"] },
  { id: "agent", title: "My calls", roles: ["agent"] },
  { id: "recordings", title: "Recordings", roles: ["supervisor", "qa", "admin"] },
  { id: "surveys", title: "Surveys", roles: ["supervisor", "qa", "admin"] },
  { id: "testcalls", title: "Test calls", roles: ["supervisor", "qa", "admin"] },
  { id: "editor", title: "Hotline editor", roles: ["admin"] },
  { id: "reports", title: "Reports", roles: ["supervisor", "admin", "agent"] },
];

const STORAGE_KEY = "hotline-console-token";
const state = { api: null, me: null, stream: null, cleanup: null };

function allowed(me) {
  return PAGES.filter((p) => p.roles.includes(me.role));
}

async function login(token) {
  const api = new Api(token);
  const me = await api.get("/whoami");
  sessionStorage.setItem(STORAGE_KEY, token);
  state.api = api;
  state.me = me;
  state.stream = new EventStream(token, (s) => {
    const badge = document.getElementById("stream-state");
    badge.textContent = s;
    badge.dataset.state = s;
  });
  state.stream.start();
  window.hotlineConsole = { stream: state.stream, me };  // for diagnostics (and the browser tests)
  document.getElementById("login").hidden = true;
  document.getElementById("logout").hidden = false;
  replace(document.getElementById("who"), `${me.user} (${me.role}${me.agent ? ` ${me.agent}` : ""})`);
  replace(document.getElementById("nav"),
    allowed(me).map((p) => h("a", { href: `#/${p.id}`, "data-page": p.id }, p.title)));
  if (!window.location.hash) window.location.hash = `#/${allowed(me)[0].id}`;
  await route();
}

function logout() {
  sessionStorage.removeItem(STORAGE_KEY);
  if (state.stream) state.stream.stop();
  window.location.hash = "";
  window.location.reload();
}

async function route() {
  if (!state.me) return;
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  const id = (window.location.hash.match(/^#\/([a-z]+)/) || [])[1] || allowed(state.me)[0].id;
  const page = PAGES.find((p) => p.id === id);
  const main = document.getElementById("page");
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === id);
  const root = h("section", { id: `page-${id}`, "data-testid": `page-${id}` });
  replace(main, root);
  if (!page || !page.roles.includes(state.me.role)) {
    replace(root, h("div", { class: "error", role: "alert", "data-testid": "not-allowed" },
      `The role ${state.me.role} may not open this page.`));
    return;
  }
  root.append(h("h1", {}, page.title));
  const module = await import(`./${id}.js`);
  state.cleanup = (await module.render({ api: state.api, me: state.me, stream: state.stream }, root)) || null;
}

function start() {
  const form = document.getElementById("login");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = document.getElementById("login-error");
    error.textContent = "";
    try {
      await login(document.getElementById("token").value.trim());
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? "This token is not valid." : `Login failed: ${err.message}`;
    }
  });
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (saved) login(saved).catch(() => { sessionStorage.removeItem(STORAGE_KEY); form.hidden = false; });
  else form.hidden = false;
}

start();
