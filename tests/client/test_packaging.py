"""How users get the client: ``import lrkeeper`` from a built wheel and from an editable install.

Each install goes into a fresh virtualenv with only what pip resolves for it,
so these tests also prove the wheel needs neither torch nor the server's
packages. The wheel is built as ``make dist`` builds it; the editable wheel is
what ``pip install -e .`` builds (setuptools' PEP 660 hook), built here with the
project's own setuptools rather than installed over the test environment.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, LiveServer

pytestmark = pytest.mark.slow

# Run by the fresh venv's python, outside the checkout: what a user's script sees.
USER_SCRIPT = """
import importlib.util, json, sys
import client, lrkeeper
from lrkeeper import RemoteLRScheduler

class Optimizer:
    param_groups = [{"lr": 0.1}]

scheduler = RemoteLRScheduler(Optimizer(), sys.argv[2], {
    "type": "StepLR", "params": {"step_size": 1, "gamma": 0.5}}, url=sys.argv[1])
scheduler.step()
print(json.dumps({
    "lrkeeper_file": lrkeeper.__file__,
    "same_objects": all(getattr(lrkeeper, n) is getattr(client, n) for n in client.__all__),
    "same_names": lrkeeper.__all__ == client.__all__,
    "lr": scheduler.get_last_lr(),
    "installed": [n for n in ("torch", "fastapi", "sqlalchemy") if importlib.util.find_spec(n)],
}))
"""


def user_environment() -> dict[str, str]:
    """The test's environment, less what would lead pip or a script to the checkout
    (a PYTHONPATH holding it shows pip its lrkeeper.egg-info as installed) or to torch."""
    return {
        name: value
        for name, value in os.environ.items()
        if name != "PYTHONPATH" and not name.startswith("LRKEEPER_")
    }


def fresh_venv(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    return directory / "bin" / "python"


def pip(*arguments: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--quiet", *arguments],
        cwd=PROJECT_ROOT,
        env=user_environment(),
        check=True,
        capture_output=True,
    )


def run_user_script(python: Path, server: LiveServer, run_id: str, cwd: Path) -> dict:
    completed = subprocess.run(
        [str(python), "-c", USER_SCRIPT, server.base_url, run_id],
        cwd=cwd,
        env=user_environment(),
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


def test_built_wheel_installs_the_client_alone_as_lrkeeper(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    pip("wheel", "--no-deps", "--wheel-dir", str(tmp_path / "dist"), ".")
    (wheel,) = (tmp_path / "dist").glob("lrkeeper-*.whl")
    python = fresh_venv(tmp_path / "venv")
    pip("--python", str(python), "install", str(wheel))

    seen = run_user_script(python, sqlite_server, f"wheel-{uuid.uuid4().hex}", tmp_path)
    assert seen["lrkeeper_file"].startswith(str(tmp_path / "venv"))
    assert seen["same_objects"] and seen["same_names"]
    assert seen["lr"] == [0.05]
    assert seen["installed"] == []
    # The console script's client commands work with the client alone.
    command = subprocess.run(
        [str(python.parent / "lrkeeper"), "runs", "--url", sqlite_server.base_url],
        cwd=tmp_path,
        env=user_environment(),
        capture_output=True,
        text=True,
    )
    assert command.returncode == 0, command.stderr[-3000:]
    assert command.stdout.split()[:2] == ["run_id", "status"]


def test_editable_install_maps_lrkeeper_to_the_checkout(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    build = "import setuptools.build_meta as b, sys; b.build_editable(sys.argv[1])"
    subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("lrkeeper-*.whl")
    python = fresh_venv(tmp_path / "venv")
    pip("--python", str(python), "install", str(wheel))

    seen = run_user_script(python, sqlite_server, f"editable-{uuid.uuid4().hex}", tmp_path)
    assert seen["lrkeeper_file"] == str(PROJECT_ROOT / "client" / "lrkeeper" / "__init__.py")
    assert seen["same_objects"] and seen["same_names"]
    assert seen["lr"] == [0.05]
