"""The widgets in a real browser: JupyterLab on localhost, driven in headless Chromium (slow).

A notebook written into ``tmp_path`` builds a :class:`~cvaia.widgets.SampleBrowser`, a
:class:`~cvaia.widgets.TaskWeightExplorer` and a :class:`~cvaia.widgets.BinsInspector` on the
tiny synthetic set. The test starts JupyterLab (random port, token, every Jupyter/cvaia
directory in ``tmp_path``), opens the notebook in headless Chromium through selenium, runs all
cells, moves the sliders with the keyboard, clicks on the bins inspector's image, and checks
that the displayed images changed, that the kernel saw the new values, and that neither the
page nor the browser console reports a widget error.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped with
the reason where they are missing. ``CVAIA_BROWSER_SCREENSHOT=path.png`` also saves a
screenshot of the page (the README's ``figures/readme/browser_widgets.png``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from cvaia import widgets

SCREENSHOT_ENV = "CVAIA_BROWSER_SCREENSHOT"
NOTEBOOK = "widgets.ipynb"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
#: Text the ipywidgets manager or a widget view shows when a model or its class cannot be loaded.
WIDGET_ERRORS = ("Error displaying widget", "Model not found", "Failed to load model class",
                 "Could not create a view", "Class not found", "Error creating widget")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Chromium and chromedriver on PATH "
                              "(Debian: apt-get install chromium chromium-driver; .ci/run installs them)"),
]
selenium = pytest.importorskip("selenium", reason="needs selenium (pip install -e '.[dev]')")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SERVER_START_S = 90  # JupyterLab answering
WAIT_S = 60  # any one thing on the page (only reached when something is wrong)

# ---- the notebook -------------------------------------------------------------------------------
SETUP = """\
import json
import numpy as np
from cvaia import widgets
from cvaia.data.miniscapes import MiniscapesSplit

ROOT = {root!r}
val = MiniscapesSplit(ROOT, "val")
samples = [val.read(i) for i in range(3)]
H, W = samples[0]["rgb"].shape[:2]
"""

SAMPLE_BROWSER = """\
browser = widgets.SampleBrowser(ROOT, split="val")
browser.widget.add_class("cvaia-test-sample-browser")
browser
"""

WEIGHT_EXPLORER = """\
results = [{"w": 0.25, "miou": 41.0, "si_log_rmse": 31.5},
           {"w": 0.5, "miou": 44.2, "si_log_rmse": 29.8},
           {"w": 0.75, "miou": 43.1, "si_log_rmse": 28.9}]
