// Opens a page of the Temporal UI in headless Chromium (Debian's `chromium`) and waits for
// `text` to appear in it, as a person looking at the page would see it.
//
//   node temporal_ui.cjs <url> <text> [timeout_ms]
//
// Prints "found" and exits 0 when the text shows; otherwise prints the page's text and
// every failed request (a codec server the browser could not reach, a CORS refusal) and
// exits 1.
const puppeteer = require("puppeteer-core");

(async () => {
  const [url, text, timeout = "30000"] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // This machine's network is closed: Chromium's own background calls only fail.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--disable-background-networking"],
  });
  const failures = [];
  try {
    const page = await browser.newPage();
    page.on("requestfailed", (r) => failures.push(`${r.url()}: ${r.failure().errorText}`));
    await page.goto(url, { waitUntil: "domcontentloaded" });
    try {
      await page.waitForFunction((t) => document.body.innerText.includes(t), { timeout: Number(timeout) }, text);
      console.log("found");
    } catch {
      console.log(`"${text}" not shown. Page text:\n${await page.evaluate(() => document.body.innerText)}`);
      console.log(`Failed requests:\n${failures.join("\n")}`);
      process.exitCode = 1;
    }
  } finally {
    await browser.close();
  }
})();
