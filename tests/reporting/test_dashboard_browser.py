"""optuna-dashboard in a real browser (Playwright driving Debian's Chromium).

A tiny study runs through the session API, the dashboard is started exactly as users start it
(the command run_study.py prints), and the pages a user watches are checked: the study page
with its intermediate-values plot, the trials table with the user attributes, a trial's note
and figures. A second study of 120 trials checks that large studies still load. Screenshots go
to the test's temporary folder.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import download_artifact, get_all_artifact_meta, upload_artifact
from optuna_dashboard import save_note

from reporting.trial_report import FIGURES, dashboard_hook
from search.session import make_objective, prepare, run
from search.space import SearchSpace

pytestmark = pytest.mark.browser

# straight to the local dashboard, whatever $http_proxy says
fetch = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--no-proxy-server"]  # loopback only, whatever the environment says
SPACE = SearchSpace(sizes=(32,), depth=(2, 2), base_widths=(8,), batch_sizes=(16,), epochs=2,
                    patience=0, tasks=("multilabel",))
N_BIG = 120


def need(what: str, why: str) -> None:
    """Skip, or fail where the CI promises the browser (REQUIRE_BROWSER=1)."""
    message = f"{what} is not available ({why}); set up with `apt-get install chromium`."
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; the tests ask for it first so that a skip costs no study."""
    path = shutil.which("chromium")
    if path is None:
        need("Debian's Chromium", "no `chromium` on PATH; `playwright install` cannot "
             "download browsers here")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        need("Playwright", "pip install playwright")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_command() -> list[str]:
    exe = Path(sys.executable).with_name("optuna-dashboard")
    return [str(exe)] if exe.exists() else [shutil.which("optuna-dashboard") or "optuna-dashboard"]


@pytest.fixture(scope="module")
def studies(synthetic, tmp_path_factory):
    """A tiny real study (figures, notes) and a synthetic one of 120 trials, one storage."""
    tmp = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp / 'studies.db'}"
    session = prepare(synthetic, study_name="tiny", storage_url=url, space=SPACE,
                      sampler="random", pruner="none", artifact_dir=tmp / "artifacts",
                      cache_dir=tmp / "cache")
    run(session, make_objective(session, "cpu", on_result=[dashboard_hook(session)]), n_trials=2)

    figure = tmp / "curves.png"  # one real figure of the tiny study, for every big trial
    meta = next(m for m in get_all_artifact_meta(session.study.best_trial,
                                                 storage=session.study._storage)
                if m.filename == "curves.png")
    download_artifact(artifact_store=session.artifact_store, artifact_id=meta.artifact_id,
                      file_path=str(figure))
    # Built in memory (artifacts can only be added to running trials), then copied into the
    # storage in one transaction per trial: seconds instead of a minute of SQLite commits.
    scratch = optuna.create_study(direction="maximize")
    for i in range(N_BIG):
        t = scratch.ask()
        t.suggest_float("lr", 1e-4, 1e-1, log=True)
        for step in (1, 2):
            t.report(i / N_BIG * step / 2, step)
        for key, value in {"graded_ap": i / N_BIG, "params": 1000 + i,
                           "stop_reason": "completed 2 epochs"}.items():
            t.set_user_attr(key, value)
        upload_artifact(artifact_store=session.artifact_store, file_path=str(figure),
                        study_or_trial=t, mimetype="image/png")
        scratch.tell(t, i / N_BIG)
    optuna.copy_study(from_study_name=scratch.study_name, from_storage=scratch._storage,
                      to_storage=session.study._storage, to_study_name="big")
    big = optuna.load_study(study_name="big", storage=session.study._storage)
    save_note(big, "## big\n120 trials")
    return session, big, tmp


