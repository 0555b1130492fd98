#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The helpdesk console in a real browser: Debian's Chromium, headless, driven by Selenium
(chromedriver), with the operator's client certificate in an NSS database and an auto-select
rule for the console's origin, as a helpdesk PC would have it. One scenario per run; it prints
one JSON object and exits 1 with the failed check on stderr. console_browser_test.sh runs them.

  console_browser.py --base URL --ca CA --work DIR [--shots DIR] SCENARIO [options]

Scenarios: helpdesk (find the old laptop by hostname, review, approve; with two-person approvals
her own confirmation is refused), confirm (a second helpdesk operator confirms it; later grants
and revokes another), auditor (sees the approval and the verified chain, the audit of a period,
no approve button; a forged approve form is refused), nocert
(a browser without a certificate gets nothing), cross-site (a form on another origin posting
to the console is refused), admin (revokes a platform: confirmation page, mistyped hostname
refused, revoked), compliance (never backed up and revoked platforms listed).
"""
import argparse
import contextlib
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import threading

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CSRF_COOKIE = "__Host-tpmma-csrf"
TOKEN_CONTEXT = b"tpm-ma console form token v1\n"  # server/console/csrf.cc


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def nss_home(work, name, pem, ca):
    """$HOME with .pki/nssdb (empty password): the MA's CA trusted, the operator's key and
    certificate imported when `pem` is given. Chromium reads only $HOME/.pki/nssdb."""
    home = os.path.join(work, "home-" + name)
    db = os.path.join(home, ".pki", "nssdb")
    os.makedirs(db, exist_ok=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("certutil", "-N", "-d", "sql:" + db, "--empty-password")
    run("certutil", "-A", "-d", "sql:" + db, "-n", "tpm-ma CA", "-t", "C,,", "-i", ca)
    if pem:
        p12 = os.path.join(work, name + ".p12")
        run("openssl", "pkcs12", "-export", "-in", pem, "-inkey", pem, "-name", name,
            "-out", p12, "-passout", "pass:")
        run("pk12util", "-i", p12, "-d", "sql:" + db, "-W", "")
    return home


def browser(a, name, pem):
    home = nss_home(a.work, name, pem, a.ca)
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for sw in ["--headless=new", "--disable-dev-shm-usage", "--window-size=1280,1100",
               "--user-data-dir=" + os.path.join(home, "profile")]:
        o.add_argument(sw)
    if os.geteuid() == 0:
        o.add_argument("--no-sandbox")  # Chromium refuses to run its sandbox as root
    # AutoSelectCertificateForUrls as a profile content setting: the certificate the MA's
    # operator CA issued is presented to this origin without a dialog.
    o.add_experimental_option("prefs", {
        "profile.content_settings.exceptions.auto_select_certificate": {
            a.base + ",*": {"setting": {"filters": [{"ISSUER": {"CN": "tpm-ma operator CA"}}]}}}})
    env = dict(os.environ, HOME=home)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver", env=env), options=o)
    d.set_page_load_timeout(30)
    return d


@contextlib.contextmanager
def opened(a, name, pem):
    """A browser for one scenario, closed whatever happens in it."""
    d = browser(a, name, pem)
    try:
        yield d
    finally:
        d.quit()


def shot(a, d, name):
    if a.shots:
        os.makedirs(a.shots, exist_ok=True)
        d.save_screenshot(os.path.join(a.shots, name + ".png"))


def wait_id(d, element_id):
    return WebDriverWait(d, 20).until(EC.presence_of_element_located((By.ID, element_id)))


def refusal(a, d, out, key, words, shot_name):
    """The page is the console's refusal and says `words`; it goes into out[key]."""
    err = wait_id(d, "error").text
    out[key] = err
    check(words in err, f"{key}: refused, but not with '{words}': {err}")
    shot(a, d, shot_name)


def notice(a, d, out, key, words, shot_name=None):
    """The page's notice says `words`; it goes into out[key]."""
    n = wait_id(d, "notice").text
    out[key] = n
    check(all(w in n for w in words), f"{key}: the notice does not say {words}: {n}")
    if shot_name:
        shot(a, d, shot_name)
    return n


