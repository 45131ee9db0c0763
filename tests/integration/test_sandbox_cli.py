"""`hotline sandbox up|status|down`: a second instance runs beside the test sandbox."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from hotline.cli import main
from hotline.sandbox import Sandbox, SandboxPorts, root_path

pytestmark = pytest.mark.asterisk


def test_second_sandbox_does_not_collide(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path))
    instance = f"clitest-{os.getpid()}"
    args = ["--instance", instance, "--port-offset", "21000"]
    other = Sandbox(root_path(), instance, SandboxPorts.offset(21000), state_dir=tmp_path / "sandbox")
    try:
        assert main(["sandbox", "up", *args]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["instance"] == instance and status["pid"] == other.pid() is not None
        assert status["ports"]["ami"] == 26038 and status["ports"]["sip"] == 26060
        # Both Asterisks answer on their own AMI port at the same time.
        asyncio.run(other.wait_booted(timeout=10))
        asyncio.run(sandbox.wait_booted(timeout=10))
        assert main(["sandbox", "status", *args]) == 0
        capsys.readouterr()
    finally:
        assert main(["sandbox", "down", *args]) == 0
    assert "stopped" in capsys.readouterr().out
    assert other.pid() is None
    assert main(["sandbox", "status", *args]) == 3  # not running
    assert sandbox.pid() is not None  # the test suite's instance is untouched
    other.remove_dirs()


def test_bad_definition_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "hotline.yaml"
    bad.write_text("version: 1\nhotline: {numbers: ['4000']}\nivr: {start: nowhere, nodes: {}}\n")
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOTLINE_DEFINITION", str(bad))
    assert main(["sandbox", "up", "--instance", "never", "--port-offset", "22000"]) == 2
    err = capsys.readouterr().err
    assert "invalid hotline definition" in err and "start node 'nowhere' does not exist" in err
