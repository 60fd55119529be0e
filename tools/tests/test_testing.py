"""A test needing a missing tool is skipped with the install command; under CI=true it fails instead."""

import pytest

from tools import testing


def test_missing_tool_skips_with_its_install_command(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-xyz is not installed .install: apt-get install x"):
        testing.require("no-such-tool-xyz", "apt-get install x")
    assert testing.require("sh", "-").endswith("/sh")


def test_missing_tool_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool-xyz is not installed.*CI must run this test"):
        testing.require("no-such-tool-xyz", "apt-get install x")
