// Drives the reference host page (GET /host of the dev fakes) in Debian's chromium with playwright-core:
// sign in, a paid sale (its Order number appears), a cancelled sale, a declined card. Prints one JSON
// object: what the page showed, the texts of every response it received (for the secret check), and
// where the screenshots are. Usage: node tools/browser/host-page.mjs <page url> <screenshot dir>
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const result = { paid: null, cancelled: null, declined: null, forwarded: 0, responses: [], screenshots: [], errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on("pageerror", (error) => result.errors.push(String(error)));
  page.on("response", async (response) => {
    try { result.responses.push({ url: response.url(), status: response.status(), body: await response.text() }); }
    catch { /* a redirect or an aborted body */ }
  });
  await page.goto(url);
  await page.click("#signin");
  await page.waitForSelector("#session-state[data-state=open]", { timeout: 15000 });

  await page.click("#new-sale");
  await page.waitForSelector("#instore[data-cart-id]");
  await page.click("#pay");
  await page.waitForFunction(() => document.getElementById("order-number").textContent !== "–", null, { timeout: 45000 });
  result.paid = {
    cartId: await page.getAttribute("#instore", "data-cart-id"),
    orderNumber: await page.textContent("#order-number"),
    status: await page.textContent("#status"),
  };
  await page.screenshot({ path: `${shots}/host-page-paid.png`, fullPage: true });
  result.screenshots.push(`${shots}/host-page-paid.png`);

  await page.click("#new-sale");
  await page.waitForFunction((old) => document.getElementById("instore").dataset.cartId !== old, result.paid.cartId);
  await page.click("#cancel");
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("cancelled"));
  result.cancelled = { cartId: await page.getAttribute("#instore", "data-cart-id"), status: await page.textContent("#status") };

  await page.click("#new-sale");
  await page.waitForFunction((old) => document.getElementById("instore").dataset.cartId !== old, result.cancelled.cartId);
  await page.click("#pay-decline");
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("error"));
  result.declined = { cartId: await page.getAttribute("#instore", "data-cart-id"), status: await page.textContent("#status") };
  await page.screenshot({ path: `${shots}/host-page-declined.png`, fullPage: true });
  result.screenshots.push(`${shots}/host-page-declined.png`);

  await page.waitForFunction(() => Number(document.getElementById("pending").textContent) === 0
    && Number(document.getElementById("forwarded").textContent) > 0, null, { timeout: 15000 });
  result.forwarded = Number(await page.textContent("#forwarded"));
} catch (error) {
  result.errors.push(String(error && error.stack || error));
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result));
process.exit(result.errors.length ? 1 : 0);
