"""Runtime and development requirements are split: the image gets the runtime list only,
`make test` installs both, every pin agrees with the lock file (the constraint file)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEV_ONLY = {"pytest", "hypothesis", "moto", "ruff"}


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            out[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
    return out


def test_runtime_requirements_hold_no_test_tools():
    runtime = pins(REPO / "requirements.txt")
    assert not DEV_ONLY & set(runtime), "test tools belong in requirements-dev.txt"
    assert "psycopg2-binary" not in runtime  # comes with the postgres provider; we use psycopg 3
    assert {"apache-airflow", "psycopg", "babel", "pyyaml"} <= set(runtime)


def test_dev_requirements_extend_the_runtime_ones():
    text = (REPO / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in text.splitlines()
    assert DEV_ONLY <= set(pins(REPO / "requirements-dev.txt"))


def test_every_pin_matches_the_lock():
    lock = pins(REPO / "requirements-lock.txt")
    for name in ("requirements.txt", "requirements-dev.txt"):
        for package, version in pins(REPO / name).items():
            assert lock.get(package) == version, f"{name}: {package}=={version}, lock {lock.get(package)}"


def test_make_test_installs_both_and_the_image_the_runtime_list_only():
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -q -r requirements-dev.txt -c requirements-lock.txt" in makefile
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "requirements-dev" not in dockerfile
    assert "-r /opt/receipts/requirements.txt" in dockerfile
