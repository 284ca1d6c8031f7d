/**
 * relay.js: the browser client of the relay (django-relay), an ES module with no dependencies.
 *
 *     import { RelayClient } from "/static/relay/relay.js";
 *     const relay = new RelayClient();            // the page's session; or {token: () => fetchToken()}
 *     relay.on("message", (m) => console.log(m.from, m.payload));
 *     await relay.open();
 *     const { offsets } = await relay.send(["bob"], { text: "hi" });
 *
 * It always speaks the relay.v1 subprotocol. What it does for you (README, "The JavaScript
 * client"): reconnects with full-jitter exponential backoff, resumes each id's stream with
 * ?since=<epoch>:<offset> (kept in sessionStorage), drops duplicates by offset and reconnects
 * on a gap, pings to notice a dead connection, settles send() on its ack and call() on its
 * reply, and queues what is sent while it is disconnected.
 */

export const SUBPROTOCOL = "relay.v1";

/** The defaults of every option; times are in milliseconds. */
export const DEFAULTS = Object.freeze({
  backoffMin: 500,
  backoffMax: 20000,
  stableAfter: 10000,
  pingInterval: 25000,
  pongTimeout: 10000,
  timeout: 10000,
  queueSize: 100,
  refusedAfter: 2,
  // 1008: kept sending over the rate limit; 4401: the user logged out of the site (the
  // sockets of that session are closed, and its cookie would be refused anyway).
  stopCodes: Object.freeze([1008, 4401]),
});

const CLIENT_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const LOGGED_OUT = 4401; // the relay closes a session's sockets with it when the user logs out
const OPEN = 1; // WebSocket.OPEN, without needing the WebSocket class

/** An error the relay answered (its code: "forbidden", "rate_limited", ...) or one of relay.js's own. */
export class RelayError extends Error {
  constructor(code, detail, { ref = null, errors = [] } = {}) {
    super(`${code}: ${detail}`);
    this.name = "RelayError";
    this.code = code;
    this.detail = detail;
    this.ref = ref;
    this.errors = errors;
  }
}

/** The client id that `value` names, as the server reads it (2 and "2" are one id); null if none. */
export function normalizeClientId(value) {
  if (typeof value === "number" && Number.isSafeInteger(value)) value = String(value);
  return typeof value === "string" && CLIENT_ID.test(value) ? value : null;
}

/**
 * How long to wait before reconnect number `attempt` (0, 1, ...): full jitter, a uniform
 * draw in [0, min(max, min * 2^attempt)], so that clients dropped together do not return
 * together.
 */
export function backoffDelay(attempt, min = DEFAULTS.backoffMin, max = DEFAULTS.backoffMax, random = Math.random) {
  return random() * Math.min(max, min * 2 ** attempt);
}

/** The relay endpoint of the page's own site: ws(s)://<host>/ws. */
export function defaultUrl() {
  if (typeof location === "undefined") throw new TypeError("relay.js: pass options.url outside a browser page");
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

function subjectOf(token) {
  // The id a token proves, for the storage key only (the server checks the signature).
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return String(JSON.parse(atob(part)).sub);
  } catch {
    return "token";
  }
}

/** The error of a send that no target got; `errors` has one per target. */
function notSent(errors, ref) {
  if (errors.every((error) => error.code === "forbidden")) {
    return new RelayError("forbidden", "every target was forbidden", { ref, errors });
  }
  if (errors.length === 1) return new RelayError(errors[0].code, errors[0].detail, { ref, errors });
  return new RelayError("unavailable", "no target got the message", { ref, errors });
}

function report(error) {
  // A listener's bug must not break the client: report it as an uncaught error would be.
  if (typeof reportError === "function") reportError(error);
  else setTimeout(() => { throw error; });
}

function defaultStorage() {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null; // storage disabled: positions live in memory only
  }
}

export class RelayClient {
  #options;
  #WebSocket;
  #storage;
  #listeners = new Map();
  #state = "idle";
  #ws = null;
  #generation = 0; // bumped when a socket is given up: late callbacks of older ones are ignored
  #stopped = true;
  #attempt = 0;
  #closesBeforeOpen = 0;
  #goingAway = false;
  #openedAt = 0;
  #reconnectTimer = null;
  #pingTimer = null;
  #pongTimer = null;
  #awaitingPong = null;
  #pings = 0;
  #nextId = 1;
  #pending = new Map();
  #queue = [];
  #openWaiters = [];
  #identity = null;
  #position = null;