predictions = {r["w"]: {k: s[k] for k in ("rgb", "semseg", "depth")} for r, s in zip(results, samples)}
explorer = widgets.TaskWeightExplorer(results, predictions=predictions, value=0.25)
explorer.widget.add_class("cvaia-test-weight-explorer")
explorer
"""

BINS_INSPECTOR = """\
# Bin probabilities peaked at the ground-truth depth, on a grid 4x coarser than the image.
bin_depths = np.geomspace(2.0, 100.0, 12)
gt = samples[0]["depth"][2::4, 2::4]
logits = -((np.log(bin_depths)[:, None, None] - np.log(np.maximum(gt, 1.0))[None]) / 0.3) ** 2
probs = np.exp(logits) / np.exp(logits).sum(0)
inspector = widgets.BinsInspector(samples[0]["rgb"], probs, bin_depths, pixel=(H // 2, W // 2),
                                   n_bins_shown=2)
inspector.widget.add_class("cvaia-test-bins-inspector")
inspector
"""

#: Where the test clicks, run in the kernel after the cells: image pixel ``(y, x)`` and its
#: position as fractions of the figure from its top-left corner.
CLICK_TARGET = """\
fig = inspector.figure
fig.draw_without_rendering()
target = (H // 4, W // 5)
px, py = fig.axes[0].transData.transform((target[1], target[0]))
print(json.dumps({"target": target, "fraction": [px / fig.bbox.width, 1 - py / fig.bbox.height],
                  "canvas": inspector.canvas is not None}))
"""

#: The widgets' state as the kernel sees it.
KERNEL_STATE = """\
print(json.dumps({"index": browser.index, "w": explorer.selected, "pixel": inspector.pixel}))
"""


def write_notebook(path: Path, root: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in
                (SETUP.format(root=str(root)), SAMPLE_BROWSER, WEIGHT_EXPLORER, BINS_INSPECTOR)]
    nbformat.write(nb, path)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


# ---- server and browser -------------------------------------------------------------------------
def _log_tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


@pytest.fixture()
def lab(tmp_path, tiny_root):
    """JupyterLab on 127.0.0.1 (random port, token) serving a notebook of the three widgets."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    write_notebook(nb_dir / NOTEBOOK, tiny_root)
    jup = tmp_path / "jupyter"
    settings = jup / "lab-settings"
    # All cells attached to the DOM (no virtual scrolling), no news/update toasts.
    _write_json(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                {"windowingMode": "none"})
    _write_json(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                {"fetchNews": "false", "checkForUpdates": False})
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PAPERMILL", "JUPYTER")) and k != "MPLBACKEND"}
    env.update({
        "JUPYTER_CONFIG_DIR": str(jup / "config"), "JUPYTER_DATA_DIR": str(jup / "data"),
        "JUPYTER_RUNTIME_DIR": str(jup / "runtime"), "IPYTHONDIR": str(jup / "ipython"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(jup / "workspaces"),
        "CVAIA_DATA_DIR": str(tmp_path / "data"), "CVAIA_RUNS_DIR": str(tmp_path / "runs"),
        "CVAIA_FIGURES_DIR": str(tmp_path / "figures"),
        widgets.STATIC_ENV: "0",  # the kernels show the live widgets
    })
    token = secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           "--ServerApp.port=0", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={nb_dir}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"]  # no PyPI queries
    with open(log, "wb") as log_file:
        # Own process group: the kernels it starts go with it, whatever happens.
        proc = subprocess.Popen(cmd, env=env, cwd=nb_dir, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        info_file = jup / "runtime" / f"jpserver-{proc.pid}.json"
        deadline = time.monotonic() + SERVER_START_S
        url = None
        while url is None:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{_log_tail(log)}")
            if info_file.exists():
                try:
                    base = json.loads(info_file.read_text())["url"]
                    with urllib.request.urlopen(f"{base}api/status?token={token}", timeout=5) as r:
                        if r.status == 200:
                            url = base
                except (OSError, ValueError, KeyError):
                    pass  # file half-written or server not listening yet
            if url is None:
                time.sleep(0.2)
        yield {"url": url, "token": token, "log": log}
    finally:
        proc.terminate()  # the server shuts its kernels down
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a kernel left behind
        except ProcessLookupError:
            pass


@pytest.fixture()
def chrome(tmp_path):
    """Headless Chromium (fresh profile, no network chatter) with its console log recorded."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--window-size=1400,1900",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER,
                                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.cvaia_tmp = str(tmp_path)  # where _wait leaves a screenshot when it times out
    try:
        driver.set_script_timeout(2 * WAIT_S)  # running all cells includes the kernel's start
        driver.set_page_load_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


# ---- page helpers -------------------------------------------------------------------------------
def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))
    except TimeoutException:
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        shot = Path(driver.cvaia_tmp) / "timeout.png"
        driver.save_screenshot(str(shot))
        pytest.fail(f"timed out after {timeout} s waiting for {what} at {driver.current_url!r} "
                    f"(title {driver.title!r}; screenshot {shot}); browser errors: {errors}")


def _find(driver, css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def _image_src(driver, widget_css) -> str | None:
    """The ``src`` of the figure shown in a widget's output area (a PNG data URL)."""
    # One script call, so that the widget cannot replace the <img> between finding it and
    # reading it (which a find_element + get_attribute pair races against: a stale element).
    return driver.execute_script(
        "const img = document.querySelector(arguments[0]); return img ? img.src : null;",
        f"{widget_css} .widget-output img")


def _readouts(driver, widget_css) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText.trim());",
        f"{widget_css} .widget-readout")


def _press_right(driver, widget_css) -> None:
    """Focus the widget's slider handle and move it one step right with the keyboard."""
    handle = _find(driver, f"{widget_css} .noUi-handle")
    assert handle is not None, f"no slider in {widget_css}"
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)


#: The notebook's panel in JupyterLab's main area (``shell.currentWidget`` follows the focus,
#: which a headless window may never give).
PANEL = f"""
const app = window.jupyterapp;
const panel = app && Array.from(app.shell.widgets('main'))
  .find(w => w.context && w.context.path === {NOTEBOOK!r} && w.sessionContext);
"""

RUN_ALL = PANEL + """
const done = arguments[arguments.length - 1];
app.shell.activateById(panel.id);
app.shell.collapseLeft();
panel.sessionContext.ready
  .then(() => app.commands.execute('notebook:run-all-cells'))
  .then(ok => done(String(ok)), err => done('error: ' + err));
"""

NOTEBOOK_OPEN = PANEL + "return !!panel;"

KERNEL_IDLE = PANEL + """
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
return !!(kernel && kernel.status === 'idle');
"""

#: Run ``arguments[0]`` in the notebook's kernel (no cell) and return its printed output.
KERNEL_RUN = PANEL + """
const code = arguments[0], done = arguments[arguments.length - 1];
let out = '';
const future = panel.sessionContext.session.kernel.requestExecute({code, store_history: false});
future.onIOPub = msg => {
  if (msg.header.msg_type === 'stream') out += msg.content.text;
  if (msg.header.msg_type === 'error') out += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
};
future.done.then(() => done(out), err => done('ERROR ' + err));
"""

#: For the screenshot: widgets only (code hidden), from the top.
SCREENSHOT_VIEW = PANEL + """
const done = arguments[arguments.length - 1];
app.commands.execute('notebook:hide-all-cell-code')
  .then(() => { panel.content.activeCellIndex = 0; return panel.content.scrollToItem(0, 'start'); })
  .then(() => done('ok'), err => done('error: ' + err));
"""


def _kernel_json(driver, code: str) -> dict:
    out = driver.execute_async_script(KERNEL_RUN, code)
    assert not out.startswith("ERROR"), f"kernel: {out}\n{code}"
    return json.loads(out)


#: The bins inspector's canvas as a PNG data URL, and a blank canvas of its size.
CANVAS_PNG = """
const c = document.querySelector(arguments[0] + ' .jupyter-matplotlib-canvas-div canvas');
if (!c || !c.width) return null;
const blank = document.createElement('canvas');
blank.width = c.width;
blank.height = c.height;
return [c.toDataURL(), blank.toDataURL()];
"""


def _canvas_png(driver, widget_css) -> str | None:
    """The canvas's picture once something is drawn on it."""
    png = driver.execute_script(CANVAS_PNG, widget_css)
    return png[0] if png and png[0] != png[1] else None


def test_widgets_live_in_jupyterlab(lab, chrome):
    d = chrome
    d.get(f"{lab['url']}lab/tree/{NOTEBOOK}?token={lab['token']}")
    _wait(d, lambda d: d.execute_script(NOTEBOOK_OPEN), "JupyterLab to open the notebook")
    ran = d.execute_async_script(RUN_ALL)
    assert ran == "true", f"run all cells: {ran}\n{_log_tail(lab['log'])}"
    _wait(d, lambda d: d.execute_script(KERNEL_IDLE), "the kernel to finish the cells")
    errors = d.find_elements(By.CSS_SELECTOR, '[data-mime-type="application/vnd.jupyter.error"]')
    assert not errors, "cell errors:\n" + "\n".join(e.text for e in errors)

    # sample browser: index slider → another sample's image
    sb = ".cvaia-test-sample-browser"
    before = _wait(d, lambda d: _image_src(d, sb), "the sample browser's live figure")
    assert before.startswith("data:image/png"), before[:80]
    assert _readouts(d, sb) == ["0"]
    _press_right(d, sb)
    after = _wait(d, lambda d: (src := _image_src(d, sb)) != before and src, "a new sample figure")
    assert _readouts(d, sb) == ["1"] and after.startswith("data:image/png")

    # task-weight explorer: w slider → the next run's metrics and predictions
    tw = ".cvaia-test-weight-explorer"
    before = _wait(d, lambda d: _image_src(d, tw), "the task-weight explorer's live figure")
    assert _readouts(d, tw) == ["0.25"]
    _press_right(d, tw)
    _wait(d, lambda d: (src := _image_src(d, tw)) != before and src, "a new task-weight figure")
    assert _readouts(d, tw) == ["0.5"]

    # bins inspector: a click on the image picks the pixel (the x/y sliders follow)
    bi = ".cvaia-test-bins-inspector"
    click = _kernel_json(d, CLICK_TARGET)
    assert click["canvas"], f"the bins inspector shows no ipympl canvas: {click}"
    before = _wait(d, lambda d: _canvas_png(d, bi), "the bins inspector's ipympl canvas")
    H, W = 64, 128  # the tiny set's image size (conftest.TINY)
    assert _readouts(d, bi) == [str(W // 2), str(H // 2)]
    canvas = d.find_element(By.CSS_SELECTOR, f"{bi} .jupyter-matplotlib-canvas-div canvas:last-of-type")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    fx, fy = click["fraction"]
    rect = canvas.rect  # the top canvas, which takes the mouse events
    ActionChains(d).move_to_element_with_offset(
        canvas, round(fx * rect["width"] - rect["width"] / 2),
        round(fy * rect["height"] - rect["height"] / 2)).click().perform()
    ty, tx = click["target"]

    def picked(d):
        vals = _readouts(d, bi)
        return len(vals) == 2 and abs(int(vals[0]) - tx) <= 1 and abs(int(vals[1]) - ty) <= 1

    _wait(d, picked, f"the click to pick pixel (y={ty}, x={tx})")
    _wait(d, lambda d: (png := _canvas_png(d, bi)) != before and png, "the redrawn bins figure")
    _wait(d, lambda d: d.execute_script(KERNEL_IDLE), "the kernel to finish the callbacks")

    state = _kernel_json(d, KERNEL_STATE)
    assert state["index"] == 1 and state["w"] == 0.5, state
    assert abs(state["pixel"][0] - ty) <= 1 and abs(state["pixel"][1] - tx) <= 1, (state, click)

    page = d.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
    shown = [e for e in WIDGET_ERRORS if e.lower() in page.lower()]
    assert not shown, f"widget errors on the page: {shown}"
    log = d.get_log("browser")
    (Path(d.cvaia_tmp) / "console.json").write_text(json.dumps(log, indent=1))
    console = [e for e in log if e["level"] == "SEVERE"]
    assert not console, "browser console errors:\n" + "\n".join(e["message"] for e in console)

    out = os.environ.get(SCREENSHOT_ENV)
    if out:
        assert d.execute_async_script(SCREENSHOT_VIEW) == "ok"
        _wait(d, lambda d: d.execute_script(PANEL + "return panel.content.node.scrollTop === 0;"),
              "the notebook to scroll to the top")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        assert d.save_screenshot(out), f"could not write the screenshot {out}"
