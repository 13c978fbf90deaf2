// Loads the metrics page in headless Chromium, waits until both charts have
// drawn a series for at least two reporters, a gap and a restart are marked
// and the table flags a leak, saves a screenshot and prints what the page drew
// as JSON. Usage: node metrics_page.cjs URL SCREENSHOT.png
// PLAYWRIGHT_CORE is the path of an installed playwright-core package.
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

(async () => {
  const [url, out] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
    const errors = [];
    page.on("pageerror", e => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(
      () => window.aioq && window.aioq.drawn().cpu >= 2 && window.aioq.drawn().mem >= 2,
      null, { timeout: 20000 });
    try {
      await page.waitForFunction(() => {
        const m = window.aioq.marks().map(m => m.what);
        const f = window.aioq.flags();
        return m.some(w => w.startsWith("gap")) && m.includes("restart")
          && (f.green || []).includes("LEAK?") && f.red !== undefined;
      }, null, { timeout: 30000 });
    } catch (e) {
      const seen = await page.evaluate(() => ({ marks: window.aioq.marks(), flags: window.aioq.flags() }));
      console.error("waiting for marks and flags:", JSON.stringify(seen));
      throw e;
    }
    // A little more data, so the screenshot shows lines rather than dots.
    await page.waitForTimeout(1500);
    const drawn = await page.evaluate(() => window.aioq.drawn());
    const marks = await page.evaluate(() => window.aioq.marks());
    const flags = await page.evaluate(() => window.aioq.flags());
    const colours = await page.evaluate(() => window.aioq.colours());
    const status = await page.textContent("#status");
    await page.screenshot({ path: out, fullPage: true });
    console.log(JSON.stringify({ drawn, status, errors, marks, flags, colours }));
  } finally {
    await browser.close();
  }
})().catch(e => { console.error(e); process.exit(1); });
