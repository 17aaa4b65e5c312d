// Opens a page in a real headless Chromium (the OS package, driven by
// puppeteer-core) and reports what a person would see go wrong: console
// errors, uncaught exceptions, and for each chart whether the charting
// library drew something on its canvas.

import { existsSync } from "node:fs";
import puppeteer from "puppeteer-core";

export const chromiumPath = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));

export interface PageCheck {
  errors: string[];
  charts: { id: string; width: number; height: number; paintedPixels: number }[];
  title: string;
}

/** Loads `file`, waits for its charts, and counts the painted pixels of each chart's canvas. */
export async function checkPage(file: string, screenshot?: string): Promise<PageCheck> {
  if (!chromiumPath) throw new Error("no Chromium: scripts/setup.sh --docker installs the chromium package");
  const browser = await puppeteer.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    const errors: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    page.on("pageerror", (err) => errors.push(String(err)));
    page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()}`));
    await page.goto(`file://${file}`, { waitUntil: "load" });
    await page.waitForFunction("window.simdcCharts > 0", { timeout: 15_000 });
    // ECharts draws on its next animation frames; let them run.
    await new Promise((r) => setTimeout(r, 1_500));
    const charts = await page.evaluate(() =>
      [...document.querySelectorAll(".chart")].map((div) => {
        const canvas = div.querySelector("canvas");
        if (!canvas) return { id: div.id, width: 0, height: 0, paintedPixels: 0 };
        const pixels = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) if (pixels[i]! > 0) painted += 1;
        return { id: div.id, width: canvas.width, height: canvas.height, paintedPixels: painted };
      }),
    );
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    return { errors, charts, title: await page.title() };
  } finally {
    await browser.close();
  }
}
