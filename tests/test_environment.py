"""requirements.txt and environment.yml pin the same versions."""

import re

from tests.conftest import REPO


def _pins(text: str) -> dict:
    pins = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_requirements_and_environment_pin_the_same_versions():
    req = _pins((REPO / "requirements.txt").read_text())
    env = _pins((REPO / "environment.yml").read_text())
    assert req, "no pins found in requirements.txt"
    assert req == env


def test_every_requirement_is_pinned_exactly():
    for line in (REPO / "requirements.txt").read_text().splitlines() + \
            (REPO / "requirements-weights.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert "==" in line, f"unpinned requirement: {line}"
