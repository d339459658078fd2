"""The fleet page of daemonproxy-sheriff serve --http (issue 18) in a real
browser: Debian's chromium, headless, driven by selenium through
chromium-driver, against a real sheriff steering two real bridges
(dep-1, dep-2), each deputy on a host of its own: network namespaces A and
B, the sheriff, the browser and the test's own connections in S, joined by
a bridge in S and talking LCM over udpm multicast (support.three_namespaces,
as tests/fleet/test_multihost.py). A click starts a group,
stops and restarts; a command's output reaches the pane line by line, in
order, within a second; markup in output stays text; a killed deputy's
rows say "not heard"; the page fits 400 px. Screenshots go to
target/test-output/browser/ (and, with DAEMONPROXY_DOCS_SCREENSHOTS=1, the
two the README shows to docs/)."""

import os
import shutil
import time
import unittest

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from support import ROOT, Host, Procs, WebSheriff, alive, enter_netns, three_namespaces, wait_until

URL = "udpm://239.255.76.67:7667?ttl=1"

CONFIG = """\
group "g1" {
    cmd "alpha" { exec = "sleep 301"; deputy = "dep-1"; }
    cmd "beta" { exec = "sleep 302"; deputy = "dep-2"; }
}
group "g2" {
    cmd "talker" { exec = "/usr/bin/python3 -u TALKER"; deputy = "dep-1"; }
    cmd "markup" { exec = "sh -c 'echo \\"<img src=x onerror=document.title=1><script>document.title=2</script>\\"; exec sleep 300'"; deputy = "dep-2"; }
}
"""

# 2,000 lines, each with the time it was printed (ms), about 250 a second.
TALKER = """\
import time
for i in range(2000):
    print("line", i, int(time.time() * 1000), flush=True)
    time.sleep(0.004)
print("talker done", flush=True)
"""

SHOTS = os.path.join(ROOT, "target", "test-output", "browser")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


