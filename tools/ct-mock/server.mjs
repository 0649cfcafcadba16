#!/usr/bin/env node
// Local commercetools Composable Commerce stand-in built on
// @labdigital/commercetools-mock (pinned 4.4.0), strict mode, OAuth enforced.
//
//   node server.mjs [--port N] [--seed]
//
// env: CTP_MOCK_HOST (default 127.0.0.1), CTP_MOCK_PORT (default 8989; 0 = pick a free port), CTP_PROJECT_KEY
// (default instore-demo), CTP_MOCK_SEED=1 (same as --seed), CTP_MOCK_SHIMS=0
// (disable the draft-field shims below; raw mock behaviour).
//
// One port serves both:
//   auth: POST http://127.0.0.1:PORT/oauth/token   (Basic clientId:clientSecret,
//         form grant_type=client_credentials&scope=...; any id/secret accepted)
//   api:  http://127.0.0.1:PORT/{projectKey}/...   (Authorization: Bearer <token>)
//
// stdout carries only the protocol lines: optionally `SEED {json}`, then
// `ct-mock ready on http://127.0.0.1:PORT`. Diagnostics go to stderr.
import { createRequire } from "node:module";
import { CommercetoolsMock } from "@labdigital/commercetools-mock";

// fastify's router (find-my-way) answers 414 FST_ERR_MAX_PARAM_LENGTH for a path parameter
// longer than its maxParamLength, 100 by default, and the mock builds its fastify app with no
// way to pass router options. The real API takes keys of up to 256 characters
// (https://docs.commercetools.com/api/projects/carts#cart — `key`), i.e. path segments such
// as `key=<256 characters>`: raise the floor of every router this process creates. (A setter
// on the prototype, because find-my-way assigns `this.maxParamLength` in its constructor.)
const MAX_PARAM_LENGTH = 1024;
const FindMyWay = createRequire(createRequire(import.meta.url).resolve("fastify"))("find-my-way");
Object.defineProperty(FindMyWay.prototype, "maxParamLength", {
  configurable: true,
  get: () => MAX_PARAM_LENGTH,
  set(value) {
    Object.defineProperty(this, "maxParamLength", {
      value: Math.max(Number(value) || 0, MAX_PARAM_LENGTH), writable: true, enumerable: true, configurable: true,
    });
  },
});

// CTP_MOCK_HOST: the address to bind (0.0.0.0 in a container); loopback by default.
const HOST = process.env.CTP_MOCK_HOST || "127.0.0.1";