  /**
   * @param {object} [options] url, token (a string, or a function returning one or a Promise of
   *   one; called before every connection; null stops), id (the development ?id=), and the
   *   tunables of DEFAULTS; storage, storageKey, WebSocket, fetch and random for other hosts.
   */
  constructor(options = {}) {
    this.#options = { ...DEFAULTS, ...options };
    this.#options.url = options.url ?? defaultUrl();
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#storage = options.storage === undefined ? defaultStorage() : options.storage;
    if (options.token === undefined && options.id !== undefined && normalizeClientId(options.id) === null) {
      throw new TypeError(`relay.js: ${JSON.stringify(options.id)} is not a client id`);
    }
  }

  /** "idle", "connecting", "open", "reconnecting" or "closed". */
  get state() {
    return this.#state;
  }

  /** The stream position of the last delivery seen, {epoch, offset}, or null. */
  get position() {
    return this.#position && { ...this.#position };
  }

  /** Listen to "connecting", "open", "reconnecting", "closed", "message", "recovered" or "error"; returns off(). */
  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  /** Stop calling `listener` for `type`. */
  off(type, listener) {
    this.#listeners.get(type)?.delete(listener);
  }

  /**
   * Connect (and keep reconnecting until close()). Resolves when a connection is open;
   * rejects with a RelayError "refused" (the handshake, or no token) or "closed" (1008,
   * close()) if the client closes for good first.
   */
  open() {
    if (this.#state === "open") return Promise.resolve();
    const opened = new Promise((resolve, reject) => this.#openWaiters.push({ resolve, reject }));
    opened.catch(() => {}); // a caller that does not await open() gets no unhandled rejection
    if (this.#stopped) {
      this.#stopped = false;
      this.#attempt = 0;
      this.#closesBeforeOpen = 0;
      this.#goingAway = false;
      this.#connect();
    }
    return opened;
  }

  /** Close for good (until open() again): what is queued or awaiting an answer is rejected. */
  close(code = 1000, reason = "") {
    const ws = this.#ws;
    if (ws) {
      this.#release(ws);
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    this.#finish({ code, reason, refused: false });
  }

  /** Lose the connection as a network failure would (for demos and tests): relay.js reconnects. */
  drop() {
    if (this.#ws) this.#lost(1006, "dropped by drop()");
  }

  /**
   * Send `payload` to every connection of each target. Resolves with {offsets, forbidden,
   * unavailable} on the relay's ack (offsets: where it went in each target's stream;
   * forbidden: the errors of targets the send policy refused; unavailable: the errors of
   * targets whose Redis could not take it, each naming its `target`: send it again to those
   * only), rejects with a RelayError on the frame's error, when no target got it (errors: one
   * per target), on timeout, or when the connection is lost before the ack.
   */
  send(targets, payload = null, { timeout } = {}) {
    const list = Array.isArray(targets) ? targets : [targets];
    const distinct = new Set(list.map((target) => normalizeClientId(target) ?? target));
    const id = this.#nextId++;
    return this.#request({ targets: list, payload, id }, { id, kind: "send", targets: distinct }, timeout);
  }

  /** Call the function the site registered as `name` (@relay.rpc); resolves with what it returned. */
  call(name, payload = null, { timeout } = {}) {
    const id = this.#nextId++;
    return this.#request({ call: name, payload, id }, { id, kind: "call" }, timeout);
  }

  // --- events and state ------------------------------------------------------------

  #emit(type, detail) {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        listener(detail);
      } catch (error) {
        report(error);
      }
    }
  }

  #setState(state, detail = {}) {
    this.#state = state;
    this.#emit(state, detail);
  }

  // --- connecting ------------------------------------------------------------------