class Browser(unittest.TestCase):
    def setUp(self):
        for path, pkg in ((CHROMIUM, "chromium"), (DRIVER, "chromium-driver")):
            if not os.access(path, os.X_OK):
                self.fail(f"{path} not found: apt-get install {pkg} (.ci/run does)")
        ns = three_namespaces(self)
        enter_netns(self, ns["S"])
        self.procs = Procs()
        self.addCleanup(self.procs.stop_all)
        tmp = self.procs.tempdir("sheriff-browser-")
        self.hosts = {d: Host(self.procs, URL, d, prefix=("ip", "netns", "exec", ns[k]))
                      for d, k in (("dep-1", "A"), ("dep-2", "B"))}
        talker = os.path.join(tmp, "talker.py")
        with open(talker, "w") as f:
            f.write(TALKER)
        self.s = WebSheriff(self.procs, tmp, CONFIG.replace("TALKER", talker), args=("--lcm-url", URL),
                            deputies=("dep-1", "dep-2"))
        o = webdriver.ChromeOptions()
        o.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1100,900", f"--user-data-dir={tmp}/chromium"):
            o.add_argument(a)
        self.d = webdriver.Chrome(service=Service(DRIVER), options=o)
        self.addCleanup(self.d.quit)
        os.makedirs(SHOTS, exist_ok=True)

    def shot(self, name, docs=None):
        path = os.path.join(SHOTS, name)
        self.d.save_screenshot(path)
        if docs and os.environ.get("DAEMONPROXY_DOCS_SCREENSHOTS") == "1":
            shutil.copy(path, os.path.join(ROOT, "docs", docs))

    def rows(self):
        """{(deputy, id): {"status", "pid", "deputy_text"}} as the table shows them."""
        return self.d.execute_script("""
            const out = {};
            for (const tr of document.querySelectorAll('#commands tbody tr.cmd')) {
                out[tr.dataset.deputy + '/' + tr.dataset.id] = {
                    status: tr.querySelector('.c-status').textContent,
                    pid: tr.querySelector('.c-pid').textContent,
                    deputy_text: tr.querySelector('.c-deputy').textContent };
            }
            return out;""")

    def wait_rows(self, pred, timeout, what):
        r = wait_until(lambda: (lambda r: r if pred(r) else None)(self.rows()), timeout, 0.05)
        self.assertTrue(r, f"{what}: {self.rows()}")
        return r

    def click(self, css):
        # the table is redrawn by each snapshot: an element found just
        # before a redraw is stale by the click, so find it again
        for _ in range(20):
            try:
                self.d.find_element(By.CSS_SELECTOR, css).click()
                return
            except StaleElementReferenceException:
                time.sleep(0.05)
        self.d.find_element(By.CSS_SELECTOR, css).click()

    def open_pane(self, deputy, cid):
        self.click(f'#commands tr.cmd[data-deputy="{deputy}"][data-id="{cid}"] td.c-id')
        self.assertTrue(wait_until(lambda: self.d.find_element(By.ID, "pane-title").text == f"{deputy} / {cid}", 2))

    def pane_text(self):
        return self.d.execute_script("return document.getElementById('output').textContent")

    def test_the_fleet_page(self):
        d = self.d
        # three hosts: each bridge in a network namespace of its own, the
        # sheriff (and this test, and the browser) in a third
        nets = {os.readlink(f"/proc/{p}/ns/net") for p in
                (self.hosts["dep-1"].bridge.pid, self.hosts["dep-2"].bridge.pid, self.s.p.pid, os.getpid())}
        self.assertEqual(len(nets), 3, nets)
        d.get(self.s.base + "/")
        keys = {"dep-1/alpha", "dep-2/beta", "dep-1/talker", "dep-2/markup"}
        self.wait_rows(lambda r: set(r) == keys and all(v["status"] == "Stopped (OK)" for v in r.values()), 10,
                       "every command, stopped")
        self.assertEqual(d.find_element(By.ID, "conn").text, "live")

        # start a group with a click: each row Running within 2 s, pids in /proc
        t0 = time.monotonic()
        self.click('#commands tr.group-row[data-group="g1"] button.group-start')
        r = self.wait_rows(lambda r: all(r[k]["status"] == "Running" and r[k]["pid"] != "-"
                                         for k in ("dep-1/alpha", "dep-2/beta")), 2, "g1 running")
        took = time.monotonic() - t0
        pids = {k: int(r[k]["pid"]) for k in ("dep-1/alpha", "dep-2/beta")}
        self.assertTrue(all(alive(p) for p in pids.values()), pids)
        self.assertIn("start group g1: 2 changed", d.find_element(By.ID, "result").text)

        # stop one from its pane, restart the other through the selection
        self.open_pane("dep-1", "alpha")
        self.assertIn("sleep 301", d.find_element(By.ID, "settings").text)
        self.click('#pane-actions button[data-verb="stop"]')
        self.wait_rows(lambda r: r["dep-1/alpha"]["status"] == "Stopped (OK)", 3, "alpha stopped")
        self.assertTrue(wait_until(lambda: not alive(pids["dep-1/alpha"]), 5))
        self.click('#commands tr.cmd[data-deputy="dep-2"][data-id="beta"] input[type=checkbox]')
        self.click('#actions button[data-verb="restart"][data-target="selected"]')
        self.wait_rows(lambda r: r["dep-2/beta"]["status"] == "Running" and
                       r["dep-2/beta"]["pid"] not in ("-", str(pids["dep-2/beta"])), 3, "beta restarted")
        self.assertTrue(alive(int(self.rows()["dep-2/beta"]["pid"])))

        # output: every line, in order, each in the pane within 1 s of its printing
        self.open_pane("dep-1", "talker")
        self.click('#pane-actions button[data-verb="start"]')
        seen, late = 0, []
        end = time.monotonic() + 40
        while time.monotonic() < end:
            text = self.pane_text()
            now_ms = time.time() * 1000
            lines = text.split("\n")[:-1]  # whole lines only: a chunk may end mid-line
            for line in lines[seen:]:
                f = line.split()
                if f[0] == "line":
                    late.append(now_ms - int(f[2]))
            seen = len(lines)
            if "talker done" in text:
                break
            time.sleep(0.1)
        lines = [" ".join(x.split()[:2]) for x in self.pane_text().splitlines()]
        self.assertEqual(lines, [f"line {i}" for i in range(2000)] + ["talker done"], "every line, in order")
        self.assertLess(max(late), 1000, f"slowest line {max(late):.0f} ms")
        d.execute_script("document.getElementById('pane').scrollIntoView()")
        self.shot("output-pane.png", "sheriff-output.png")

        # markup in output is text
        title = d.title
        self.open_pane("dep-2", "markup")
        self.click('#pane-actions button[data-verb="start"]')
        self.assertTrue(wait_until(lambda: "<script>" in self.pane_text(), 5), self.pane_text())
        self.assertIn("<img src=x onerror=document.title=1>", self.pane_text())
        self.assertEqual(d.execute_script("return document.getElementById('output').children.length"), 0)
        time.sleep(0.3)
        self.assertEqual(d.title, title)
        self.click("#pane-close")
        d.execute_script("window.scrollTo(0, 0)")
        self.shot("fleet.png", "sheriff-fleet.png")

        # a 400-px-wide screen: nothing wider than the window but the table's own scroller
        d.set_window_size(400, 900)
        self.assertTrue(wait_until(lambda: d.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"), 2))
        self.shot("fleet-400px.png")
        d.set_window_size(1100, 900)

        # a deputy killed: its rows say "not heard" within the liveness window
        t0 = time.monotonic()
        self.hosts["dep-2"].bridge.kill()
        self.wait_rows(lambda r: all("not heard" in r[k]["deputy_text"] for k in ("dep-2/beta", "dep-2/markup"))
                       and "not heard" not in r["dep-1/talker"]["deputy_text"], 8, "dep-2 not heard")
        gone = time.monotonic() - t0
        d.get(self.s.base + "/deputies")
        self.assertTrue(wait_until(lambda: d.execute_script(
            "const r = document.querySelector('#deputy-table tr[data-deputy=\"dep-2\"]');"
            "return r && r.classList.contains('lost') && r.textContent.includes('not heard')"), 3))
        self.shot("deputies.png")
        print(f"\ngroup running after {took:.2f} s; slowest output line {max(late):.0f} ms; "
              f"deputy not heard after {gone:.1f} s")


if __name__ == "__main__":
    unittest.main()
