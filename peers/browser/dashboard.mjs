// Drives the coordinator's web dashboard in Debian's chromium, headless, as a person would:
// connects with a token typed from the keyboard, submits fib(12) through the form and waits for
// 144, submits a `loop` task and cancels it from its row by keyboard, checks a narrow screen, and takes
// screenshots. Any console error, page error, failed request or HTTP error answer fails it.
//
//   node dashboard.mjs CONFIG.json
// CONFIG: {"base", "token", "chromium", "fib_wasm", "loop_wat", "artifacts", "present": [ids],
//          "absent": [ids]}
// Prints one JSON line (what it saw) and exits 0, or prints the problems and exits 1.
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const problems = [];
const seen = {};
const timeout = 20000;

const browser = await chromium.launch({ executablePath: config.chromium, headless: true });
let watching = true;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on("console", (m) => {
    if (watching && m.type() === "error") problems.push("console error: " + m.text());
  });
  page.on("pageerror", (e) => watching && problems.push("page error: " + e.message));
  page.on("requestfailed", (r) => {
    if (watching) problems.push("request failed: " + r.method() + " " + r.url() + " " + r.failure()?.errorText);
  });
  page.on("response", (r) => {
    if (watching && r.status() >= 400) problems.push("HTTP " + r.status() + ": " + r.request().method() + " " + r.url());
  });

  const first = await page.goto(config.base + "/");
  const h = first.headers();
  seen.content_type = h["content-type"];
  seen.csp = h["content-security-policy"];
  seen.cache_control = h["cache-control"];

  // Keyboard only: the skip link, then the token field; focus is visible; Enter connects.
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  seen.focused = await page.evaluate(() => document.activeElement.id);
  seen.focus_outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  await page.keyboard.type(config.token);
  await page.keyboard.press("Enter");
  await page.locator("#status").filter({ hasText: "Connected." }).waitFor();
  seen.token_in_session = await page.evaluate(() => sessionStorage.getItem("wasm-exec-token") !== null);

  // Every control has a label.
  seen.unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select")]
      .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label"))
      .map((c) => c.id),
  );

  // The tenant's own tasks are listed, another tenant's are not.
  for (const id of config.present) await page.locator(`tr[data-task-id="${id}"]`).waitFor();
  seen.absent_shown = await page.evaluate(
    (ids) => ids.filter((id) => document.body.textContent.includes(id)),
    config.absent,
  );

  // fib(12) through the form.
  await page.getByLabel("Module file").setInputFiles(config.fib_wasm);
  await page.locator("#entry:enabled").waitFor();
  seen.fib_exports = await page.locator("#entry option").allTextContents();
  await page.getByLabel("Export").selectOption("fib");
  await page.getByLabel("Arguments (JSON array)").fill("[12]");
  await page.getByRole("button", { name: "Submit", exact: true }).click();
  await page.locator("#status").filter({ hasText: "Submitted task" }).waitFor();
  const fibId = (await page.locator("#status").textContent()).match(/Submitted task (\S+)\./)[1];
  const fibRow = page.locator(`tr[data-task-id="${fibId}"]`);
  await fibRow.locator("td.state", { hasText: "succeeded" }).waitFor();
  seen.fib_result = await fibRow.locator("td.result").textContent();
  await page.locator("#detail-result", { hasText: "144" }).waitFor();
  await page.locator("#detail-receipt", { hasText: "signature" }).waitFor();
  seen.fib_timeline = await page.locator("#detail-timeline li").count();

  // A `loop` task, submitted and cancelled from its row with the keyboard while it runs.
  await page.getByLabel("Module file").setInputFiles(config.loop_wat);
  await page.locator("#entry option", { hasText: "loop" }).waitFor({ state: "attached" });
  await page.getByLabel("Export").selectOption("loop");
  await page.getByLabel("Arguments (JSON array)").fill("[]");
  await page.getByLabel("Arguments (JSON array)").press("Enter");
  await page.locator("#status").filter({ hasText: "Submitted task" }).waitFor();
  const loopId = (await page.locator("#status").textContent()).match(/Submitted task (\S+)\./)[1];
  const loopRow = page.locator(`tr[data-task-id="${loopId}"]`);
  await loopRow.locator("td.state", { hasText: "running" }).waitFor();
  await page.getByRole("button", { name: "Cancel task " + loopId }).focus();
  await page.keyboard.press("Enter");
  await loopRow.locator("td.state", { hasText: "cancelled" }).waitFor();
  await page.locator("#status").filter({ hasText: "is cancelled" }).waitFor();
  seen.loop_state = await loopRow.locator("td.state").textContent();

  // The filter shows only the state chosen.
  await page.getByLabel("Show state").selectOption("cancelled");
  seen.cancelled_rows = await page.locator("#task-rows tr").count();
  await page.getByLabel("Show state").selectOption("");

  seen.counts = await page.evaluate(() =>
    Object.fromEntries([...document.querySelectorAll("#counts li")].map((li) => [li.dataset.state, Number(li.querySelector("strong").textContent)])),
  );
  seen.throughput = await page.locator("#throughput").textContent();
  seen.health = await page.locator("#health").textContent();

  mkdirSync(config.artifacts, { recursive: true });
  seen.screenshot = join(config.artifacts, "dashboard.png");
  await page.screenshot({ path: seen.screenshot, fullPage: true });

  // A narrow screen: one column, nothing wider than the viewport, the table as labelled blocks.
  await page.setViewportSize({ width: 360, height: 780 });
  seen.narrow_overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  seen.narrow_header_hidden = await page.evaluate(() => document.querySelector("thead").getBoundingClientRect().width <= 1);
  seen.narrow_screenshot = join(config.artifacts, "dashboard-narrow.png");
  await page.screenshot({ path: seen.narrow_screenshot, fullPage: true });

  watching = false;
  await context.close();
} catch (e) {
  problems.push("step failed: " + e.message.split("\n")[0]);
} finally {
  watching = false;
  await browser.close();
}

console.log(JSON.stringify({ seen, problems }));
process.exit(problems.length ? 1 : 0);
