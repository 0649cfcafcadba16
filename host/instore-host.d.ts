// Types of instore-host.js — the host app's half of embedding commercetools InStore.

/** `mistStatus` detail (documented): the process and its outcome; `message` when status is `error`. */
export interface MistStatusDetail {
  process: "checkout" | "refund" | "deviceregistration" | "cashmanagement";
  status: "success" | "cancelled" | "error" | "activated";
  message?: string;
  [extra: string]: unknown;
}

/** `inStoreCore-Alert` detail: a localized message for a toast (a string, or an object with `message`). */
export type AlertDetail = string | { message: string; [extra: string]: unknown };

/** `inStoreCore-receiptChoice` detail: print, email or SMS (a string, or an object). */
export type ReceiptChoiceDetail = string | { [key: string]: unknown };

export interface Session {
  userAccessToken: string;
  userKey: string;
  /** RFC 3339 UTC */
  expiresAt: string;
}

export interface InStoreHostOptions {
  /** The integration gateway, e.g. https://instore-integration.example.com */
  gatewayUrl: string;
  /** The colleague's token from your identity system (IMS), fresh for each call. */
  getImsToken: () => string | Promise<string>;
  /** The cart InStore is working on, attached to each forwarded event (optional). */
  getCartId?: () => string | undefined;
  onStatus?: (detail: MistStatusDetail, event: Event) => void;
  onAlert?: (detail: AlertDetail, event: Event) => void;
  onReceiptChoice?: (detail: ReceiptChoiceDetail, event: Event) => void;
  /** A batch the gateway refused, or one given up after retries. */
  onError?: (error: Error) => void;
  /** Where the events are dispatched; default globalThis (window). */
  target?: EventTarget;
  /** Default globalThis.fetch. */
  fetch?: typeof fetch;
  sleep?: (ms: number) => Promise<void>;
  /** Events per POST /host/events (default 20; the gateway accepts HOST_EVENTS_MAX_BATCH, default 50). */
  batchSize?: number;
  /** How long an event waits for others before a batch is sent, ms (default 1000). */
  flushIntervalMs?: number;
  /** Tries per batch on network errors, 408, 429 and 5xx (default 6), with jittered doubling backoff. */
  maxAttempts?: number;
  /** First backoff, ms (default 250). */
  backoffMs?: number;
  /** Most events kept while the gateway is unreachable; the oldest are dropped beyond (default 500). */
  maxQueue?: number;
}

export interface InStoreHost {
  /** POST /sessions: the user access token and the user key InStore will present to the token callback. */
  startSession(locationId: string, workstationId: string): Promise<Session>;
  /** Listen for InStore's window events (and page hide). */
  start(): void;
  /** Stop listening. */
  stop(): void;
  /** Send what is queued now. */
  flush(): Promise<void>;
  readonly session: Session | null;
  /** Events not yet stored by the gateway. */
  readonly pending: number;
}

export declare const EVENT_TYPES: readonly ["mistStatus", "inStoreCore-Alert", "inStoreCore-receiptChoice"];
export declare function createInStoreHost(options: InStoreHostOptions): InStoreHost;
