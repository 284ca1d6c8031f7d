// A WebSocket stand-in that the relay.js tests play the server with (tests/e2e/test_relay_js.py).

export class FakeSocket {
  static all = [];

  static last() {
    return FakeSocket.all.at(-1);
  }

  constructor(url, protocol) {
    this.url = url;
    this.requested = protocol;
    this.protocol = "";
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.all.push(this);
  }

  /** The query parameters relay.js connected with. */
  get query() {
    return Object.fromEntries(new URL(this.url).searchParams);
  }

  send(text) {
    if (this.readyState !== 1) throw new DOMException("not open", "InvalidStateError");
    this.sent.push(JSON.parse(text));
  }

  /** A close by relay.js itself: recorded. */
  close(code, reason) {
    this.closedWith = [code ?? null, reason ?? null];
    this.readyState = 3;
  }

  // What the server does:

  accept(protocol = "relay.v1") {
    this.protocol = protocol;
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame) {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  serverClose(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** A refused handshake or a server that is down, as a browser shows both: 1006 before open. */
  refuse() {
    this.serverClose(1006);
  }

  /** The frames relay.js sent that are not pings. */
  frames() {
    return this.sent.filter((frame) => frame.type !== "ping");
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolve once `predicate()` is truthy (checked every 5 ms), with its value; reject after `timeout`. */
export async function waitFor(predicate, timeout = 3000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`waitFor timed out: ${predicate}`);
    await sleep(5);
  }
}

/**
 * A RelayClient on FakeSocket that records its events: {client, events, socket(), next()}.
 * `next()` waits for the next socket relay.js opens.
 */
export function harness(relay, options = {}) {
  const events = [];
  const client = new relay.RelayClient({ url: "ws://relay.test/ws", WebSocket: FakeSocket, storage: null, ...options });
  for (const type of ["connecting", "open", "reconnecting", "closed", "message", "recovered", "error"]) {
    client.on(type, (detail) => events.push([type, detail]));
  }
  let seen = FakeSocket.all.length;
  const next = async () => {
    const socket = await waitFor(() => FakeSocket.all.length > seen && FakeSocket.all[seen]);
    seen += 1;
    return socket;
  };
  const of = (type) => events.filter(([kind]) => kind === type).map(([, detail]) => detail);
  return { client, events, next, of };
}
