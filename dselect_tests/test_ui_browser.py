"""The Dagster UI, driven in headless Chromium: launch one shard's ingestion from the asset page
and read the materialization's metadata back off the page.

The server is `dagster-webserver` alone (no daemon) with the DefaultRunCoordinator: runs launched
from the UI start at once, and `corpus_sensor`, whose default status is RUNNING, never ticks; under
`dagster dev` it would launch the whole shard_job (embedder, judge, LM) for every shard.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Root in a container: no sandbox; no GPU; nothing that phones home or updates itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 90
UI_TIMEOUT_MS = 30_000
SCREENSHOT_ENV = "DSELECT_SAVE_SCREENSHOT"

# Two small shards; the blank record is there so the page has a quarantined row to show.
SHARDS = {
    "encyclopedia.jsonl": [
        {"id": "enc-1", "text": "The Danube rises in the Black Forest and flows east for about 2,850 km "
         "through ten countries before it empties into the Black Sea."},
        {"id": "enc-2", "text": "Photosynthesis converts light energy into chemical energy: plants take in "
         "carbon dioxide and water and release oxygen as a by-product."},
        {"id": "enc-3", "text": "A compiler translates a program written in a high-level language into "
         "machine code before the program is run."},
        {"id": "enc-4", "text": "   "},
        {"id": "enc-5", "text": "The printing press, introduced in Europe by Johannes Gutenberg around 1440, "
         "made books cheaper and helped spread literacy."},
    ],
    "forum_posts.jsonl": [
        {"id": "fp-1", "text": "best deals!!! click here for cheap watches, free shipping worldwide, limited offer"},
        {"id": "fp-2", "text": "Does anyone know why my sourdough starter smells like nail polish remover?"},
        {"id": "fp-3", "text": "Thread closed. Please use the search function before posting."},
    ],
}
SHARD_TO_LAUNCH = "encyclopedia.jsonl"


def _write_corpus(corpus: Path) -> None:
    corpus.mkdir(parents=True)
    for name, records in SHARDS.items():
        (corpus / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _write_dagster_home(dagster_home: Path) -> None:
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n"
        "  enabled: false\n"
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n",
        encoding="utf-8",
    )


def _ensure_browser_tools() -> None:
    """Install Debian chromium and playwright with the project script when either is missing."""
    if CHROMIUM.exists() and importlib.util.find_spec("playwright") is not None:
        return
    subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "install_browser.sh")],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=900,
    )
    importlib.invalidate_caches()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, n_chars: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-n_chars:] if log.exists() else "(no log)"


def _graphql(base_url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]


LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _wait_until_location_loaded(base_url: str, server: subprocess.Popen, log: Path) -> None:
    """Wait for the server to answer and for the `dselect` code location to finish loading."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {server.returncode}:\n{_log_tail(log)}")
        try:
            data = _graphql(base_url, LOCATIONS_QUERY)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = repr(exc)
        else:
            entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
            entry = entries.get("dselect")
            last = json.dumps(entry)
            if entry and entry["loadStatus"] == "LOADED":
                loaded = entry["locationOrLoadError"]
                if loaded["__typename"] == "PythonError":
                    pytest.fail(f"code location dselect failed to load:\n{loaded['message']}")
                return
        time.sleep(1)
    pytest.fail(f"server not ready after {SERVER_START_TIMEOUT_S}s (last: {last}):\n{_log_tail(log)}")


