// Types of relay.js, the relay's browser client (relay.v1). See the README, "The JavaScript client".

/** Any JSON value. */
export type JSONValue = null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue };

/** A client id: 1-64 characters of A-Z a-z 0-9 _ . -; an integer means its decimal string. */
export type ClientId = string | number;

export declare const SUBPROTOCOL: "relay.v1";

export interface Tunables {
  /** First reconnect delay cap, ms (500); each attempt doubles it, up to backoffMax. */
  backoffMin: number;
  /** Largest reconnect delay, ms (20000). */
  backoffMax: number;
  /** A connection open this long resets the backoff, ms (10000). */
  stableAfter: number;
  /** A ping every this many ms while open (25000). */
  pingInterval: number;
  /** No answer this long after a ping: the connection is dead, ms (10000). */
  pongTimeout: number;
  /** send() and call() settle within this many ms (10000). */
  timeout: number;
  /** Frames that may wait for a connection (100); more are rejected with "queue_full". */
  queueSize: number;
  /** Closes before open in a row after which relay.js checks whether the server refuses (2). */
  refusedAfter: number;
  /** Close codes after which relay.js does not reconnect ([1008, 4401]: rate limit, logged out). */
  stopCodes: readonly number[];
}

export declare const DEFAULTS: Readonly<Tunables>;

export interface RelayOptions extends Partial<Tunables> {
  /** The endpoint; default ws(s)://<the page's host>/ws. */
  url?: string;
  /** A token, or a function giving one (or a Promise of one) before every connection; null stops. */
  token?: string | (() => string | null | undefined | Promise<string | null | undefined>);
  /** The development ?id= (only where the server allows it). Without token and id: the session cookie. */
  id?: ClientId;
  /** Where positions are kept (sessionStorage); null keeps them in memory only. */
  storage?: Pick<Storage, "getItem" | "setItem"> | null;
  /** The storage key of this client's position; default: the endpoint and the identity. */
  storageKey?: string;
  /** The WebSocket class (the global one), e.g. the ws package's outside a browser. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  /** fetch (the global one), for the refused-handshake check. */
  fetch?: typeof fetch;
  /** A random number in [0, 1) (Math.random), for the jitter. */
  random?: () => number;
}

export interface Position {
  epoch: string;
  offset: number;
}

export interface Delivery {
  /** The sender's client id; null for a server push. */
  from: string | null;
  payload: JSONValue;
  /** The delivery's place in this id's stream; null without delivery history. */
  offset: number | null;
  epoch: string | null;
}

export interface Recovered {
  /** true: nothing was missed; false: reload the application's state from the backend. */
  recovered: boolean;
  replayed: number;
  /** Why not: "no_position", "epoch_changed", "too_old", "history_off", "unavailable"; null if recovered. */
  reason: string | null;
  epoch: string | null;
  offset: number | null;
  /** true when noticed on an open connection (a new epoch), false at the end of a resume. */
  live: boolean;
}

export interface Sent {
  /** Per target, where the message went in its stream ({} without history). */
  offsets: Record<string, number>;
  /** One "forbidden" error per target the send policy refused (the others got the message). */
  forbidden: { code: "forbidden"; detail: string }[];
  /** One "unavailable" error per target whose Redis could not take it (the others got it): send again to those. */
  unavailable: { code: "unavailable"; detail: string; target: string }[];
}

export interface RelayEvents {
  connecting: { attempt: number };
  open: Record<string, never>;
  reconnecting: { delay: number; attempt: number; code: number | null; reason: string };
  closed: { code: number | null; reason: string; refused: boolean };
  message: Delivery;
  recovered: Recovered;
  error: { code: string; detail: string; ref: string | number | null };
}

export type RelayState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export declare class RelayError extends Error {
  constructor(
    code: string,
    detail: string,
    options?: { ref?: string | number | null; errors?: { code: string; detail: string; target?: string }[] },
  );
  /** The relay's error code ("forbidden", "rate_limited", ...) or relay.js's own: "timeout",
   * "disconnected", "queue_full", "closed", "refused", "invalid_message". */
  readonly code: string;
  readonly detail: string;
  readonly ref: string | number | null;
  /** For a send no target got ("forbidden", "unavailable"): one error per target. */
  readonly errors: { code: string; detail: string; target?: string }[];
}

export declare class RelayClient {
  constructor(options?: RelayOptions);
  readonly state: RelayState;
  readonly position: Position | null;
  on<K extends keyof RelayEvents>(type: K, listener: (detail: RelayEvents[K]) => void): () => void;
  off<K extends keyof RelayEvents>(type: K, listener: (detail: RelayEvents[K]) => void): void;
  open(): Promise<void>;
  close(code?: number, reason?: string): void;
  drop(): void;
  send(targets: ClientId | ClientId[], payload?: JSONValue, options?: { timeout?: number }): Promise<Sent>;
  call<T = JSONValue>(name: string, payload?: JSONValue, options?: { timeout?: number }): Promise<T>;
}

export declare function normalizeClientId(value: unknown): string | null;
export declare function backoffDelay(attempt: number, min?: number, max?: number, random?: () => number): number;
export declare function defaultUrl(): string;
