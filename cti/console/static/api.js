// REST calls with the bearer token, and the CTI websocket with replay-since-seq.

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.errorId = body ? body.error_id : undefined;
    this.details = (body && body.details) || {};
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  url(path, params = {}) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
    }
    return url;
  }

  // A URL for elements that cannot send headers (<audio>): the token goes in the query.
  mediaUrl(path, params = {}) {
    return this.url(path, { ...params, token: this.token }).toString();
  }

  async request(method, path, { params, json, text, contentType } = {}) {
    const headers = { Authorization: `Bearer ${this.token}` };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (text !== undefined) {
      headers["Content-Type"] = contentType || "text/plain";
      body = text;
    }
    const resp = await fetch(this.url(path, params), { method, headers, body });
    const isJson = (resp.headers.get("Content-Type") || "").includes("json");
    const payload = isJson ? await resp.json() : await resp.text();
    if (!resp.ok) throw new ApiError(resp.status, isJson ? payload : { message: payload });
    return payload;
  }

  get(path, params) { return this.request("GET", path, { params }); }
  post(path, json, params) { return this.request("POST", path, { json, params }); }
  del(path) { return this.request("DELETE", path); }

  async download(path, params, filename) {
    const resp = await fetch(this.url(path, params), { headers: { Authorization: `Bearer ${this.token}` } });
    if (!resp.ok) throw new ApiError(resp.status, await resp.json().catch(() => null));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await resp.blob());
    link.download = filename;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }
}

// One websocket for the whole console. After a drop it reconnects with ?since=<last seq>
// so the server replays exactly what was missed (or sends a fresh snapshot if too old).
export class EventStream {
  constructor(token, onState) {
    this.token = token;
    this.onState = onState;
    this.lastSeq = null;
    this.listeners = new Set();
    this.ws = null;
    this.stopped = false;
    this.retry = 0;
    this.connects = 0;
    this.snapshots = 0;  // a replay (?since=) brings the missed events, not a new snapshot
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  connect() {
    const url = new URL("/ws", window.location.origin);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    if (this.lastSeq !== null) url.searchParams.set("since", String(this.lastSeq));
    const ws = new WebSocket(url);
    this.ws = ws;
    this.connects += 1;
    this.onState(this.lastSeq === null ? "connecting" : "replaying");
    ws.addEventListener("open", () => { this.retry = 0; this.onState("live"); });
    ws.addEventListener("message", (msg) => {
      const event = JSON.parse(msg.data);
      if (event.type === "lagged") return;  // the server closes next; we reconnect with since
      if (typeof event.seq === "number") this.lastSeq = event.seq;
      if (event.type === "snapshot") this.snapshots += 1;
      for (const fn of [...this.listeners]) {
        try { fn(event); } catch (err) { console.error("stream listener failed", err); }
      }
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      this.onState("reconnecting");
      const delay = Math.min(5000, 250 * 2 ** this.retry);
      this.retry += 1;
      setTimeout(() => { if (!this.stopped && this.ws === null) this.connect(); }, delay);
    });
  }

  // Close the socket as a network failure would (the console then replays what it missed).
  drop() {
    if (this.ws) this.ws.close();
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close();
    this.ws = null;
  }
}
