"""`hotline survey ...` end to end on a temporary data directory (SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hotline.cli import main


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("HOTLINE_CONFIG", "HOTLINE_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "var"))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["survey", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_campaign_orders_suppression_and_results(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "campaign", "repairs", "--trigger", "order_closed", "--rules", '{"max_attempts": 2}')
    assert code == 0 and json.loads(out)["rules"]["max_attempts"] == 2
    assert run(capsys, "campaign", "bad", "--rules", "{nope")[0] == 2
    code, out, _ = run(capsys, "rules", "repairs", "--rules", '{"max_concurrent": 3}')
    rules = json.loads(out)["rules"]
    assert code == 0 and (rules["max_concurrent"], rules["max_attempts"]) == (3, 2)
    code, _, err = run(capsys, "rules", "repairs", "--rules", '{"max_concurrent": -1}')
    assert code == 2 and "max_concurrent" in err
    code, _, err = run(capsys, "rules", "repairs", "--rules", "{max_concurrent: 3")
    assert code == 2 and "--rules is not JSON" in err
    [campaign] = json.loads(run(capsys, "campaigns")[1])
    assert campaign["rules"]["max_concurrent"] == 3  # the refused changes changed nothing
    code, out, _ = run(capsys, "order", "repairs", "--order", "SO-1", "--number", "13800138000", "--technician", "Li")
    assert code == 0 and json.loads(out)["status"] == "queued"
    assert json.loads(run(capsys, "suppress", "13900139000")[1]) == {"suppressed": "+8613900139000"}
    listed = json.loads(run(capsys, "suppressed")[1])["suppressed"]
    assert [entry["number"] for entry in listed] == ["+8613900139000"]
    csv_file = tmp_path / "orders.csv"
    csv_file.write_text("order,number\nSO-2,13900139000\nSO-3,bad\n", encoding="utf-8")
    code, _, err = run(capsys, "import", "repairs", str(csv_file))
    assert code == 2 and "row 3, column number" in err
    csv_file.write_text("order,number\nSO-2,13900139000\n", encoding="utf-8")
    assert json.loads(run(capsys, "import", "repairs", str(csv_file))[1]) == {"rows": 1, "suppressed": 1}
    status = json.loads(run(capsys, "status", "repairs")[1])
    assert status["jobs"] == {"pending": 1, "closed": 1} and status["closed"] == {"suppressed": 1}
    assert json.loads(run(capsys, "pause", "repairs")[1])["active"] is False
    out_csv = tmp_path / "results.csv"
    assert run(capsys, "results", "repairs", "--csv", str(out_csv))[0] == 0
    assert out_csv.read_text().startswith("job,number,service_order,technician,agent")
    assert run(capsys, "status", "missing")[0] == 2
