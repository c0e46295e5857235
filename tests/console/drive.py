"""Drives the operator console in headless Chromium (Selenium with Debian's chromium and
chromedriver): signs in with an admin key, waits for the broken provider's endpoint to show
ejected, ejects another endpoint from the page, opens a request that fell back, sets a budget
and client limits, and visits every page, writing a screenshot of each (checked not to be blank).

Arguments: console URL, API key, screenshot directory, endpoint expected ejected, endpoint to
eject, org whose day budget to set. Prints one JSON object of what it saw.
"""

import json
import os
import struct
import sys
import time
import zlib

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

URL, KEY, OUT, BROKEN, TO_EJECT, ORG = sys.argv[1:7]
os.makedirs(OUT, exist_ok=True)


def distinct_colours(png):
    """How many distinct RGB(A) pixel values a PNG has (a blank page has one or two)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 4
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", data[:10])
            assert depth == 8, "unexpected bit depth"
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    # Filtered scanlines: compare the bytes as they are (filters keep distinct rows distinct), a
    # sample of rows is enough.
    seen = set()
    for row in range(0, height, max(1, height // 200)):
        line = raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)]
        for x in range(0, len(line), channels * 7):
            seen.add(line[x : x + channels])
    return len(seen)


def wait(what, check, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        try:
            got = check()
            if got:
                return got
        except Exception:  # the page is being redrawn
            pass
        if time.time() > deadline:
            raise SystemExit("never " + what + "; page: " + driver.find_element(By.ID, "page").text[:2000])
        time.sleep(0.2)


def shot(name):
    png = driver.get_screenshot_as_png()
    path = os.path.join(OUT, name + ".png")
    with open(path, "wb") as f:
        f.write(png)
    colours = distinct_colours(png)
    if colours < 20:
        raise SystemExit(name + " screenshot is blank (" + str(colours) + " colours)")
    seen["shots"][name] = {"bytes": len(png), "colours": colours}


def go(view):
    driver.execute_script("location.hash = arguments[0]", "#" + view)
    wait(view + " drawn", lambda: driver.find_element(By.ID, "page").get_attribute("data-view") == view)


def row(endpoint):
    return driver.find_element(By.CSS_SELECTOR, 'tr[data-endpoint="' + endpoint + '"]')


def status():
    return driver.find_element(By.ID, "status").text


options = Options()
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
seen = {"shots": {}}
try:
    driver.get(URL)
    driver.find_element(By.ID, "signin-key").send_keys(KEY)
    driver.find_element(By.ID, "signin-go").click()
    wait("signed in", lambda: "(admin)" in driver.find_element(By.ID, "who").text)
    go("overview")
    wait("overview figures", lambda: "requests, last hour" in driver.find_element(By.ID, "page").text)
    shot("overview")

    go("endpoints")
    wait(BROKEN + " ejected", lambda: "ejected" in row(BROKEN).find_element(By.CSS_SELECTOR, ".badge").text)
    wait("charts over time", lambda: driver.find_elements(By.CSS_SELECTOR, "svg.spark polyline"))
    seen["broken_state"] = row(BROKEN).find_element(By.CSS_SELECTOR, ".badge").text
    # The table redraws every 2 s: click again if it went stale under the pointer.
    wait("eject form", lambda: row(TO_EJECT).find_element(By.CSS_SELECTOR, "button.eject").click() or driver.find_element(By.ID, "eject-form").is_displayed())
    driver.find_element(By.ID, "eject-reason").send_keys("ejected from the console e2e")
    driver.find_element(By.ID, "eject-go").click()
    wait(TO_EJECT + " ejected from the page", lambda: "ejected" in row(TO_EJECT).find_element(By.CSS_SELECTOR, ".badge").text)
    seen["ejected_state"] = row(TO_EJECT).find_element(By.CSS_SELECTOR, ".badge").text
    shot("endpoints")

    go("requests")
    rows = wait("requests listed", lambda: driver.find_elements(By.CSS_SELECTOR, "tr.request"))
    fell_back = [r for r in rows if r.find_elements(By.CSS_SELECTOR, "td b")]
    if not fell_back:
        raise SystemExit("no request with fallbacks listed: " + driver.find_element(By.ID, "page").text[:2000])
    fell_back[0].click()
    trace = wait("trace shown", lambda: driver.find_element(By.ID, "trace").text)
    seen["trace"] = trace
    seen["requests_listed"] = len(rows)
    shot("requests")

    go("budgets")
    for field, value in (("org", ORG), ("limit", "0.000001"), ("reason", "console e2e budget")):
        el = driver.find_element(By.ID, "budget-" + field)
        el.clear()
        el.send_keys(value)
    driver.find_element(By.ID, "budget-set").click()
    wait("budget set", lambda: "set the day budget" in status())
    # Billing applies the policy's new budget within a second: look again until it lists it.
    def listed():
        go("usage")
        go("budgets")
        return "0.000001" in driver.find_element(By.ID, "page").text

    wait("budget listed", listed)
    for field, value in (("rpm", "600"), ("reason", "console e2e limits")):
        driver.find_element(By.ID, "limits-" + field).send_keys(value)
    driver.find_element(By.ID, "limits-set").click()
    wait("limits set", lambda: "set the client limits" in status())

    def limited():
        go("usage")
        go("budgets")
        return "600" in driver.find_element(By.ID, "page").text

    wait("limits listed", limited)
    shot("budgets")

    go("usage")
    wait("usage chart", lambda: driver.find_elements(By.CSS_SELECTOR, "svg.chart"))
    shot("usage")

    go("explain")
    body = driver.find_element(By.ID, "explain-body")
    body.clear()
    body.send_keys(json.dumps({"model": "demo-fast", "messages": [{"role": "user", "content": "hi"}]}))
    driver.find_element(By.CSS_SELECTOR, "#explain-form button").click()
    seen["explained"] = wait("plan shown", lambda: driver.find_element(By.ID, "explained").text)
    shot("explain")

    go("overrides")
    seen["audit"] = wait("audit shown", lambda: "ejected from the console e2e" in driver.find_element(By.ID, "page").text and driver.find_element(By.ID, "page").text)
    shot("overrides")
finally:
    driver.quit()
print(json.dumps(seen))
