// The console in a real browser: headless Debian Chromium driven by playwright-core, against a
// running local stack. Started by tests/tests/e2e_console.rs, which seeds the actions and checks
// the API afterwards. Every wait is bounded; any failure exits non-zero with what was seen.
//
// Environment: BASE (the gateway's URL), ADMIN (an admin user id, an approver), VIEWER (a user
// who is not an admin), APPROVE_ID (a tier-2 action ADMIN may approve), ROLLBACK_ID (a completed
// reversible action of ADMIN's), SHOTS (where screenshots go).
import { launch, need } from "./browser.mjs";

const env = need;
const BASE = env("BASE");
const SHOTS = env("SHOTS");
const STEP_MS = 20_000;

const browser = await launch(SHOTS);
const failures = [];
const csp = [];
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on("console", (m) => {
    if (m.type() === "error") csp.push(m.text());
  });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

  // The token lives in the page's memory: never reload, only move between views (a fresh
  // `_` makes the same view load again).
  let nonce = 0;
  async function view(hash) {
    const sep = hash.includes("?") ? "&" : "?";
    await page.evaluate((h) => (location.hash = h), `${hash}${sep}_=${++nonce}`);
  }

  async function signIn(user, admin) {
    await page.goto(`${BASE}/console/`);
    await page.fill("input[name=user]", user);
    if (admin) await page.check("input[name=admin]");
    // Submitted from the keyboard.
    await page.press("input[name=user]", "Enter");
    await page.waitForSelector("#nav:not([hidden])");
  }

  async function step(name, fn) {
    try {
      await fn();
      console.log(`ok: ${name}`);
    } catch (e) {
      failures.push(`${name}: ${e.message.split("\n")[0]}`);
      await shot(`failed-${name.replace(/\W+/g, "-")}`).catch(() => {});
    }
  }

  await step("sign in as an administrator", async () => {
    await page.goto(`${BASE}/console/`);
    await page.waitForSelector("form#sign-in");
    await shot("sign-in");
    await signIn(env("ADMIN"), true);
  });

  const approveId = env("APPROVE_ID");
  await step("the queue shows the tier-2 action with its On approval badge", async () => {
    await view("#/queue");
    const card = page.locator(`article[data-action="${approveId}"]`).first();
    await card.waitFor();
    const badge = await card.locator(".badge").first().textContent();
    if (badge !== "On approval") throw new Error(`badge is ${badge}`);
    await shot("queue");
    // From the keyboard: Tab to this card's Approve button (bounded), then Enter.
    const target = card.locator("button:has-text('Approve')");
    await page.locator("main").focus();
    let reached = false;
    for (let i = 0; i < 80 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await target.evaluate((el) => el === document.activeElement);
    }
    if (!reached) throw new Error("Tab never reached the Approve button");
    const outline = await target.evaluate((el) => getComputedStyle(el).outlineStyle);
    if (outline === "none") throw new Error("the focused button shows no focus ring");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#toast.shown:has-text('Approve: done')");
  });

  await step("History shows it completed", async () => {
    const deadline = Date.now() + STEP_MS;
    for (;;) {
      await view("#/history?status=completed");
      await page.waitForSelector("section .list > *");
      const row = page.locator(`.row:has(a[href="#/action/${approveId}"])`);
      if ((await row.count()) > 0) break;
      if (Date.now() > deadline) throw new Error("not completed in time");
      await page.waitForTimeout(500);
    }
    await shot("history");
  });

  const rollbackId = env("ROLLBACK_ID");
  await step("roll back a reversible action from its detail", async () => {
    await view(`#/action/${rollbackId}`);
    await page.waitForSelector("table.trail");
    await shot("detail");
    await page.click("button:has-text('Roll back')");
    const deadline = Date.now() + STEP_MS;
    for (;;) {
      await view(`#/action/${rollbackId}`);
      await page.waitForSelector("table.trail");
      const status = await page.locator("h1 .status").textContent();
      if (status === "rolled back") break;
      if (Date.now() > deadline) throw new Error(`status stayed ${status}`);
      await page.waitForTimeout(500);
    }
  });

  await step("stats draws its charts", async () => {
    await view("#/stats");
    await page.waitForSelector("#rates-chart canvas");
    await page.waitForSelector("#counts-chart canvas");
    await shot("stats");
  });

  await step("settings flips the kill switch", async () => {
    await view("#/settings");
    await page.waitForSelector("form#settings");
    await shot("settings");
    // A value the browser lets through but the policy refuses: shown next to its field.
    await page.fill("input[name=per_hour]", "2000000");
    await page.click("button:has-text('Save policy')");
    await page.waitForSelector("[data-error-for='auto_execution.per_hour']:has-text('at most')");
    await shot("settings-error");
    await view("#/queue");
    await view("#/settings");
    await page.waitForSelector("form#settings");
    await page.uncheck("input[name=enabled]");
    await page.click("button:has-text('Save policy')");
    await page.waitForSelector("#toast.shown:has-text('Policy saved')");
  });

  await step("the console is usable at phone width", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await view("#/queue");
    await page.waitForSelector("h1:has-text('Queue')");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 2) throw new Error(`the page is ${overflow}px wider than the phone`);
    await shot("queue-phone");
    await page.setViewportSize({ width: 1200, height: 900 });
  });

  await step("a non-admin is refused the settings", async () => {
    await page.click("#sign-out");
    await signIn(env("VIEWER"), false);
    if (await page.locator("#nav-settings").isVisible()) throw new Error("the Settings link is shown");
    await view("#/settings");
    await page.waitForSelector("text=Settings are for administrators only.");
    await shot("settings-refused");
  });

  await step("the token is never stored", async () => {
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    if (stored.includes("dev:")) throw new Error(`storage holds the token: ${stored}`);
  });
} finally {
  await browser.close();
}
const violations = csp.filter((m) => /Content Security Policy|Refused to/i.test(m));
if (violations.length) failures.push(`CSP violations: ${violations.join(" | ")}`);
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("console: all steps passed");
