"""JupyterLab started the way the image starts it (its start script and its JupyterLab settings from
docker/jupyter/), opened in headless Chromium through the link it prints: the first notebook is open, no news
pop-up asks for attention, a cell runs and shows its output, and a request without the token is refused."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from conftest import REPO

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TOKEN = "browser-test-token"

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must run the browser test: install Debian's chromium and chromium-driver")
    pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except urllib.error.URLError:  # not listening yet
        return 0


@pytest.fixture
def jupyterlab(tmp_path):
    work, seed = tmp_path / "work", tmp_path / "seed"
    (seed / "notebooks").mkdir(parents=True)
    cell = {"cell_type": "code", "metadata": {}, "source": "print(6 * 7)", "outputs": [], "execution_count": None}
    notebook = {"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (seed / "notebooks" / "check.ipynb").write_text(json.dumps(notebook))
    port = free_port()
    env = {**os.environ, "WORK_DIR": str(work), "SEED_DIR": str(seed), "JUPYTER_IP": "127.0.0.1",
           "JUPYTER_PORT": str(port), "JUPYTER_TOKEN": TOKEN, "HOME": str(tmp_path),
           "START_NOTEBOOK": "check.ipynb", "JUPYTER_CONFIG_PATH": str(REPO / "docker" / "jupyter"),
           "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(["bash", str(REPO / "docker" / "start-workshop.sh")], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and status(f"{url}/api/status?token={TOKEN}") != 200:
        assert server.poll() is None, (tmp_path / "jupyter.log").read_text()
        time.sleep(0.5)
    link = re.search(r"JupyterLab will be at: (\S+)", (tmp_path / "jupyter.log").read_text()).group(1)
    assert link == f"{url}/lab/tree/check.ipynb?token={TOKEN}"
    yield link, work
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:  # a server that hangs on shutdown must not outlive the test
        server.kill()
        server.wait()
    log.close()


@pytest.mark.slow
def test_token_is_required(jupyterlab):
    link, work = jupyterlab
    url = link.split("/lab/")[0]
    assert status(f"{url}/api/contents") == 403
    assert status(f"{url}/api/contents?token=wrong") == 403
    assert status(f"{url}/api/contents?token={TOKEN}") == 200
    assert (work / "check.ipynb").is_file()  # seeded by the start script


@pytest.mark.slow
def test_a_cell_runs_in_the_browser(jupyterlab, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    link, _ = jupyterlab
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(link)  # the printed link opens the first notebook
        wait = WebDriverWait(driver, 90)
        wait.until(ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, "#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current"), "check.ipynb"))
        editor = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")))
        wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status='idle']")))
        editor.click()
        editor.send_keys(Keys.SHIFT, Keys.ENTER)
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".jp-OutputArea-output"), "42"))
        driver.save_screenshot(str(tmp_path / "jupyterlab.png"))
        assert "42" in driver.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output").text
        # The image's settings disable the announcements plugin: no "get notified about official Jupyter
        # news?" toast on the first screen (it shows up as soon as the app is restored, when enabled).
        toasts = [toast.text for toast in driver.find_elements(By.CSS_SELECTOR, ".Toastify__toast")]
        assert not [text for text in toasts if "news" in text.lower()], toasts
    finally:
        driver.quit()
