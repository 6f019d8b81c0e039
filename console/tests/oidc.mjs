// The console's deployed sign-in in a real browser: OpenID Connect authorization code with PKCE
// against the local issuer (tests/src/oidc.rs), whose ID tokens the local gateway checks as API
// Gateway's JWT authorizer would. Started by tests/tests/e2e_console_oidc.rs.
import { launch, need } from "./browser.mjs";

const BASE = need("BASE");
const SHOTS = need("SHOTS");
const EMAIL = need("EMAIL");
const browser = await launch(SHOTS);
const failures = [];
const errors = [];
try {
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(20_000);
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  const signIn = async (admin) => {
    await page.goto(`${BASE}/console`);
    await page.click("button:has-text('Sign in with your identity provider')");
    await page.waitForSelector("h1:has-text('Local identity provider')");
    await page.fill("input[name=email]", EMAIL);
    if (admin) await page.check("input[name=admin]");
    await page.click("button:has-text('Continue')");
    await page.waitForSelector("#nav:not([hidden])");
  };
  try {
    await signIn(true);
    const who = await page.locator("#who").textContent();
    if (who !== `${EMAIL} (admin)`) throw new Error(`signed in as ${who}`);
    if (new URL(page.url()).search) throw new Error(`the code stayed in the address bar: ${page.url()}`);
    await page.evaluate(() => (location.hash = "#/settings"));
    await page.waitForSelector("form#settings");
    await page.screenshot({ path: `${SHOTS}/oidc-settings.png` });
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    if (stored !== "{}{}") throw new Error(`storage holds ${stored}`);
    console.log("ok: an administrator signs in through the identity provider and reads the settings");
  } catch (e) {
    failures.push(`admin: ${e.message.split("\n")[0]}`);
  }
  try {
    await page.click("#sign-out");
    await signIn(false);
    await page.evaluate(() => (location.hash = "#/settings"));
    await page.waitForSelector("text=Settings are for administrators only.");
    await page.evaluate(() => (location.hash = "#/queue"));
    await page.waitForSelector("h2:has-text('Waiting for your decision')");
    console.log("ok: a member signs in, sees the queue and not the settings");
  } catch (e) {
    failures.push(`member: ${e.message.split("\n")[0]}`);
  }
} finally {
  await browser.close();
}
const violations = errors.filter((m) => /Content Security Policy|Refused to/i.test(m));
if (violations.length) failures.push(`CSP: ${violations.join(" | ")}`);
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("oidc: all steps passed");