def status_of(d, approval):
    return wait_id(d, f"approval-{approval}").find_element(By.CSS_SELECTOR, "td:nth-child(2)").text


def expect_status(d, out, approval, want):
    out["status"] = status_of(d, approval)
    check(out["status"] == want, f"approval {approval} is {out['status']}, not {want}")


def row_button(d, approval, action):
    row = wait_id(d, f"approval-{approval}")
    return row.find_element(By.CSS_SELECTOR, f"form[action='/console/approvals/{action}'] button")


def text(d):
    return d.execute_script("return document.body ? document.body.innerText : ''")


def helpdesk(a, out):
    with opened(a, "helpdesk", a.cert) as d:
        d.get(a.base + "/console/")
        check(wait_id(d, "me").text == a.operator, "the console does not say who is signed in")
        d.find_element(By.ID, "q").send_keys(a.hostname)
        d.find_element(By.ID, "find").click()
        rows = wait_id(d, "results").find_elements(By.CSS_SELECTOR, "tbody tr")
        out["found"] = len(rows)
        check(len(rows) == 2, f"{a.hostname} should find the old and the new board: {len(rows)}")
        shot(a, d, "1-find")
        d.find_element(By.CSS_SELECTOR, f"a[href='/console/platform?id={a.old}']").click()
        check(wait_id(d, "platform-id").text == a.old, "the platform page shows another platform")
        check(len(d.find_elements(By.CSS_SELECTOR, "#packages tbody tr")) >= 1,
              "the old platform's page lists no package")
        check(not d.find_elements(By.ID, "revoke-link"), "a helpdesk operator may revoke platforms")
        out["sessions"] = len(d.find_elements(By.CSS_SELECTOR, "#sessions tbody tr"))
        check(out["sessions"] >= 1, "the old board's page shows no open session (it backed up)")
        shot(a, d, "2-platform")
        d.find_element(By.ID, "reason").send_keys(a.reason)
        d.find_element(By.ID, "review").click()
        wait_id(d, "grant")  # the review page (the platform page's button is #review too)
        review = wait_id(d, "review").text
        check(a.old in review and a.new in review, "the review does not show both platforms")
        # Each board's SRK, certified by its AK: the new one is where the packages will go.
        srk = [td.text for td in
               d.find_elements(By.XPATH, "//table[@id='review']//tr[th='Storage root key (SRK)']/td")]
        check(len(srk) == 2, f"the review has no SRK row: {srk}")
        for text, name in zip(srk, [a.srk_old, a.srk_new]):
            check(f"Name {name}," in text and "certified by the platform's AK" in text,
                  f"the review's SRK is not {name} certified: {text}")
        out["srk_new"] = srk[1]
        shot(a, d, "3-review")
        d.find_element(By.ID, "grant").click()
        n = notice(a, d, out, "granted", ["granted", "pending", a.new], "4-approvals")
        out["approval_id"] = int(n.split()[1])
        # Two-person approvals: the one who granted it may not also confirm it.
        check(status_of(d, out["approval_id"]) == "pending", "the new approval is not pending")
        row_button(d, out["approval_id"], "confirm").click()
        refusal(a, d, out, "own_confirm", "second operator", "4b-own-confirm-refused")


def confirm(a, out):
    """A second helpdesk operator confirms helen's pending approval in the queue."""
    with opened(a, "confirm", a.cert) as d:
        d.get(a.base + "/console/approvals")
        check(status_of(d, a.approval) == "pending", "the approval is not pending before")
        row_button(d, a.approval, "confirm").click()
        notice(a, d, out, "confirmed", [f"Approval {a.approval} confirmed."])
        expect_status(d, out, a.approval, "active")
        shot(a, d, "4c-confirmed")


def grant_and_revoke(a, out):
    """The same operator grants a second approval (pending) and revokes it with a reason."""
    with opened(a, "grant-revoke", a.cert) as d:
        d.get(a.base + f"/console/approve?old={a.old}&new={a.new}&reason=ticket+4713&expires=3600")
        wait_id(d, "grant").click()
        n = notice(a, d, out, "granted", ["granted", "pending"])
        approval = int(n.split()[1])
        out["approval_id"] = approval
        row = wait_id(d, f"approval-{approval}")
        row.find_element(By.CSS_SELECTOR, "input[name=reason]").send_keys(a.reason)
        row_button(d, approval, "revoke").click()
        notice(a, d, out, "revoked", [f"Approval {approval} revoked."], "4d-revoked")
        expect_status(d, out, approval, "revoked")
        check(not wait_id(d, f"approval-{approval}").find_elements(By.CSS_SELECTOR, "form"),
              "a revoked approval still offers a button")