  async #connect() {
    const generation = ++this.#generation;
    this.#setState("connecting", { attempt: this.#attempt });
    let url;
    try {
      url = await this.#url();
    } catch (error) {
      if (generation !== this.#generation || this.#stopped) return;
      this.#emit("error", { code: "token_failed", detail: String(error?.message ?? error), ref: null });
      this.#scheduleReconnect(null, "the token callback failed");
      return;
    }
    if (generation !== this.#generation || this.#stopped) return;
    if (url === null) {
      this.#finish({ code: null, reason: "the token callback gave no token", refused: true });
      return;
    }
    let ws;
    try {
      ws = new this.#WebSocket(url, SUBPROTOCOL);
    } catch (error) {
      this.#finish({ code: null, reason: String(error?.message ?? error), refused: true });
      return;
    }
    this.#ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (ws.protocol !== SUBPROTOCOL) {
        this.#emit("error", { code: "protocol", detail: `the server did not accept ${SUBPROTOCOL}`, ref: null });
        this.close(1002, "relay.v1 needed");
        return;
      }
      opened = true;
      this.#opened(ws);
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") this.#receive(event.data);
    };
    ws.onerror = () => {}; // a close follows, and says more
    ws.onclose = (event) => {
      if (this.#ws === ws) this.#closed(event.code, event.reason, opened);
    };
  }

  async #url() {
    const url = new URL(this.#options.url, typeof location === "undefined" ? undefined : location.href);
    let identity;
    if (this.#options.token !== undefined) {
      const source = this.#options.token;
      const token = typeof source === "function" ? await source() : source;
      if (token === null || token === undefined || token === "") return null;
      url.searchParams.set("token", token);
      identity = `sub:${subjectOf(token)}`;
    } else if (this.#options.id !== undefined) {
      identity = normalizeClientId(this.#options.id);
      url.searchParams.set("id", identity);
      identity = `id:${identity}`;
    } else {
      identity = "session"; // the cookie says who: the server knows, the page may not
    }
    if (identity !== this.#identity) {
      this.#identity = identity;
      this.#position = this.#load(); // another id's stream: its own position
    }
    const position = this.#position;
    url.searchParams.set("since", position ? `${position.epoch}:${position.offset}` : "");
    return url.toString();
  }

  #opened(ws) {
    this.#openedAt = Date.now();
    this.#closesBeforeOpen = 0;
    this.#goingAway = false;
    this.#setState("open", {});
    for (const waiter of this.#openWaiters.splice(0)) waiter.resolve();
    this.#pingTimer = setInterval(() => this.#ping(ws), this.#options.pingInterval);
    for (const entry of this.#queue.splice(0)) this.#write(entry);
  }

  #closed(code, reason, opened) {
    this.#release(this.#ws);
    if (opened) {
      if (code === LOGGED_OUT) this.#remember(null); // whoever logs in next in this tab is someone else
      if (this.#options.stopCodes.includes(code)) {
        this.#finish({ code, reason, refused: false });
        return;
      }
      if (code === 1001) this.#goingAway = true; // a proxy may refuse handshakes until the server is back
      this.#scheduleReconnect(code, reason);
      return;
    }
    this.#closesBeforeOpen += 1;
    if (this.#goingAway || this.#closesBeforeOpen < this.#options.refusedAfter) {
      this.#scheduleReconnect(code, reason);
      return;
    }
    // A browser shows a refused handshake (403) and a server that is down alike: closed
    // before open. One HTTP request tells them apart: a readable answer under 500 means
    // the server is up (and refused); no answer, a 5xx from a proxy, or an answer it
    // cannot read (another origin's, opaque) means it may be down: keep trying.
    const generation = this.#generation;
    this.#probe().then((answered) => {
      if (generation !== this.#generation || this.#stopped) return;
      if (answered) this.#finish({ code, reason: "the server refused the handshake", refused: true });
      else this.#scheduleReconnect(code, reason);
    });
  }

  async #probe() {
    const fetch = this.#options.fetch ?? globalThis.fetch;
    if (typeof fetch !== "function") return false;
    const url = new URL(this.#options.url, typeof location === "undefined" ? undefined : location.href);
    url.protocol = url.protocol === "wss:" || url.protocol === "https:" ? "https:" : "http:";
    url.search = ""; // no token in anyone's logs
    try {
      const response = await fetch(url.toString(), { mode: "no-cors", cache: "no-store", credentials: "omit" });
      // Another origin's answer is opaque: a 502 from its proxy looks like any other.
      return response.type !== "opaque" && response.status < 500;
    } catch {
      return false; // no answer at all: unreachable, keep trying
    }
  }