function parseArgs(argv) {
  const out = { port: undefined, seed: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--seed") out.seed = true;
    else if (a === "--port") out.port = argv[++i];
    else if (a.startsWith("--port=")) out.port = a.slice("--port=".length);
    else if (a === "-h" || a === "--help") {
      process.stderr.write("usage: node server.mjs [--port N] [--seed]\n");
      process.exit(0);
    } else {
      process.stderr.write(`ct-mock: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const portRaw = args.port ?? process.env.CTP_MOCK_PORT ?? "8989";
const port = Number.parseInt(String(portRaw), 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`ct-mock: invalid port ${portRaw}\n`);
  process.exit(2);
}
const projectKey = process.env.CTP_PROJECT_KEY || "instore-demo";
const seed =
  args.seed || ["1", "true", "yes"].includes((process.env.CTP_MOCK_SEED ?? "").toLowerCase());

const mock = new CommercetoolsMock({
  strict: true,
  enableAuthentication: true, // API routes require a Bearer token...
  validateCredentials: true, // ...that this server issued (any client id/secret gets one)
  defaultProjectKey: projectKey,
  silent: true,
});

// --- shims for draft fields the mock 4.4.0 silently drops ------------------
// The package does not export CommercetoolsError; obtain the class from an
// error its own auth middleware throws so the shim errors render like the
// mock's (statusCode/message/errors) instead of a bare 500.
const CommercetoolsError = await (async () => {
  try {
    await mock._oauth2.createMiddleware()({ headers: {} }, {});
  } catch (e) {
    return e.constructor;
  }
  throw new Error("ct-mock: could not obtain CommercetoolsError class");
})();

const repos = mock._repositories;
const storage = mock._storage;
// CTP_MOCK_SHIMS=0 disables the resource shims below (raw mock 4.4.0 behaviour).
const shims = !["0", "false", "no"].includes((process.env.CTP_MOCK_SHIMS ?? "").toLowerCase());

const duplicate = (field, value) =>
  new CommercetoolsError({
    code: "DuplicateField",
    message: `A duplicate value '${JSON.stringify(value)}' exists for field '${field}'.`,
    field,
    duplicateValue: value,
  });

const currencyDigits = (currency) => {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions()
      .maximumFractionDigits;
  } catch {
    return 2;
  }
};

if (shims) {
  // Carts: CartDraft.key is dropped by CartRepository.create (and carts have
  // no setKey action), so GET /carts/key=... could never match: store it,
  // unique per project. The cart's totalPrice is created with fractionDigits 0
  // (line items say 2; orders copy it): fix it to the currency's digits.
  const origCartCreate = repos.cart.create.bind(repos.cart);
  repos.cart.create = async (context, draft) => {
    if (draft?.key != null && (await storage.getByKey(context.projectKey, "cart", draft.key))) {
      throw duplicate("key", draft.key);
    }
    const cart = await origCartCreate(context, draft);
    let changed = false;
    if (draft?.key != null && cart.key !== draft.key) {
      cart.key = draft.key;
      changed = true;
    }
    const digits = currencyDigits(cart.totalPrice?.currencyCode);
    if (cart.totalPrice && cart.totalPrice.fractionDigits !== digits) {
      cart.totalPrice.fractionDigits = digits;
      changed = true;
    }
    if (changed) await storage.add(context.projectKey, "cart", cart);
    return cart;
  };

  // Orders: OrderFromCartDraft.orderNumber is not checked for uniqueness (a
  // duplicate then makes GET /orders/order-number=... answer 400), and
  // paymentState / orderState / shipmentState are dropped: enforce / apply.
  const origOrderCreate = repos.order.create.bind(repos.order);
  repos.order.create = async (context, draft) => {
    if (draft?.orderNumber != null) {
      const hit = await storage.query(context.projectKey, "order", {
        where: [`orderNumber=${JSON.stringify(String(draft.orderNumber))}`],
      });
      if (hit.count > 0) throw duplicate("orderNumber", draft.orderNumber);
    }
    // The API orders an Active cart only, and turns it Ordered
    // (https://docs.commercetools.com/api/projects/orders#create-order-from-cart); the mock leaves
    // it Active and would order it again under another number.
    const cartId = draft?.cart?.id;
    const cart = cartId ? await storage.get(context.projectKey, "cart", cartId, {}) : null;
    if (cart && cart.cartState !== "Active") {
      throw new CommercetoolsError(
        { code: "InvalidOperation", message: `Cart '${cart.id}' is ${cart.cartState}, only an Active cart can be ordered.` },
        400,
      );
    }
    const order = await origOrderCreate(context, draft);
    if (cart) {
      const current = await storage.get(context.projectKey, "cart", cart.id, {});
      if (current && current.cartState === "Active") {
        current.cartState = "Ordered";
        current.version += 1;
        current.lastModifiedAt = new Date().toISOString();
        await storage.add(context.projectKey, "cart", current);
      }
    }
    let changed = false;
    for (const f of ["paymentState", "orderState", "shipmentState"]) {
      if (draft?.[f] && order[f] !== draft[f]) {
        order[f] = draft[f];
        changed = true;
      }
    }
    if (changed) await storage.add(context.projectKey, "order", order);
    return order;
  };

  // Payments: PaymentDraft.key is not checked for uniqueness.
  const origPaymentCreate = repos.payment.create.bind(repos.payment);
  repos.payment.create = async (context, draft) => {
    if (draft?.key != null && (await storage.getByKey(context.projectKey, "payment", draft.key))) {
      throw duplicate("key", draft.key);
    }
    return origPaymentCreate(context, draft);
  };
}

// --- return actions the mock 4.4.0 lacks or drops ---------------------------
// (always on: the refund service needs them; https://docs.commercetools.com/api/projects/orders#add-returninfo,
// #set-returnpaymentstate, #set-returnshipmentstate)
// addReturnInfo drops ReturnItemDraft.key: keep it, unique within the Order like the real API.
// setReturnPaymentState / setReturnShipmentState are missing: find the item by
// returnItemId or returnItemKey (400 InvalidOperation when there is none).
{
  const orderActions = repos.order.actions;
  const returnItems = (order) => (order.returnInfo ?? []).flatMap((info) => info.items ?? []);
  const origAddReturnInfo = orderActions.addReturnInfo.bind(orderActions);
  orderActions.addReturnInfo = async (context, resource, info) => {
    const keys = new Set(returnItems(resource).map((item) => item.key).filter((k) => k != null));
    for (const item of info.items ?? []) {
      if (item.key == null) continue;
      if (keys.has(item.key)) throw duplicate("key", item.key);
      keys.add(item.key);
    }
    await origAddReturnInfo(context, resource, info);
    const added = resource.returnInfo[resource.returnInfo.length - 1];
    (info.items ?? []).forEach((draft, i) => {
      if (draft.key != null) added.items[i].key = draft.key;
      // like the API: Returned items are refundable (Initial), Advised ones are not (NonRefundable)
      added.items[i].paymentState = added.items[i].shipmentState === "Returned" ? "Initial" : "NonRefundable";
    });
  };
  const findReturnItem = (resource, { returnItemId, returnItemKey }) => {
    const item = returnItems(resource).find(
      (it) => (returnItemId != null && it.id === returnItemId) || (returnItemKey != null && it.key === returnItemKey),
    );
    if (!item) {
      throw new CommercetoolsError({
        code: "InvalidOperation",
        message: `No return item with ${returnItemId != null ? `id '${returnItemId}'` : `key '${returnItemKey}'`}.`,
      });
    }
    return item;
  };
  orderActions.setReturnPaymentState = (_context, resource, action) => {
    findReturnItem(resource, action).paymentState = action.paymentState;
  };
  orderActions.setReturnShipmentState = (_context, resource, action) => {
    findReturnItem(resource, action).shipmentState = action.shipmentState;
  };
}

// --- Custom Objects: the draft version is a compare-and-set, 0 included -----
// (always on: the consumers' announcement markers rely on it; https://docs.commercetools.com/api/projects/custom-objects#create-or-update-customobject)
// The mock 4.4.0 tests `if (draft.version)`, so `version: 0` on an existing object
// silently replaces it. The API: "If the request contains a version and an object with
// the given container/key, then the version must match" — 409 ConcurrentModification.
{
  const customObjects = repos["key-value-document"];
  const origCreate = customObjects.create.bind(customObjects);
  // One write at a time per (container, key): the check and the write must not interleave
  // with another request's (the API's compare-and-set is atomic).
  const tails = new Map();
  customObjects.create = (context, draft) => {
    const id = `${context.projectKey}/${draft?.container}/${draft?.key}`;
    const run = (tails.get(id) ?? Promise.resolve()).then(() => createChecked(context, draft));
    const tail = run.catch(() => {});
    tails.set(id, tail);
    tail.then(() => tails.get(id) === tail && tails.delete(id));
    return run;
  };
  const createChecked = async (context, draft) => {
    if (draft?.version != null) {
      const current = await customObjects.getWithContainerAndKey(context, draft.container, draft.key);
      const actual = current ? current.version : 0;
      if (actual !== draft.version) {
        throw new CommercetoolsError(
          {
            code: "ConcurrentModification",
            message: `Object ${current ? current.id : `${draft.container}/${draft.key}`} has a different version than expected. Expected: ${draft.version} - Actual: ${actual}.`,
            ...(current ? { currentVersion: actual } : {}),
          },
          409,
        );
      }
    }
    return origCreate(context, draft);
  };
}

// --- query limits the mock 4.4.0 does not enforce ---------------------------
// (always on: the reconciler pages through carts and orders; https://docs.commercetools.com/api/general-concepts#paging)
// The API refuses `limit` above 500 and `offset` above 10,000 with 400 InvalidInput; the mock
// answers any page, so a client paging by offset through a large project would pass here and
// fail in production. Mirror the refusal for every query (GET on a collection).
mock.app.addHook("preHandler", async (request) => {
  if (request.method !== "GET" || !request.query) return;
  const check = (name, max) => {
    const raw = request.query[name];
    if (raw === undefined) return;
    const value = Number(Array.isArray(raw) ? raw[raw.length - 1] : raw);
    if (!Number.isInteger(value) || value < 0 || value > max) {
      throw new CommercetoolsError(
        { code: "InvalidInput", message: `The ${name} must be an integer between 0 and ${max}, got ${raw}.` },
        400,
      );
    }
  };
  check("limit", 500);
  check("offset", 10000);
});

// --- sort on queries: the mock 4.4.0's services drop the `sort` parameter ------
// (always on: the reconciler pages by `sort=id asc` + `where=id > "<last id>"`;
// https://docs.commercetools.com/api/general-concepts#sorting). Its storage can sort, but the
// query handlers never pass `sort` on, so results come in insertion order and id-ordered paging
// skips records. Here: a query with `sort` is answered whole by the mock (limit/offset taken
// off), then sorted and cut to the page the client asked for before it is serialised.
const byPath = (row, path) => path.reduce((value, key) => (value == null ? undefined : value[key]), row);
const compare = (a, b) => {
  if (a == null) return b == null ? 0 : 1;
  if (b == null) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
};
mock.app.addHook("preHandler", async (request) => {
  const sort = request.query?.sort;
  if (request.method !== "GET" || sort === undefined) return;
  const clauses = (Array.isArray(sort) ? sort : [sort]).map((clause) => {
    const [field, direction] = String(clause).trim().split(/\s+/);
    return { path: field.split("."), desc: (direction ?? "").toLowerCase() === "desc" };
  });
  const limit = request.query.limit === undefined ? 20 : Number(request.query.limit);
  const offset = request.query.offset === undefined ? 0 : Number(request.query.offset);
  request.ctMockPage = { clauses, limit, offset };
  request.query = { ...request.query, limit: "1000000", offset: "0" };
});
mock.app.addHook("preSerialization", async (request, reply, payload) => {
  const page = request.ctMockPage;
  if (!page || !payload || !Array.isArray(payload.results)) return payload;
  const rows = [...payload.results].sort((left, right) => {
    for (const { path, desc } of page.clauses) {
      const result = compare(byPath(left, path), byPath(right, path));
      if (result !== 0) return desc ? -result : result;
    }
    return 0;
  });
  const results = rows.slice(page.offset, page.offset + page.limit);
  return { ...payload, results, count: results.length, offset: page.offset, limit: page.limit, total: rows.length };
});

// The token endpoint only reads `scope` from the query string; real clients
// send it in the form body. Mirror body.scope into the query so the issued
// token reports the requested scope instead of "todo".
mock.app.addHook("preHandler", async (request) => {
  if (
    request.method === "POST" &&
    request.url.split("?")[0].startsWith("/oauth/") &&
    request.body &&
    typeof request.body === "object" &&
    request.body.scope &&
    !request.query?.scope
  ) {
    request.query = { ...(request.query ?? {}), scope: String(request.body.scope) };
  }
});

// --- seed (over HTTP, through the same API our services use) --------------
async function seedProject(baseUrl) {
  const tokenRes = await fetch(`${baseUrl}/oauth/token`, {
    method: "POST",
    headers: {
      Authorization: `Basic ${Buffer.from("ct-mock-seed:ct-mock-seed-secret").toString("base64")}`,
      "Content-Type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({
      grant_type: "client_credentials",
      scope: `manage_project:${projectKey}`,
    }),
  });
  if (!tokenRes.ok) throw new Error(`token: ${tokenRes.status} ${await tokenRes.text()}`);
  const { access_token: token } = await tokenRes.json();

  const api = async (method, path, body) => {
    const res = await fetch(`${baseUrl}/${projectKey}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${token}`,
        ...(body ? { "Content-Type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text);
  };

  const EUR = (centAmount) => ({ currencyCode: "EUR", centAmount });
  const ref = (typeId, key) => ({ typeId, key });
  const str = (name, label) => ({
    name,
    label: { en: label },
    required: false,
    type: { name: "String" },
    inputHint: "SingleLine",
  });

  // TaxCategoryDraft
  const taxCategory = await api("POST", "/tax-categories", {
    key: "standard",
    name: "Standard",
    description: "German standard VAT",
    rates: [
      { key: "de-standard", name: "19% MwSt", amount: 0.19, includedInPrice: true, country: "DE" },
    ],
  });

  // ProductTypeDraft (no attributes)
  const productType = await api("POST", "/product-types", {
    key: "basic",
    name: "Basic",
    description: "Simple product without attributes",
    attributes: [],
  });

  // ProductDrafts, published
  const catalog = [
    { key: "tshirt", sku: "SKU-TSHIRT-M", en: "T-Shirt (M)", de: "T-Shirt (M)", cents: 1999 },
    { key: "mug", sku: "SKU-MUG", en: "Mug", de: "Tasse", cents: 1250 },
    { key: "cap", sku: "SKU-CAP", en: "Cap", de: "Kappe", cents: 1500 },
  ];
  const productIds = {};
  for (const p of catalog) {
    const product = await api("POST", "/products", {
      key: p.key,
      productType: ref("product-type", "basic"),
      name: { en: p.en, de: p.de },
      slug: { en: `${p.key}`, de: `${p.key}-de` },
      taxCategory: ref("tax-category", "standard"),
      masterVariant: {
        sku: p.sku,
        key: p.sku.toLowerCase(),
        prices: [{ key: `${p.key}-eur-de`, value: EUR(p.cents), country: "DE" }],
      },
      variants: [],
      publish: true,
    });
    productIds[p.sku] = product.id;
  }

  // ZoneDraft + ShippingMethodDraft
  const zone = await api("POST", "/zones", {
    key: "de",
    name: "Germany",
    locations: [{ country: "DE" }],
  });
  const shippingMethod = await api("POST", "/shipping-methods", {
    key: "in-store",
    name: "In-store",
    localizedName: { en: "In-store", de: "Im Geschäft" },
    taxCategory: ref("tax-category", "standard"),
    zoneRates: [{ zone: ref("zone", "de"), shippingRates: [{ price: EUR(0) }] }],
    isDefault: false,
    active: true,
  });

  // TypeDrafts: carts and orders share resourceTypeId "order"
  const orderType = await api("POST", "/types", {
    key: "instore-order",
    name: { en: "InStore order / cart" },
    resourceTypeIds: ["order"],
    fieldDefinitions: [
      str("locationId", "Location"),
      str("workstationId", "Workstation"),
      str("userId", "User"),
      str("orderType", "Order type"),
      str("sequenceNumber", "Sequence number"),
      str("orderNumber", "Order number"),
    ],
  });
  const lineItemType = await api("POST", "/types", {
    key: "instore-line-item",
    name: { en: "InStore line item" },
    resourceTypeIds: ["line-item", "custom-line-item"],
    fieldDefinitions: [
      str("purchaseOrderId", "Purchase order id"),
      str("purchaseLineItemId", "Purchase line item id"),
      str("returnComment", "Return comment"),
      str("fulfillment", "Fulfillment"),
      { name: "isGift", label: { en: "Gift" }, required: false, type: { name: "Boolean" } },
      str("salespersonId", "Salesperson"),
    ],
  });

  const store = { locationId: "store-berlin-01", workstationId: "pos-3", userId: "colleague-42" };
  // CartDraft common part. The mock always stores shippingMode "Single"
  // (CartDraft.shippingMode and CartDraft.shipping are ignored), so the
  // seed uses Single mode with shippingMethod, which needs a shippingAddress.
  const cartBase = (key, fields, lineItems) => ({
    key,
    currency: "EUR",
    country: "DE",
    shippingMode: "Single",
    shippingAddress: { country: "DE", city: "Berlin", postalCode: "10115" },
    shippingMethod: ref("shipping-method", "in-store"),
    taxMode: "Platform",
    inventoryMode: "None",
    origin: "Merchant",
    lineItems,
    custom: { type: ref("type", "instore-order"), fields: { ...store, ...fields } },
  });

  let saleCart = await api(
    "POST",
    "/carts",
    cartBase("demo-sale-cart", { orderType: "sale", sequenceNumber: "000002", orderNumber: "store-berlin-01-000002" }, [
      { sku: "SKU-TSHIRT-M", quantity: 1 },
      { sku: "SKU-CAP", quantity: 1 },
    ]),
  );
  // The sale cart as InStore leaves it once the card payment succeeded: a charged Payment
  // covering the total. A payment webhook for it then makes Order store-berlin-01-000002.
  const salePayment = await api("POST", "/payments", {
    key: "store-berlin-01-000002-card",
    interfaceId: "psp-demo-000002",
    amountPlanned: EUR(saleCart.totalPrice.centAmount),
    paymentMethodInfo: { paymentInterface: "instore-pos", method: "CARD", name: { en: "Card" } },
    transactions: [
      {
        type: "Charge",
        amount: EUR(saleCart.totalPrice.centAmount),
        state: "Success",
        interactionId: "psp-demo-000002",
        timestamp: new Date().toISOString(),
      },
    ],
  });
  saleCart = await api("POST", `/carts/${saleCart.id}`, {
    version: saleCart.version,
    actions: [{ action: "addPayment", payment: { typeId: "payment", id: salePayment.id } }],
  });

  const orderNumber = "store-berlin-01-000001";
  let purchaseCart = await api(
    "POST",
    "/carts",
    cartBase(
      "demo-purchase-cart",
      { orderType: "sale", sequenceNumber: "000001", orderNumber },
      [
        { sku: "SKU-TSHIRT-M", quantity: 2 },
        { sku: "SKU-MUG", quantity: 1 },
      ],
    ),
  );

  // PaymentDraft for the purchase (card, charged), attached to the cart
  const total = purchaseCart.totalPrice.centAmount;
  const payment = await api("POST", "/payments", {
    key: `${orderNumber}-card`,
    interfaceId: "psp-demo-000001",
    amountPlanned: EUR(total),
    paymentMethodInfo: {
      paymentInterface: "instore-pos",
      method: "CARD",
      name: { en: "Card" },
    },
    paymentStatus: { interfaceCode: "captured", interfaceText: "Captured at POS" },
    transactions: [
      {
        type: "Charge",
        amount: EUR(total),
        state: "Success",
        interactionId: "psp-demo-000001",
        timestamp: new Date().toISOString(),
      },
    ],
  });
  purchaseCart = await api("POST", `/carts/${purchaseCart.id}`, {
    version: purchaseCart.version,
    actions: [{ action: "addPayment", payment: { typeId: "payment", id: payment.id } }],
  });

  // OrderFromCartDraft
  const order = await api("POST", "/orders", {
    cart: { typeId: "cart", id: purchaseCart.id },
    version: purchaseCart.version,
    orderNumber,
    paymentState: "Paid",
  });
  const orderLineItemIds = Object.fromEntries(order.lineItems.map((li) => [li.variant.sku, li.id]));

  const returnCart = await api(
    "POST",
    "/carts",
    cartBase("demo-return-cart", { orderType: "return" }, [
      {
        sku: "SKU-TSHIRT-M",
        quantity: 1,
        custom: {
          type: ref("type", "instore-line-item"),
          fields: {
            purchaseOrderId: order.id,
            purchaseLineItemId: orderLineItemIds["SKU-TSHIRT-M"],
            returnComment: "too small",
          },
        },
      },
    ]),
  );

  // The return InStore starts once the seeded sale is paid and ordered: the cap of
  // demo-sale-cart back. Its line points at the Order by number (store-berlin-01-000002,
  // made by the payment webhook) and at the sale cart's line id, which the Order keeps.
  const saleLineItemIds = Object.fromEntries(saleCart.lineItems.map((li) => [li.variant.sku, li.id]));
  const saleReturnCart = await api(
    "POST",
    "/carts",
    cartBase("demo-sale-return-cart", { orderType: "return" }, [
      {
        sku: "SKU-CAP",
        quantity: 1,
        custom: {
          type: ref("type", "instore-line-item"),
          fields: {
            purchaseOrderId: "store-berlin-01-000002",
            purchaseLineItemId: saleLineItemIds["SKU-CAP"],
            returnComment: "wrong colour",
          },
        },
      },
    ]),
  );

  // A sale in progress nobody pays or orders: for cart callbacks that must answer 200 however
  // many tests (or a reconciler) have already ordered demo-sale-cart.
  const openCart = await api(
    "POST",
    "/carts",
    cartBase("demo-open-cart", { orderType: "sale", sequenceNumber: "000003" }, [{ sku: "SKU-MUG", quantity: 1 }]),
  );

  return {
    projectKey,
    openCartId: openCart.id,
    openCartKey: openCart.key,
    saleLineItemIds,
    saleReturnCartId: saleReturnCart.id,
    saleReturnCartKey: saleReturnCart.key,
    saleCartId: saleCart.id,
    salePaymentId: salePayment.id,
    saleOrderNumber: "store-berlin-01-000002",
    saleCartKey: saleCart.key,
    purchaseCartId: purchaseCart.id,
    purchaseCartKey: purchaseCart.key,
    returnCartId: returnCart.id,
    returnCartKey: returnCart.key,
    orderId: order.id,
    orderNumber: order.orderNumber,
    orderLineItemIds,
    paymentId: payment.id,
    paymentKey: payment.key,
    productIds,
    productTypeId: productType.id,
    taxCategoryId: taxCategory.id,
    zoneId: zone.id,
    shippingMethodId: shippingMethod.id,
    typeIds: { "instore-order": orderType.id, "instore-line-item": lineItemType.id },
  };
}

// --- lifecycle -------------------------------------------------------------
let closing = false;
async function shutdown(signal) {
  if (closing) return;
  closing = true;
  process.stderr.write(`ct-mock: ${signal}, shutting down\n`);
  const timer = setTimeout(() => process.exit(0), 3000);
  timer.unref();
  try {
    await mock.app.close();
  } catch (e) {
    process.stderr.write(`ct-mock: close failed: ${e}\n`);
  }
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

try {
  await mock.app.listen({ host: HOST, port });
  const actualPort = mock.app.server.address().port;
  const baseUrl = `http://${HOST}:${actualPort}`;
  if (seed) {
    const result = await seedProject(baseUrl);
    process.stdout.write(`SEED ${JSON.stringify(result)}\n`);
  }
  process.stdout.write(`ct-mock ready on ${baseUrl}\n`);
} catch (e) {
  process.stderr.write(`ct-mock: failed to start: ${e?.stack ?? e}\n`);
  try {
    await mock.app.close();
  } catch {}
  process.exit(1);
}