def auditor(a, out):
    with opened(a, "auditor", a.cert) as d:
        d.get(a.base + "/console/approvals")
        out["approval_status"] = status_of(d, a.approval)
        check(not d.find_elements(By.CSS_SELECTOR, "form[method=post]"),
              "an auditor is offered a button that changes an approval")
        shot(a, d, "5-approvals-auditor")
        d.get(a.base + f"/console/platform?id={a.old}")
        wait_id(d, "platform-id")
        check(not d.find_elements(By.ID, "approve-form"), "an auditor is offered the approve form")
        d.find_element(By.ID, "platform-audit").click()
        objects = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#audit tbody td.id")]
        check(objects and all(o == a.old for o in objects),
              f"the platform's audit link shows other objects' records: {set(objects)}")
        out["platform_audit_rows"] = len(objects)
        d.get(a.base + "/console/audit?action=Operator.Approve")
        chain = wait_id(d, "chain").text
        out["chain"] = chain
        check("verifies" in chain, f"the audit page does not say the chain verifies: {chain}")
        approvals = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#audit tbody tr")]
        check(any(a.approver in r and "ok" in r for r in approvals),
              f"the audit page lists no approval by {a.approver}: {approvals}")
        shot(a, d, "6-audit")
        # A period: today holds the approval, a period that ends before it starts is refused.
        d.get(a.base + f"/console/audit?action=Operator.Approve&from={a.today}&to={a.today}")
        out["today_rows"] = len(d.find_elements(By.CSS_SELECTOR, "#audit tbody tr"))
        check(out["today_rows"] == len(approvals), f"today's audit is not the whole audit: "
              f"{out['today_rows']} of {len(approvals)}")
        check(wait_id(d, "from").get_attribute("value") == a.today, "the filter forgot its day")
        d.get(a.base + f"/console/audit?from={a.today}&to=2000-01-01")
        refusal(a, d, out, "bad_period", "ends before it starts", "6b-audit-bad-period")
        # The form posted anyway, with a token that is valid for this operator's certificate
        # and cookie: the role decides, and the refusal says so.
        cookie = d.get_cookie(CSRF_COOKIE)
        check(cookie is not None, "the console set no form cookie")
        token = hmac.new(cookie["value"].encode(), TOKEN_CONTEXT + a.fingerprint.encode(),
                         hashlib.sha256).hexdigest()
        post(d, a.base + "/console/approve", {"csrf": token, "old": a.old, "new": a.new,
                                              "reason": "auditor tries", "expires": "3600"})
        refusal(a, d, out, "auditor_post", "may not", "7-auditor-refused")


def post(d, url, fields):
    """A form built and submitted from WebDriver (not from the page: its CSP allows no script)."""
    d.execute_script("""
        const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];
        for (const [k, v] of Object.entries(arguments[1])) {
          const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v;
          f.appendChild(i);
        }
        document.body.appendChild(f); f.submit();""", url, fields)


def nocert(a, out):
    with opened(a, "nocert", None) as d:
        try:
            d.get(a.base + "/console/?q=" + a.hostname)
        except TimeoutException:
            raise Failed("the browser without a certificate waited for a certificate dialog")
        body = text(d)
        out["nocert"] = body.strip().splitlines()[-1] if body.strip() else ""
        check("for operators" in body, f"no refusal shown without a certificate: {body[:200]}")
        check(a.hostname not in body, "a page without a certificate names a platform")
        check(not d.find_elements(By.ID, "results"), "a browser without a certificate saw results")
        shot(a, d, "8-no-certificate")


