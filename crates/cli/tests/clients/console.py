"""Drives the web console in Debian's headless Chromium through Selenium
(chromium-driver), by clicking, as an operator would: sign in with a token,
see the protected guest, run a drill and clean it up, fail over to a point
picked on the timeline, follow the job live, commit, reprotect, and fail
back with a planned failover completed from its job's page. Saves a
screenshot of every page it visits into SCREENSHOTS.

Usage: console.py URL TOKEN SPKI_HASH SCREENSHOTS MACHINE [read-only]
SPKI_HASH pins the console's certificate (base64 SHA-256 of its public key),
so nothing is trusted blindly and no certificate check is switched off."""

import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

url, token, spki, screenshots, machine = sys.argv[1:6]
read_only = len(sys.argv) > 6 and sys.argv[6] == "read-only"
os.makedirs(screenshots, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--ignore-certificate-errors-spki-list={spki}"]:
    options.add_argument(argument)
driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
driver.set_page_load_timeout(120)
shots = 0


def shot(name):
    global shots
    shots += 1
    driver.save_screenshot(os.path.join(screenshots, f"{shots:02d}-{name}.png"))


def step(message):
    print(f"console: {message}", flush=True)


def text_of(css):
    return driver.find_element(By.CSS_SELECTOR, css).text


def machine_page():
    driver.get(f"{url}/machines/{machine}")


def act(command, point=None, confirm=True, extra=None):
    """Clicks `command` on the machine's page; returns the job page's URL."""
    machine_page()
    form = driver.find_element(By.CSS_SELECTOR, f"form.action button[data-command='{command}']").find_element(
        By.XPATH, "./..")
    if point is not None:
        field = form.find_element(By.CSS_SELECTOR, "input.point")
        field.clear()
        field.send_keys(point)
    if extra:
        form.find_element(By.CSS_SELECTOR, f"input[name='{extra}']").click()
    shot(f"{command}-asked")
    form.find_element(By.CSS_SELECTOR, f"button[data-command='{command}']").click()
    if confirm:
        WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
        driver.switch_to.alert.accept()
    WebDriverWait(driver, 60).until(lambda d: "/jobs/" in d.current_url)
    return driver.current_url


def follow(job_url, until=("succeeded",), timeout=900):
    """Follows the job's page (it reloads itself while the job runs) until
    its state is one of `until`; returns that state."""
    deadline = time.time() + timeout
    seen = set()
    while time.time() < deadline:
        driver.get(job_url) if driver.current_url != job_url else None
        try:
            state = text_of("#job-state")
            steps = [li.text.split("\n")[0] for li in driver.find_elements(By.CSS_SELECTOR, "#steps li")]
        except Exception:
            time.sleep(0.5)
            continue
        for line in steps:
            if line not in seen:
                seen.add(line)
                step(f"  {line}")
        if state in until:
            shot(f"job-{state}")
            return state
        if state in ("failed", "interrupted"):
            shot("job-failed")
            raise SystemExit(f"the job {job_url} {state}: {driver.find_element(By.TAG_NAME, 'main').text}")
        time.sleep(1)
    raise SystemExit(f"the job {job_url} did not end within {timeout} s")


def wait_state(state, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        machine_page()
        if text_of("#state") == state:
            return
        time.sleep(2)
    raise SystemExit(f"{machine} never reached {state}: {text_of('#state')}")


try:
    # Signing in: a wrong token is refused on the page, the right one opens it.
    driver.get(url + "/")
    assert "/login" in driver.current_url, driver.current_url
    driver.find_element(By.ID, "token").send_keys("standby_" + "0" * 64)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    # The refusal is a new page: wait for it rather than read the old one.
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
    assert "not one of this deployment's" in text_of(".error"), text_of("main")
    shot("login-refused")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "items"))
    assert "standby_" not in driver.current_url
    cookie = driver.get_cookie("standby_session")
    assert cookie and cookie["httpOnly"] and cookie["secure"] and cookie.get("sameSite") == "Strict", cookie
    row = driver.find_element(By.CSS_SELECTOR, f"#items tr[data-machine='{machine}']")
    assert "protected" in row.text, row.text

    def rpo_charted(d):
        # The chart of the last hours gets its bar once the daemon saw the RPO.
        d.refresh()
        charts = d.find_elements(By.CSS_SELECTOR, f"#items tr[data-machine='{machine}'] svg.chart")
        return charts and "highest" in charts[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
    WebDriverWait(driver, 30, poll_frequency=1).until(rpo_charted)
    shot("replicated-items")
    step("signed in; the guest is listed as protected")

    if read_only:
        machine_page()
        assert not driver.find_elements(By.CSS_SELECTOR, "form.action"), "a read-only token sees actions"
        shot("read-only-machine")
        step("read-only: no action on the machine's page")
        raise SystemExit(0)

    # A drill, then its clean-up.
    follow(act("test-failover", confirm=False))
    wait_state("test-failover")
    follow(act("cleanup-test-failover", confirm=False))
    wait_state("protected")
    step("drill run and cleaned up")

    # Failover to a point picked on the timeline.
    machine_page()
    picks = driver.find_elements(By.CSS_SELECTOR, "#timeline button.pick")
    assert picks, "no point on the timeline"
    picked = picks[-1]
    picked.click()
    point = picked.get_attribute("data-point")
    form = driver.find_element(By.CSS_SELECTOR, "form.action button[data-command='failover']").find_element(By.XPATH, "./..")
    assert form.find_element(By.CSS_SELECTOR, "input.point").get_attribute("value") == point
    shot("point-picked")
    follow(act("failover", point=point, extra="shutdown_source"))
    wait_state("failed-over")
    step(f"failed over to {point}")
    follow(act("commit"))
    follow(act("reprotect"))
    wait_state("protected")
    step("committed and reprotected")

    # Failback: a planned failover synchronised first, completed from its job's page.
    job_url = act("planned-failover", extra="sync_first")
    wait_state("ready-to-complete")
    driver.get(job_url)
    shot("ready-to-complete")
    driver.find_element(By.CSS_SELECTOR, "button[data-command='complete-failover']").click()
    WebDriverWait(driver, 10).until(expected_conditions.alert_is_present())
    driver.switch_to.alert.accept()
    WebDriverWait(driver, 60).until(lambda d: d.current_url != job_url and "/jobs/" in d.current_url)
    follow(driver.current_url)
    step("failed back with complete failover")
    for page in ["jobs", "alerts", "sites"]:
        driver.get(f"{url}/{page}")
        shot(page)
    machine_page()
    shot("machine-after")
finally:
    driver.quit()