  #scheduleReconnect(code, reason) {
    if (this.#openedAt && Date.now() - this.#openedAt >= this.#options.stableAfter) this.#attempt = 0;
    this.#openedAt = 0;
    const { backoffMin, backoffMax, random } = this.#options;
    const delay = backoffDelay(this.#attempt, backoffMin, backoffMax, random);
    this.#attempt += 1;
    this.#setState("reconnecting", { delay, attempt: this.#attempt, code, reason });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      this.#connect();
    }, delay);
  }

  /** Stop using `ws`: its late events are ignored, and what awaited its answers fails. */
  #release(ws) {
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (this.#ws === ws) this.#ws = null;
    this.#generation += 1;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    this.#awaitingPong = null;
    const lost = new RelayError(
      "disconnected",
      "the connection was lost before the answer: the frame may or may not have been relayed",
    );
    for (const entry of [...this.#pending.values()]) this.#settle(entry, null, lost);
  }

  /** Give the socket up as lost (no pong, a gap, drop()) and reconnect. */
  #lost(code, reason) {
    const ws = this.#ws;
    this.#release(ws);
    try {
      ws.close(); // without waiting: a dead connection's closing handshake never ends
    } catch {
      // already closing
    }
    this.#scheduleReconnect(code, reason);
  }

  #finish({ code, reason, refused }) {
    this.#stopped = true;
    this.#generation += 1;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    this.#release(this.#ws);
    const closed = refused ? new RelayError("refused", reason) : new RelayError("closed", "the client was closed");
    for (const entry of this.#queue.splice(0)) this.#settle(entry, null, closed);
    if (this.#state !== "closed") this.#setState("closed", { code, reason, refused });
    for (const waiter of this.#openWaiters.splice(0)) waiter.reject(closed);
  }

  // --- liveness --------------------------------------------------------------------

  #ping(ws) {
    if (this.#awaitingPong !== null || ws.readyState !== OPEN) return;
    const ref = `ping-${++this.#pings}`;
    this.#awaitingPong = ref;
    ws.send(JSON.stringify({ type: "ping", id: ref }));
    this.#pongTimer = setTimeout(() => {
      // Checked, not assumed: a throttled background tab may run this timer late.
      if (this.#awaitingPong === ref) this.#lost(1006, `no pong within ${this.#options.pongTimeout} ms`);
    }, this.#options.pongTimeout);
  }

  // --- frames ----------------------------------------------------------------------

  #receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.#emit("error", { code: "invalid_frame", detail: "the server sent a frame that is not JSON", ref: null });
      return;
    }
    // Anything the server sent after a ping shows the connection is alive.
    this.#awaitingPong = null;
    clearTimeout(this.#pongTimer);
    switch (frame?.type) {
      case "message":
        this.#delivery(frame);
        break;
      case "recovered":
        this.#recovered(frame);
        break;
      case "ack":
        this.#answer(frame, "send", { offsets: frame.offsets ?? {} });
        break;
      case "reply":
        this.#answer(frame, "call", frame.payload);
        break;
      case "error":
        this.#error(frame);
        break;
      default: // "pong", and kinds a newer server may add
    }
  }

  #delivery(frame) {
    const { offset, epoch } = frame;
    if (Number.isInteger(offset) && typeof epoch === "string") {
      const position = this.#position;
      if (position && position.epoch === epoch) {
        if (offset <= position.offset) return; // seen already: a replay overlapping what came live
        if (offset > position.offset + 1) {
          // Missed something on a live connection: resume from the last one seen.
          this.#lost(1006, `gap: offset ${offset} after ${position.offset}`);
          return;
        }
      } else if (position) {
        // A new epoch on a live connection: the stream was lost (Redis flushed or restarted).
        this.#emit("recovered", { recovered: false, replayed: 0, reason: "epoch_changed", epoch, offset, live: true });
      }
      this.#remember({ epoch, offset });
    }
    this.#emit("message", { from: frame.from ?? null, payload: frame.payload, offset: offset ?? null, epoch: epoch ?? null });
  }

  #recovered(frame) {
    if (typeof frame.epoch === "string" && Number.isInteger(frame.offset)) {
      this.#remember({ epoch: frame.epoch, offset: frame.offset });
    }
    this.#emit("recovered", {
      recovered: frame.recovered === true,
      replayed: frame.replayed ?? 0,
      reason: frame.reason ?? null,
      epoch: frame.epoch ?? null,
      offset: frame.offset ?? null,
      live: false,
    });
  }

  #answer(frame, kind, value) {
    const entry = this.#pending.get(frame.ref);
    if (entry && entry.kind === kind) {
      if (kind === "send") Object.assign(value, { forbidden: entry.forbidden, unavailable: entry.unavailable });
      this.#settle(entry, value, null);
    }
  }

  #error(frame) {
    const { code, detail = "", ref = null } = frame;
    const entry = ref === null ? undefined : this.#pending.get(ref);
    if (!entry) {
      this.#emit("error", { code, detail, ref });
      return;
    }
    const { target } = frame; // only on an error about one target of the frame
    if (entry.kind === "send" && (code === "forbidden" || typeof target === "string")) {
      // One per target the send policy refused or whose Redis is down, then the ack for the
      // others; with no target left, no ack.
      if (code === "forbidden") entry.forbidden.push({ code, detail });
      else entry.unavailable.push({ code, detail, target });
      const errors = [...entry.forbidden, ...entry.unavailable];
      if (errors.length < entry.targets.size) return;
      this.#settle(entry, null, notSent(errors, ref));
      return;
    }
    this.#settle(entry, null, new RelayError(code, detail, { ref }));
  }

  // --- requests (send, call) -------------------------------------------------------

  #request(frame, entry, timeout) {
    return new Promise((resolve, reject) => {
      if (this.#stopped && this.#state === "closed") {
        reject(new RelayError("closed", "the client is closed: open() it first"));
        return;
      }
      try {
        entry.text = JSON.stringify(frame);
      } catch (error) {
        reject(new RelayError("invalid_message", `the payload is not JSON: ${error.message}`));
        return;
      }
      Object.assign(entry, { resolve, reject, forbidden: [], unavailable: [], sent: false });
      const ms = timeout ?? this.#options.timeout;
      entry.timer = setTimeout(() => {
        const where = entry.sent ? "it may still have been relayed" : "it was never sent";
        this.#settle(entry, null, new RelayError("timeout", `no answer within ${ms} ms: ${where}`, { ref: entry.id }));
      }, ms);
      if (this.#state === "open" && this.#ws?.readyState === OPEN) {
        this.#write(entry);
      } else if (this.#queue.length >= this.#options.queueSize) {
        this.#settle(entry, null, new RelayError("queue_full", `${this.#queue.length} frames wait already`));
      } else {
        this.#queue.push(entry);
      }
    });
  }

  #write(entry) {
    entry.sent = true;
    this.#pending.set(entry.id, entry);
    this.#ws.send(entry.text);
  }

  #settle(entry, value, error) {
    clearTimeout(entry.timer);
    this.#pending.delete(entry.id);
    const queued = this.#queue.indexOf(entry);
    if (queued !== -1) this.#queue.splice(queued, 1);
    if (error) entry.reject(error);
    else entry.resolve(value);
  }

  // --- positions -------------------------------------------------------------------

  #key() {
    if (this.#options.storageKey) return this.#options.storageKey;
    const url = new URL(this.#options.url, typeof location === "undefined" ? undefined : location.href);
    return `relay.position ${url.origin}${url.pathname} ${this.#identity}`;
  }

  #load() {
    try {
      const saved = JSON.parse(this.#storage?.getItem(this.#key()) ?? "null");
      if (typeof saved?.epoch === "string" && Number.isInteger(saved?.offset)) return saved;
    } catch {
      // unreadable: start without a position
    }
    return null;
  }

  #remember(position) {
    this.#position = position;
    try {
      this.#storage?.setItem(this.#key(), JSON.stringify(position));
    } catch {
      // full or disabled: the position stays in memory
    }
  }
}