def cross_site(a, out):
    """Another origin (a plain HTTP page on another loopback port) with a form that posts to
    the console: the operator's browser presents the certificate, but the cookie stays home
    (SameSite=Strict) and the Origin is not the console's."""
    fields = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in
                     {"old": a.old, "new": a.new, "reason": "forged", "expires": "3600",
                      "csrf": "0" * 64}.items())
    page = (f'<!DOCTYPE html><html><body><form method="post" action="{a.base}/console/approve">'
            f'{fields}<button id="go" type="submit">win a prize</button></form></body></html>')

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page.encode())

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with opened(a, "crosssite", a.cert) as d:
            d.get(a.base + "/console/")  # the operator has the console open: its cookie is set
            wait_id(d, "me")
            d.get(f"http://127.0.0.1:{srv.server_address[1]}/prize.html")
            d.find_element(By.ID, "go").click()
            refusal(a, d, out, "cross_site", "another site", "9-cross-site-refused")
    finally:
        srv.shutdown()


def admin(a, out):
    """The admin revokes the old board (say it was stolen): a confirmation page, a mistyped
    hostname refused, then revoked."""
    with opened(a, "admin", a.cert) as d:
        d.get(a.base + f"/console/platform?id={a.old}")
        wait_id(d, "revoke-link").click()
        check(wait_id(d, "revoke-id").text == a.old, "the confirmation names another platform")
        d.find_element(By.ID, "revoke-reason").send_keys(a.reason)
        d.find_element(By.ID, "confirm").send_keys("laptop-9999")
        shot(a, d, "10-revoke-confirm")
        d.find_element(By.ID, "revoke").click()
        refusal(a, d, out, "mistyped", "not revoked", "11-revoke-mistyped")
        d.get(a.base + f"/console/platform/revoke?id={a.old}")
        d.find_element(By.ID, "revoke-reason").send_keys(a.reason)
        d.find_element(By.ID, "confirm").send_keys(a.hostname.upper())
        d.find_element(By.ID, "revoke").click()
        notice = wait_id(d, "notice").text
        out["revoked"] = notice
        check("revoked" in notice, f"no revoked notice: {notice}")
        check(not d.find_elements(By.ID, "revoke-link") and not d.find_elements(By.ID, "approve-form"),
              "a revoked platform's page still offers to revoke or approve")
        check(not d.find_elements(By.ID, "sessions"), "a revoked platform still has open sessions")


def compliance(a, out):
    """The compliance view as an auditor: the new board never backed up, the old one revoked."""
    with opened(a, "compliance", a.cert) as d:
        d.get(a.base + "/console/")
        wait_id(d, "me")
        d.find_element(By.LINK_TEXT, "Compliance").click()
        out["summary"] = wait_id(d, "summary").text
        never = d.find_element(By.ID, "never").text
        revoked = d.find_element(By.ID, "revoked").text
        check(a.new in never, "the new board is not listed as never backed up")
        check(a.old in revoked, "the revoked old board is not listed as revoked")
        check(not d.find_elements(By.ID, "stale"), "a platform is listed as without a recent backup")
        shot(a, d, "12-compliance")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="https://127.0.0.1:PORT")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--shots")
    ap.add_argument("scenario", choices=["helpdesk", "confirm", "grant-revoke", "auditor",
                                         "nocert", "cross-site", "admin", "compliance"])
    ap.add_argument("--cert")
    ap.add_argument("--operator", default="")
    ap.add_argument("--fingerprint", default="")
    ap.add_argument("--old", default="")
    ap.add_argument("--new", default="")
    ap.add_argument("--hostname", default="")
    ap.add_argument("--reason", default="")
    ap.add_argument("--approval", default="")
    ap.add_argument("--approver", default="", help="operator:NAME of the approval's author")
    ap.add_argument("--today", default="", help="YYYY-MM-DD, UTC")
    ap.add_argument("--srk-old", default="", help="hex TPM Name of the old board's SRK")
    ap.add_argument("--srk-new", default="", help="hex TPM Name of the new board's SRK")
    a = ap.parse_args()
    out = {"scenario": a.scenario}
    run = {"helpdesk": helpdesk, "confirm": confirm, "grant-revoke": grant_and_revoke,
           "auditor": auditor, "nocert": nocert,
           "cross-site": cross_site, "admin": admin,
           "compliance": compliance}[a.scenario]
    try:
        run(a, out)
    except Failed as e:
        out["failed"] = str(e)
        print(json.dumps(out))
        print(f"console_browser.py {a.scenario}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
