// instore-host.js — the host app's half of embedding commercetools InStore (no dependencies, an ES module).
//
// It opens the colleague's session at the integration gateway (POST /sessions with the IMS token),
// listens for the window events InStore's federated component dispatches — `mistStatus`,
// `inStoreCore-Alert`, `inStoreCore-receiptChoice` (documented: ../shared/reference/instore-contract.md §8)
// — hands each to your callback, and forwards them in batches to POST /host/events with retry
// and backoff. On page hide it flushes what is left with `fetch(..., {keepalive: true})`:
// `navigator.sendBeacon` cannot send the Authorization and X-User-Key headers the gateway
// requires, and keepalive requests survive the page's unload just as beacons do.
//
// The browser holds only the user access token and the user key of its own session: no API key,
// webhook secret, connection key or client secret ever reaches it.

export const EVENT_TYPES = Object.freeze(["mistStatus", "inStoreCore-Alert", "inStoreCore-receiptChoice"]);

const RETRYABLE = (status) => status === 408 || status === 429 || status >= 500;

function newId() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === "function") return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

/**
 * @param {import("./instore-host").InStoreHostOptions} options
 * @returns {import("./instore-host").InStoreHost}
 */
export function createInStoreHost(options) {
  const gatewayUrl = String(options.gatewayUrl || "").replace(/\/+$/, "");
  if (!gatewayUrl) throw new TypeError("gatewayUrl is required");
  if (typeof options.getImsToken !== "function") throw new TypeError("getImsToken is required");
  const target = options.target ?? globalThis;
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
  const batchSize = options.batchSize ?? 20;
  const flushIntervalMs = options.flushIntervalMs ?? 1000;
  const maxAttempts = options.maxAttempts ?? 6;
  const backoffMs = options.backoffMs ?? 250;
  const maxQueue = options.maxQueue ?? 500;

  let session = null;
  let imsToken = null;
  let queue = [];
  let timer = null;
  let sending = null;
  const listeners = [];

  const callbacks = {
    mistStatus: options.onStatus,
    "inStoreCore-Alert": options.onAlert,
    "inStoreCore-receiptChoice": options.onReceiptChoice,
  };

  function report(error) {
    if (typeof options.onError === "function") options.onError(error);
  }

  async function startSession(locationId, workstationId) {
    imsToken = await options.getImsToken();
    const response = await doFetch(`${gatewayUrl}/sessions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${imsToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ locationId, workstationId }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(`POST /sessions answered ${response.status}: ${body.detail || body.title || ""}`.trim());
      error.status = response.status;
      error.problem = body;
      throw error;
    }
    session = { userAccessToken: body.userAccessToken, userKey: body.userKey, expiresAt: body.expiresAt };
    return session;
  }

  function enqueue(type, detail) {
    const cartId = typeof options.getCartId === "function" ? options.getCartId() : undefined;
    const event = { id: newId(), type, detail: detail ?? null, occurredAt: new Date().toISOString() };
    if (cartId) event.cartId = cartId;
    queue.push(event);
    if (queue.length > maxQueue) queue = queue.slice(queue.length - maxQueue); // the oldest go first
    if (queue.length >= batchSize) void flush();
    else if (timer === null && flushIntervalMs > 0) timer = setTimeout(() => { timer = null; void flush(); }, flushIntervalMs);
  }

  function onEvent(event) {
    const callback = callbacks[event.type];
    if (typeof callback === "function") {
      try { callback(event.detail, event); } catch (error) { report(error); }
    }
    enqueue(event.type, event.detail);
  }

  function headers() {
    return { Authorization: `Bearer ${imsToken}`, "X-User-Key": session.userKey, "Content-Type": "application/json" };
  }

  async function send(batch, keepalive) {
    for (let attempt = 1; ; attempt += 1) {
      let status = 0;
      try {
        const response = await doFetch(`${gatewayUrl}/host/events`, {
          method: "POST", headers: headers(), body: JSON.stringify({ events: batch }), keepalive,
        });
        status = response.status;
        if (response.ok) return true;
        if (!RETRYABLE(status)) {
          report(new Error(`POST /host/events refused the batch: ${status}`));
          return false; // a refusal: sending it again would not help
        }
      } catch (error) {
        if (attempt >= maxAttempts) { report(error); return false; }
      }
      if (attempt >= maxAttempts || keepalive) {
        if (status) report(new Error(`POST /host/events answered ${status}`));
        return false;
      }
      const base = backoffMs * 2 ** (attempt - 1);
      await sleep(base / 2 + Math.random() * (base / 2)); // jittered, doubling
    }
  }

  async function flush(keepalive = false) {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (!session) return; // no session yet: events wait in the queue
    if (sending) { await sending; if (!queue.length) return; }
    const run = async () => {
      while (queue.length) {
        const batch = queue.slice(0, batchSize);
        const ok = await send(batch, keepalive);
        queue = queue.slice(batch.length); // sent, or given up (reported): do not block the rest
        if (!ok && keepalive) break;
      }
    };
    sending = run().finally(() => { sending = null; });
    await sending;
  }

  function onPageHide() { void flush(true); }
  function onVisibility() { if (globalThis.document && globalThis.document.visibilityState === "hidden") void flush(true); }

  function start() {
    for (const type of EVENT_TYPES) {
      target.addEventListener(type, onEvent);
      listeners.push([target, type, onEvent]);
    }
    target.addEventListener("pagehide", onPageHide);
    listeners.push([target, "pagehide", onPageHide]);
    if (globalThis.document && typeof globalThis.document.addEventListener === "function") {
      globalThis.document.addEventListener("visibilitychange", onVisibility);
      listeners.push([globalThis.document, "visibilitychange", onVisibility]);
    }
  }

  function stop() {
    for (const [where, type, fn] of listeners.splice(0)) where.removeEventListener(type, fn);
    if (timer !== null) { clearTimeout(timer); timer = null; }
  }

  return {
    startSession,
    start,
    stop,
    flush: () => flush(false),
    get session() { return session; },
    get pending() { return queue.length; },
  };
}
