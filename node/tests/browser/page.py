"""Drives wharf's browser page in headless Chromium (Debian's, through Playwright): signs in by
pasting a token, uploads a file through Uppy (tus), waits for 100 %, for the file in the list
and for its scan verdict to arrive (live events), downloads it, and signs in again through the
link `wharf token issue --url` printed. Then a resume after a reload: a second file's upload
is cut off in the browser after two PATCHes, the page is reloaded, the same file is added
again, and Uppy resumes it where the server says it stands. Screenshots go to OUT. Prints a
JSON summary.

    python3 page.py LINK FILE OUT SECOND_FILE
"""
import json
import os
import sys
import time
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

link, src, out, src2 = sys.argv[1:5]
base, token = link.split("/#token=", 1)
name = os.path.basename(src)
summary = {}

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 1500})
    page = ctx.new_page()
    page.on("console", lambda m: print("console:", m.type, m.text, file=sys.stderr))
    page.on("pageerror", lambda e: print("page error:", e, file=sys.stderr))

    page.goto(base + "/")
    page.wait_for_selector("#sign-in:not([hidden])")
    page.screenshot(path=f"{out}/1-sign-in.png")
    page.fill("#token", token)
    page.click("#sign-in-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")
    summary["who"] = page.text_content("#who")

    page.locator("#uploader input[type=file]").first.set_input_files(src)
    page.wait_for_selector(".uppy-StatusBar-actionBtn--upload")
    page.screenshot(path=f"{out}/2-file-added.png")
    page.click(".uppy-StatusBar-actionBtn--upload")
    page.wait_for_selector(".uppy-StatusBar.is-complete", timeout=180_000)
    summary["progress"] = page.text_content("#progress")
    row = page.locator("#files tbody tr", has_text=name)
    row.wait_for(timeout=30_000)
    summary["pending_or_clean"] = row.locator(".scan").text_content()
    # The verdict arrives by the event stream: the row changes without a reload.
    row.locator(".scan", has_text="clean").wait_for(timeout=60_000)
    summary["scan"] = row.locator(".scan").text_content()
    summary["size"] = row.locator(".size").text_content()
    summary["usage"] = page.text_content("#usage-text")
    summary["events"] = page.locator("#events li").all_text_contents()
    page.screenshot(path=f"{out}/3-uploaded-and-scanned.png", full_page=True)

    with page.expect_download() as d:
        row.locator("button.download").click()
    d.value.save_as(f"{out}/downloaded.bin")
    summary["downloaded"] = f"{out}/downloaded.bin"
    summary["download_name"] = d.value.suggested_filename

    # Resume after a reload. The third PATCH of the second file is held in the browser and never
    # sent, so the server holds exactly two PATCHes' bytes when the page goes away.
    patches, held, cutting = [], [], [True]

    def tus(url):
        return urlparse(url).path.startswith("/files/")

    def hold_third_patch(route, request):
        if cutting[0] and request.method == "PATCH":
            patches.append(request.headers.get("upload-offset"))
            if len(patches) >= 3:
                held.append(request.url)
                return  # never answered: the reload cancels it
        route.continue_()

    page.route(tus, hold_third_patch)
    # A fresh page: the dashboard of a finished upload offers no file input.
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    page.locator("#uploader input[type=file]").first.set_input_files(src2)
    page.click(".uppy-StatusBar-actionBtn--upload")
    deadline = time.time() + 120
    while not held and time.time() < deadline:
        page.wait_for_timeout(100)
    if not held:
        raise SystemExit(f"the third PATCH never came (PATCHes seen: {patches})")
    page.screenshot(path=f"{out}/5-cut-off-before-reload.png", full_page=True)

    after = []

    def record(request):
        if tus(request.url):
            after.append({
                "method": request.method,
                "url": request.url,
                "offset": request.headers.get("upload-offset"),
            })

    page.on("request", record)
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    cutting[0] = False
    # The page lists the upload the reload cut off, with what the node holds of it.
    unfinished = page.locator("#unfinished tbody tr", has_text=os.path.basename(src2))
    unfinished.wait_for(timeout=30_000)
    summary["unfinished"] = unfinished.text_content()
    page.screenshot(path=f"{out}/6-unfinished-after-reload.png", full_page=True)
    # A person picks the same file again; tus-js-client finds its upload by the file's
    # fingerprint (kept in localStorage) and asks the server for the offset.
    page.locator("#uploader input[type=file]").first.set_input_files(src2)
    page.click(".uppy-StatusBar-actionBtn--upload")
    page.wait_for_selector(".uppy-StatusBar.is-complete", timeout=180_000)
    page.locator("#files tbody tr", has_text=os.path.basename(src2)).wait_for(timeout=30_000)
    page.wait_for_selector("#unfinished", state="hidden", timeout=30_000)
    page.screenshot(path=f"{out}/7-resumed-after-reload.png", full_page=True)
    summary["resume"] = {"offsets_before": patches, "held": held[0], "after": after}

    # The link signs in by itself (a new browser profile), and takes the token out of the URL.
    other = browser.new_context().new_page()
    other.goto(link)
    other.wait_for_selector("#app:not([hidden])")
    other.locator("#files tbody tr", has_text=name).wait_for(timeout=30_000)
    summary["link_url_after"] = other.url
    other.screenshot(path=f"{out}/4-signed-in-by-link.png", full_page=True)
    browser.close()

print(json.dumps(summary))