@pytest.fixture(scope="module")
def server(studies):
    """optuna-dashboard as users start it, on a free loopback port; stopped at teardown."""
    session, _, tmp = studies
    port = free_port()
    log = open(tmp / "dashboard.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([*dashboard_command(), session.storage_url, "--artifact-dir",
                             str(session.artifact_dir), "--host", "127.0.0.1", "--port",
                             str(port)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with fetch(f"{base}/api/meta", timeout=5) as r:
                    assert json.load(r)["artifact_is_available"] is True
                    break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("optuna-dashboard did not start:\n"
                                + (tmp / "dashboard.log").read_text(errors="replace"))
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors  # the dashboard's scripts ran without an exception


def test_the_user_watches_a_study(chromium, studies, server, page, tmp_path):
    session, _, _ = studies
    study = session.study
    sid = study._study_id
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2

    # study page: the intermediate values (one line per trial) are plotted
    page.goto(f"{server}/dashboard/studies/{sid}")
    card = page.locator(".MuiCard-root", has_text="Intermediate values")
    card.locator(".js-plotly-plot g.scatterlayer g.trace").first.wait_for()
    assert card.locator("g.scatterlayer g.trace").count() >= len(done)
    # the charts say what is optimised, not "Objective 0"
    page.get_by_text("validation graded AUC-PR").first.wait_for()
    page.screenshot(path=tmp_path / "study.png", full_page=True)

    # trials table: every finished trial with its user attributes as columns
    page.goto(f"{server}/dashboard/studies/{sid}/smartSelection")
    page.get_by_text("UserAttribute graded_ap").first.wait_for()
    page.get_by_text(f"1–{len(done)} of {len(done)}").wait_for()
    for t in done:
        page.get_by_text(t.user_attrs["architecture"], exact=True).first.wait_for()
    page.get_by_text(f"1–{len(done)} of {len(done)}").scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "trials_table.png")

    # a trial's page: its note and its figures, inline
    best = study.best_trial
    page.goto(f"{server}/dashboard/studies/{sid}/trials?numbers={best.number}")
    page.get_by_role("heading", name=f"Trial {best.number}: graded_ap").wait_for()
    page.get_by_text(f"{best.user_attrs['params']:,} parameters").wait_for()
    for name in FIGURES:
        img = page.locator(f'img[alt="{name}"]')
        img.wait_for()
        img.scroll_into_view_if_needed()
        page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle())
    # not full_page: the long `config` attribute makes the page thousands of pixels wide
    page.screenshot(path=tmp_path / "trial.png")
    # ... and the same figures in the note, at the note's width: readable without a click
    curves = page.locator('img[alt="curves"]').first
    curves.wait_for()
    curves.scroll_into_view_if_needed()
    page.wait_for_function("i => i.complete && i.naturalWidth > 0",
                           arg=curves.element_handle())
    assert curves.evaluate("i => i.naturalWidth") >= 600
    assert curves.bounding_box()["width"] >= 600
    page.screenshot(path=tmp_path / "trial_note.png")

    # the study note
    page.goto(f"{server}/dashboard/studies/{sid}/note")
    page.get_by_text(session.split.hash).first.wait_for()
    page.screenshot(path=tmp_path / "study_note.png")
    assert len(list(tmp_path.glob("*.png"))) == 5


def test_a_study_of_120_trials_loads(chromium, studies, server, page, tmp_path):
    _, big, _ = studies
    sid = big._study_id
    with fetch(f"{server}/api/studies/{sid}?after=0", timeout=60) as r:
        detail = json.load(r)
    assert len(detail["trials"]) == N_BIG
    assert all(len(t["artifacts"]) == 1 for t in detail["trials"])

    page.goto(f"{server}/dashboard/studies/{sid}")
    page.locator(".MuiCard-root", has_text="Intermediate values").locator(
        "g.scatterlayer g.trace").first.wait_for()
    page.goto(f"{server}/dashboard/studies/{sid}/smartSelection")
    rows = page.get_by_text(f"of {N_BIG}").first
    rows.wait_for()
    rows.scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "big_table.png")
    page.goto(f"{server}/dashboard/studies/{sid}/trials?numbers={N_BIG - 1}")
    page.get_by_text(f"{N_BIG} Trials").first.wait_for()
    img = page.locator('img[alt="curves.png"]')
    img.wait_for()
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle())
    page.screenshot(path=tmp_path / "big_trial.png")