@contextlib.contextmanager
def _webserver(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-webserver` for the repo's workspace.yaml, in its own process group, always stopped."""
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dagster_webserver", "-w", str(REPO_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield server
    finally:
        _stop_process_group(server)


def _stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the group (the code server shuts down cleanly on it), SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _wait_for_run(instance: dg.DagsterInstance, shard: str, log: Path) -> dg.DagsterRun:
    """The one run the UI launched for `shard`, once it has finished."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": shard}))
        if runs and runs[0].is_finished:
            assert len(runs) == 1, f"expected one run for {shard}, got {[r.run_id for r in runs]}"
            return runs[0]
        time.sleep(1)
    pytest.fail(f"no finished run for partition {shard} after {RUN_TIMEOUT_S}s:\n{_log_tail(log)}")


@contextlib.contextmanager
def _browser_page(failure_screenshot: Path, server_log: Path) -> Iterator:
    """A page in headless Debian Chromium; on any failure, a full-page screenshot for debugging."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            try:
                yield page
            except BaseException:
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(failure_screenshot), full_page=True)
                    print(f"screenshot of the failing page: {failure_screenshot}")
                print(f"webserver log: {server_log}")
                raise
        finally:
            browser.close()


def _launch_partition_from_asset_page(page, base_url: str, shard: str) -> None:
    """Asset page -> Materialize… -> pick the one partition -> Launch 1 run."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/assets/documents", wait_until="domcontentloaded")
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize documents")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem").filter(has_text=shard).click()
    # Close the picker by clicking the dialog's title: Escape would close the dialog too.
    dialog.get_by_text("Launch runs to materialize documents").click()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    dialog.get_by_role("button", name="Launch 1 run").click()
    # The dialog closes once the run's process has been started, which is slow on a busy machine.
    expect(dialog).to_be_hidden(timeout=RUN_TIMEOUT_S * 1000)


def _metadata_value(page, label: str) -> str:
    """Text of the value cell in the metadata table row whose key is exactly `label`."""
    row = page.locator("tr").filter(has=page.get_by_text(label, exact=True))
    return row.locator("td").nth(1).inner_text().strip()


@pytest.mark.heavy
def test_materialize_a_partition_from_the_ui_and_see_its_metadata(tmp_path):
    _ensure_browser_tools()
    from playwright.sync_api import expect

    corpus, home, dagster_home = tmp_path / "corpus", tmp_path / "home", tmp_path / "dagster_home"
    _write_corpus(corpus)
    _write_dagster_home(dagster_home)
    env = {
        **os.environ,
        "DSELECT_HOME": str(home),
        "DSELECT_CORPUS_DIR": str(corpus),
        "DAGSTER_HOME": str(dagster_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("DSELECT_DB", None)
    base_url = f"http://127.0.0.1:{(port := _free_port())}"
    server_log = tmp_path / "webserver.log"
    shard = SHARD_TO_LAUNCH
    records = SHARDS[shard]
    n_blank = sum(1 for r in records if not r["text"].strip())
    expected = {"rows_read": len(records), "documents": len(records) - n_blank, "quarantined": n_blank}

    # The instance and its SQLite storage exist before the server starts (both creating the
    # tables at once races). Registering the partitions is what corpus_sensor would do.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions("shards", sorted(SHARDS))
        with (
            _webserver(env, port, server_log) as server,
            _browser_page(tmp_path / "ui-failure.png", server_log) as page,
        ):
            _wait_until_location_loaded(base_url, server, server_log)
            # What the "Skip" button of the newsletter modal sends. A fresh instance shows that modal
            # to its first visitor, at a moment that depends on load, over whatever dialog is open.
            assert _graphql(base_url, "mutation { setNuxSeen }")["setNuxSeen"] is True
            _launch_partition_from_asset_page(page, base_url, shard)

            run = _wait_for_run(instance, shard, server_log)
            assert run.status == dg.DagsterRunStatus.SUCCESS, (
                f"run {run.run_id} ended {run.status}:\n{_log_tail(server_log)}"
            )
            assert run.asset_selection == {dg.AssetKey("documents")}
            other_shards = [name for name in SHARDS if name != shard]
            for other in other_shards:
                assert not instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": other}))

            page.goto(f"{base_url}/runs/{run.run_id}", wait_until="domcontentloaded")
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            expect(page.get_by_text(f"partition: {shard}", exact=True)).to_be_visible()

            page.goto(f"{base_url}/assets/documents?view=partitions&partition={shard}", wait_until="domcontentloaded")
            expect(page.get_by_text("quarantined_rows", exact=True)).to_be_visible()
            shown = {label: _metadata_value(page, label) for label in expected}
            assert shown == {label: str(value) for label, value in expected.items()}
            assert _metadata_value(page, "format") == "jsonl"
            assert "empty or whitespace-only text" in _metadata_value(page, "quarantine_reasons")
            assert _metadata_value(page, "source_file") == str(corpus / shard)
            expect(page.get_by_role("link", name=run.run_id[:8]).first).to_be_visible()

            if os.environ.get(SCREENSHOT_ENV) == "1":
                screenshot = REPO_ROOT / "docs" / "ui-screenshot.png"
                screenshot.parent.mkdir(exist_ok=True)
            else:
                screenshot = tmp_path / "ui-screenshot.png"
            page.screenshot(path=str(screenshot))
            assert screenshot.stat().st_size > 10_000
