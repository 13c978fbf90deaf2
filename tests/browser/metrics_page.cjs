// Loads the metrics page in headless Chromium, waits until both charts have
// drawn a series for at least two reporters, saves a screenshot and prints what
// the page drew as JSON. Usage: node metrics_page.cjs URL SCREENSHOT.png
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
    // A little more data, so the screenshot shows lines rather than dots.
    await page.waitForTimeout(1500);
    const drawn = await page.evaluate(() => window.aioq.drawn());
    const status = await page.textContent("#status");
    await page.screenshot({ path: out, fullPage: true });
    console.log(JSON.stringify({ drawn, status, errors }));
  } finally {
    await browser.close();
  }
})().catch(e => { console.error(e); process.exit(1); });
