"""The templates, live in JupyterLab and in Notebook 7, driven in Debian's Chromium through Playwright.

Asserts what a person would see. Tabular: the training view renders and its epoch counter advances,
a click on Stop ends a long run with the best epoch restored, the next cells run; in JupyterLab the
TensorBoard frame loads with the run in it. This runs with ipykernel 7 (what pip installs today) in
JupyterLab and in Notebook 7, and with ipykernel 6 in JupyterLab; each kernel is a kernelspec the
server finds, as a user's would be (tests/kernels.py). Image: Run All trains, the run's summary
names the weights it started from, the test report shows. Screenshots go to browser-screenshots/ at
the project root. Outside CI the test skips, saying so, when Chromium is not installed
(`apt-get install chromium`); in CI (.ci/run installs it) it never skips.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/kernels.py
from kernels import newest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "browser-screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# front end -> (its server module, the path that opens a notebook)
FRONT_ENDS = {"lab": ("jupyterlab", "lab/workspaces/nbtrain-test/tree/{notebook}?reset&"),
              "notebook": ("notebook", "notebooks/{notebook}?")}

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Chromium is not installed (apt-get install chromium); the browser test needs it",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernel_release(major: int):
    release = newest(major)
    if release is None:
        if os.environ.get("CI"):
            pytest.fail(f"no ipykernel {major} here: `make kernels` installs the second line")
        pytest.skip(f"no ipykernel {major} here: `make kernels` installs the second line")
    return release


def serve(tmp_path, template: str, parameters: str, front_end: str = "lab", release=None):
    """JupyterLab or Notebook 7 on 127.0.0.1 with its own config, data and runtime folders, serving a
    copy of the template with `parameters` appended to its parameters cell and, when `release` is
    given, that ipykernel release as its kernel; stopped by its own PID."""
    notebook = nbformat.read(ROOT / "notebooks" / template, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += f"\n{parameters}\nWORKDIR = {str(tmp_path / 'runs')!r}"
    display_name = "Python 3 (ipykernel)"
    if release is not None:
        name = release.write_spec(tmp_path / "jupyter_data_dir" / "kernels")  # JUPYTER_DATA_DIR, below
        display_name = f"Python (ipykernel {release.version})"
        notebook.metadata["kernelspec"] = {"name": name, "display_name": display_name, "language": "python"}
    nbformat.write(notebook, tmp_path / template)
    settings = tmp_path / "settings" / "@jupyterlab"
    # render every cell (JupyterLab 4 detaches cells outside the viewport) and ask nothing about news
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    (tmp_path / "jupyter_config_dir" / "labconfig").mkdir(parents=True)  # the announcements toast covers the page
    (tmp_path / "jupyter_config_dir" / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    port, token = free_port(), "nbtrain-browser-test"
    env = {**os.environ, **{name: str(tmp_path / name.lower()) for name in
                            ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR")},
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    module, opening = FRONT_ENDS[front_end]
    server = subprocess.Popen(
        [sys.executable, "-m", module, "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", f"--ServerApp.root_dir={tmp_path}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("The server did not answer within 60 s: " + (tmp_path / "server.log").read_text()[-2000:])
    yield f"{base}/{opening.format(notebook=template)}token={token}", display_name
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


STOP_CASES = [("lab", 7), ("notebook", 7), ("lab", 6)]


@pytest.mark.parametrize("front_end, major", STOP_CASES, ids=[f"{f}-ipykernel{m}" for f, m in STOP_CASES])
def test_the_training_view_and_its_stop_button(tmp_path, front_end, major):
    release = kernel_release(major)
    served = serve(tmp_path, "tabular.ipynb", "EPOCHS = 5000\nPATIENCE = None", front_end, release)
    url, display_name = next(served)
    prefix = f"{front_end}-ipykernel-{release.version}"
    try:
        in_chromium(lambda page: drive(page, url, display_name, prefix, front_end == "lab"), f"{prefix}-last.png")
    finally:
        next(served, None)


def test_image_template_trains_and_reports_in_jupyterlab(tmp_path):
    served = serve(tmp_path, "image.ipynb", "EPOCHS = 3", "lab", kernel_release(7))
    url, display_name = next(served)
    try:
        in_chromium(lambda page: drive_image(page, url, display_name), "image-last.png")
    finally:
        next(served, None)


def in_chromium(steps, last_shot: str) -> None:
    from playwright.sync_api import sync_playwright
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            steps(page)
        finally:
            page.screenshot(path=str(SHOTS / last_shot), full_page=True)
            browser.close()


def run_all(page, url: str, display_name: str) -> None:
    from playwright.sync_api import expect
    page.goto(url)
    # ready when the notebook is open with the chosen kernel, and that kernel is idle, as a person sees it
    expect(page.locator(".jp-Notebook")).to_be_visible(timeout=90_000)
    expect(page.locator(".jp-Toolbar-kernelName", has_text=display_name).first).to_be_visible(timeout=90_000)
    expect(page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first).to_be_visible(timeout=90_000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def drive_image(page, url: str, display_name: str) -> None:
    """The image template end to end: the run's summary says which weights it started from (random,
    offline), and the test report renders."""
    from playwright.sync_api import expect
    run_all(page, url, display_name)
    summary = page.locator(".jp-OutputArea-output", has_text="Run 'visionmodel-1': 3 epochs")
    expect(summary.first).to_be_visible(timeout=240_000)
    assert "Weights: none: random" in summary.first.inner_text()
    summary.first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "image-1-summary.png"))
    test_report = page.locator(".jp-OutputArea-output", has_text="Test report")
    expect(test_report.first).to_be_visible(timeout=120_000)
    assert re.search(r"Test accuracy [\d.]+", test_report.first.inner_text())
    test_report.first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "image-2-test-report.png"))


def drive(page, url: str, display_name: str, prefix: str, tensorboard: bool) -> None:
    from playwright.sync_api import expect
    run_all(page, url, display_name)

    progress = page.locator(".widget-progress .widget-label, .widget-inline-hbox .widget-label",
                            has_text=re.compile(r"^epoch \d+"))
    # the cells before it (imports, cleaning, the tuned trees) run first: on a busy 2-core machine, as
    # long as nbclient's limit for one cell
    expect(progress.first).to_be_visible(timeout=300_000)
    first = _epoch(progress.first.inner_text())
    page.wait_for_function(f"() => [...document.querySelectorAll('.widget-label')]"
                           f".some(e => /^epoch (\\d+)/.test(e.textContent) && "
                           f"Number(e.textContent.match(/\\d+/)[0]) > {first + 3})", timeout=60_000)
    # one view: the widgets, not also the HTML copy meant for front ends without them
    view = page.locator(".jp-OutputArea-output", has=page.locator("button.jupyter-button", has_text="Stop"))
    expect(view).to_have_count(1)
    assert "nbtrain: training" in view.inner_text() and "<progress" not in view.inner_html()
    view.evaluate("element => element.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(SHOTS / f"{prefix}-1-training-view.png"))

    stop = page.locator("button.jupyter-button", has_text="Stop")
    assert stop.is_enabled(), stop.get_attribute("title")
    stop.click()
    summary = page.locator(".jp-OutputArea-output", has_text="stopped because a stop was requested")
    expect(summary.first).to_be_visible(timeout=60_000)
    text = summary.first.inner_text()
    assert re.search(r"Best val_loss [\d.]+ at epoch \d+; those weights are in run.model", text), text
    summary.first.evaluate("element => element.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(SHOTS / f"{prefix}-2-stopped.png"))

    if tensorboard:
        frame_element = page.locator("iframe").first
        expect(frame_element).to_be_visible(timeout=120_000)
        frame_element.scroll_into_view_if_needed()
        frame = frame_element.content_frame
        expect(frame.get_by_text("mlp-1").first).to_be_visible(timeout=90_000)
        page.screenshot(path=str(SHOTS / f"{prefix}-3-tensorboard.png"), full_page=True)

    test_report = page.locator(".jp-OutputArea-output", has_text="Test report")  # the cells after it ran
    expect(test_report.first).to_be_visible(timeout=120_000)


def _epoch(label: str) -> int:
    return int(re.search(r"\d+", label).group())
