// Drives Debian's chromium (headless) through the broker's dashboard; run
// by run.sh, which starts the broker and worker and passes their details in
// the environment. Each step waits a bounded time and says what it waited
// for when it fails.
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const { ADMIN, ADMIN_OPEN, TOKEN, HEAL_FILE, BROKER_PID, SCREENSHOT } = process.env;
const EXPECTED_DEAD = Number(process.env.EXPECTED_DEAD);
/** How long one step may wait for the page or the broker. */
const STEP_TIMEOUT_MS = 15000;
const SCRIPT_ID = "shop/<script>alert(1)</script>";
const IMG_ID = "shop/<img src=x onerror=alert(2)>";

const base = `http://${ADMIN}`;

/** The broker's /status, read as the CLI does (with the token). */
async function status() {
  const response = await fetch(`${base}/status`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  if (!response.ok) throw new Error(`/status answered ${response.status}`);
  return response.json();
}

async function until(what, check) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  // Root in a container: no sandbox; nothing fetched from the network.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  headless: true,
  timeout: STEP_TIMEOUT_MS,
});
const problems = [];
try {
  // A fresh profile per run (playwright's contexts are throwaway).
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("request", (request) => {
    if (!request.url().startsWith(base)) problems.push(`request beyond the broker: ${request.url()}`);
  });
  const dialogs = [];
  page.on("dialog", async (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    await dialog.accept();
  });

  const response = await page.goto(`${base}/`);
  expect(response.status() === 200, `GET / answered ${response.status()}`);
  expect(
    (response.headers()["content-security-policy"] || "").includes("default-src 'self'"),
    "the page has no Content-Security-Policy with default-src 'self'",
  );

  // Overview and workers, from the live broker.
  await page.locator("#connection", { hasText: /^connected$/ }).waitFor();
  await until(`${EXPECTED_DEAD} dead letters on the page`, async () =>
    (await page.locator("#dead").textContent()) === String(EXPECTED_DEAD));
  const live = await status();
  expect(live.dead_letters === EXPECTED_DEAD, `/status has ${live.dead_letters} dead letters`);
  // The trickle moves pending and in flight; they are whole numbers.
  for (const gauge of ["#pending", "#in-flight", "#delayed"]) {
    expect(/^\d+$/.test(await page.locator(gauge).textContent()), `${gauge} is not a number`);
  }
  // run.sh's trickle: 20 orders a second, sealed and acknowledged.
  for (const rate of ["#acked-rate", "#sealed-rate"]) {
    await until(`${rate} above zero`, async () => Number(await page.locator(rate).textContent()) > 0);
  }
  expect(/B$/.test(await page.locator("#journal-bytes").textContent()), "no journal size");
  expect((await page.locator("#intake").textContent()) === "open", "intake is not shown open");
  expect((await page.locator("#disk").textContent()) === "ok", "disk is not shown ok");
  expect((await page.locator("#oldest-age").textContent()) !== "", "no oldest pending age");
  const worker = page.locator("#workers tbody tr", { hasText: "w1" });
  await worker.waitFor();
  const cells = await worker.locator("td").allTextContents();
  expect(cells[0] === "w1" && cells[1] === "ready" && cells[2] === "4", `worker row: ${JSON.stringify(cells)}`);
  expect(/ago$/.test(cells[5]), `no heartbeat age in the worker row: ${JSON.stringify(cells)}`);

  // Ids that are HTML are shown as text: no element made from them.
  const scriptRow = page.locator(`#dead-letters tbody tr`).filter({ hasText: SCRIPT_ID });
  expect((await scriptRow.locator("td").first().textContent()) === SCRIPT_ID, "the <script> id is not shown as text");
  expect((await page.locator("script").count()) === 1, "a <script> element came from the data");
  expect((await page.locator("img").count()) === 0, "an <img> element came from the data");

  // Without the token the actions are disabled and say why.
  const retry = (id) => page.locator("#dead-letters tbody tr").filter({ hasText: id }).getByRole("button", { name: "retry" });
  expect(await retry("shop/bad-1").isDisabled(), "retry is enabled without a token");
  expect((await page.locator("#actions-note").textContent()).includes("admin token"), "no note on the disabled buttons");

  // A wrong token is refused; the right one is accepted and kept for the tab.
  await page.fill("#token", "not-the-token-0123456789");
  await page.click("#token-save");
  await page.locator("#token-state", { hasText: "token refused" }).waitFor();
  expect(await retry("shop/bad-1").isDisabled(), "retry is enabled with a refused token");
  await page.fill("#token", TOKEN);
  await page.click("#token-save");
  await page.locator("#token-state", { hasText: "token accepted" }).waitFor();
  await until("retry enabled", () => retry("shop/bad-1").isEnabled());
  expect(
    (await page.evaluate(() => sessionStorage.getItem("orderly-admin-token"))) === TOKEN,
    "the token is not in sessionStorage",
  );

  // Show one.
  await page.locator("#dead-letters tbody tr").filter({ hasText: "shop/bad-1" }).getByRole("button", { name: "show" }).click();
  await until("the order's detail", async () => (await page.locator("#detail-body").textContent()).includes('"sku": "C3"'));

  // Retry one: with the handler healed, it is revived and acknowledged.
  writeFileSync(HEAL_FILE, "");
  await retry("shop/bad-1").click();
  await until("bad-1 revived in /status", async () => (await status()).counters.orders_revived === 1);
  await until("bad-1 acknowledged", async () => (await status()).dead_letters === EXPECTED_DEAD - 1);
  await until("bad-1 gone from the page", async () =>
    (await page.locator("#dead-letters tbody tr").filter({ hasText: "shop/bad-1" }).count()) === 0);

  // Delete one (the page asks to confirm; the dialog handler accepts).
  await page.locator("#dead-letters tbody tr").filter({ hasText: IMG_ID }).getByRole("button", { name: "delete" }).click();
  await until("the <img> order deleted in /status", async () => (await status()).counters.orders_discarded === 1);
  await until("the dead letter count on the page", async () =>
    (await page.locator("#dead").textContent()) === String(EXPECTED_DEAD - 2));
  expect(dialogs.length === 1 && dialogs[0].startsWith("confirm:"), `dialogs: ${JSON.stringify(dialogs)}`);
  await page.locator("#detail-close").click();

  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // Beyond loopback the page loads without the token, but its reads need it.
  const open = await context.newPage();
  open.setDefaultTimeout(STEP_TIMEOUT_MS);
  await open.goto(`http://${ADMIN_OPEN}/dashboard`);
  await open.locator("#connection", { hasText: "token needed" }).waitFor();
  expect((await open.locator("#problem").textContent()).includes("needs the admin token"), "no notice on the token");
  expect((await open.locator("#pending").textContent()) === "–", "numbers shown without the token");
  await open.fill("#token", TOKEN);
  await open.click("#token-save");
  await open.locator("#connection", { hasText: /^connected$/ }).waitFor();
  await open.locator("#pending", { hasText: "0" }).waitFor();
  // A group of one: this member leads.
  await open.locator("#group-section").waitFor();
  const member = await open.locator("#group tbody tr td").allTextContents();
  expect(member[0] === "1" && member[1] === "1" && member[3] === "leader" && member[6] === "1",
    `group row: ${JSON.stringify(member)}`);
  // The leader's table of every member's progress: itself, leading, active.
  await open.locator("#group-members tbody tr").first().waitFor();
  const progress = await open.locator("#group-members tbody tr td").allTextContents();
  expect(progress[0] === "1" && progress[1] === "leader" && progress[3] === "0" && progress[5] === "yes",
    `members row: ${JSON.stringify(progress)}`);
  await open.close();

  // The broker stops: the page says so.
  process.kill(Number(BROKER_PID), "SIGTERM");
  await page.locator("#connection", { hasText: "disconnected" }).waitFor();
  expect((await page.locator("#problem").textContent()).includes("does not answer"), "no disconnection notice");

  // Failed fetches while the broker is down are expected; nothing else.
  const unexpected = problems.filter((p) => !/Failed to load resource|Failed to fetch|ERR_CONNECTION_REFUSED/.test(p));
  expect(unexpected.length === 0, unexpected.join("\n"));
  expect(!dialogs.some((d) => d.startsWith("alert")), `an alert ran: ${JSON.stringify(dialogs)}`);
} finally {
  await browser.close();
}
