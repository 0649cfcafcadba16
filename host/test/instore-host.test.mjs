// Unit tests of instore-host.js with Node's test runner: `node --test host/`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createInStoreHost, EVENT_TYPES } from "../instore-host.js";

function fakeGateway(answers = []) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init, body: init.body ? JSON.parse(init.body) : undefined });
    if (url.endsWith("/sessions")) {
      return new Response(JSON.stringify({ userAccessToken: "uat", userKey: "k".repeat(43), expiresAt: "2030-01-01T00:00:00Z" }), { status: 201 });
    }
    const next = answers.length ? answers.shift() : 202;
    if (next instanceof Error) throw next;
    return new Response(JSON.stringify({ accepted: 1 }), { status: next });
  };
  return { calls, fetch };
}

function host(gateway, extra = {}) {
  const target = new EventTarget();
  const seen = { status: [], alert: [], receipt: [], errors: [] };
  const h = createInStoreHost({
    gatewayUrl: "https://gw.test/", getImsToken: () => "ims-token", target, fetch: gateway.fetch,
    sleep: async () => {}, flushIntervalMs: 0, getCartId: () => "cart-1",
    onStatus: (d) => seen.status.push(d), onAlert: (d) => seen.alert.push(d), onReceiptChoice: (d) => seen.receipt.push(d),
    onError: (e) => seen.errors.push(e), ...extra,
  });
  return { h, target, seen };
}

const fire = (target, type, detail) => target.dispatchEvent(new CustomEvent(type, { detail }));

test("the session is opened with the IMS token and the location and workstation", async () => {
  const gateway = fakeGateway();
  const { h } = host(gateway);
  const session = await h.startSession("store-berlin-01", "pos-3");
  assert.equal(session.userKey, "k".repeat(43));
  const [call] = gateway.calls;
  assert.equal(call.url, "https://gw.test/sessions");
  assert.equal(call.init.headers.Authorization, "Bearer ims-token");
  assert.deepEqual(call.body, { locationId: "store-berlin-01", workstationId: "pos-3" });
});

test("the three events reach their callbacks and are forwarded in one batch with the session headers", async () => {
  const gateway = fakeGateway();
  const { h, target, seen } = host(gateway);
  await h.startSession("s", "w");
  h.start();
  fire(target, "mistStatus", { process: "checkout", status: "success" });
  fire(target, "inStoreCore-Alert", { message: "Karte einstecken" });
  fire(target, "inStoreCore-receiptChoice", "email");
  fire(target, "somethingElse", {});
  assert.equal(seen.status[0].status, "success");
  assert.equal(seen.alert[0].message, "Karte einstecken");
  assert.equal(seen.receipt[0], "email");
  await h.flush();
  const posts = gateway.calls.filter((c) => c.url.endsWith("/host/events"));
  assert.equal(posts.length, 1);
  assert.deepEqual(posts[0].body.events.map((e) => e.type), EVENT_TYPES);
  assert.equal(posts[0].init.headers["X-User-Key"], "k".repeat(43));
  assert.equal(posts[0].init.headers.Authorization, "Bearer ims-token");
  assert.ok(posts[0].body.events.every((e) => e.cartId === "cart-1" && e.id && e.occurredAt));
  assert.equal(h.pending, 0);
});

test("a 503 and a network error are retried with the same event ids; a 422 is not", async () => {
  const gateway = fakeGateway([503, new TypeError("network down"), 202, 422]);
  const { h, target, seen } = host(gateway);
  await h.startSession("s", "w");
  h.start();
  fire(target, "mistStatus", { process: "checkout", status: "error", message: "declined" });
  await h.flush();
  const posts = gateway.calls.filter((c) => c.url.endsWith("/host/events"));
  assert.equal(posts.length, 3);
  assert.equal(new Set(posts.map((p) => p.body.events[0].id)).size, 1);
  fire(target, "inStoreCore-Alert", "x");
  await h.flush();
  assert.equal(gateway.calls.filter((c) => c.url.endsWith("/host/events")).length, 4);
  assert.equal(seen.errors.length, 1);
  assert.equal(h.pending, 0);
});

test("events before the session wait for it; page hide flushes with keepalive", async () => {
  const gateway = fakeGateway();
  const { h, target } = host(gateway);
  h.start();
  fire(target, "inStoreCore-Alert", "early");
  await h.flush();
  assert.equal(gateway.calls.length, 0);
  assert.equal(h.pending, 1);
  await h.startSession("s", "w");
  target.dispatchEvent(new Event("pagehide"));
  await new Promise((resolve) => setImmediate(resolve));
  await h.flush();
  const posts = gateway.calls.filter((c) => c.url.endsWith("/host/events"));
  assert.equal(posts.length, 1);
  assert.equal(posts[0].init.keepalive, true);
});

test("a full batch is sent at once, and stop() stops listening", async () => {
  const gateway = fakeGateway();
  const { h, target } = host(gateway, { batchSize: 2 });
  await h.startSession("s", "w");
  h.start();
  fire(target, "inStoreCore-Alert", "a");
  fire(target, "inStoreCore-Alert", "b");
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(gateway.calls.filter((c) => c.url.endsWith("/host/events")).length, 1);
  h.stop();
  fire(target, "inStoreCore-Alert", "c");
  assert.equal(h.pending, 0);
});

test("a refused session is an error carrying the problem", async () => {
  const fetch = async () => new Response(JSON.stringify({ title: "Unauthorized", detail: "the IMS token is not valid: expired" }), { status: 401 });
  const h = createInStoreHost({ gatewayUrl: "https://gw.test", getImsToken: () => "t", fetch, target: new EventTarget() });
  await assert.rejects(h.startSession("s", "w"), (error) => error.status === 401 && /expired/.test(error.message));
});
