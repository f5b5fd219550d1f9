"""The command line as a user meets it: table, JSON Lines, summary, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import main
from tests.conftest import FIXTURES, REPO, SYNTHEA
from tests.contract.contract_schema import check_contract


def test_json_lines_follow_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["screen", "--source", str(SYNTHEA), "--as-of", "2026-11-26", "--format", "json"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 20
    for line in out:
        result = json.loads(line)
        check_contract(result)
        assert result["as_of"] == "2026-11-26"


def test_table_has_a_row_per_patient_and_the_summary_a_funnel(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["screen", "--source", str(SYNTHEA), "--as-of", "2026-11-26", "--summary"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("Patient/") == 20
    assert "ruled out by" in out and "needs review" in out
    summary = out[out.index("criterion") :]
    histology = next(line for line in summary.splitlines() if line.startswith("histology"))
    assert histology.split()[1:] == ["inclusion", "0", "5", "15", "0", "15"]
    deceased = next(line for line in summary.splitlines() if line.startswith("deceased"))
    assert deceased.split()[-1] == "3"  # 20 - 5 without prostate cancer - 12 more who died
    assert "20 patients screened: 3 candidate, 17 ineligible." in summary


def test_patient_filter(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "screen",
            "--source",
            str(FIXTURES),
            "--patient",
            "fx-base",
            "--as-of",
            "2026-11-26",
            "--format",
            "json",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and [json.loads(x)["patient"] for x in lines] == ["Patient/fx-base"]


def test_unreadable_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    code = main(["screen", "--source", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"medcare-screen: error: {bad}: line 1 column 3: not valid JSON (Expecting property name enclosed in double quotes)"
    ]


def test_invalid_mappings_stop_with_the_file_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "valuesets.yaml").write_text("header: {title: x}\n")
    code = main(["screen", "--mappings", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "valuesets.yaml" in err and "Traceback" not in err


def test_bad_as_of_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["screen", "--as-of", "26/11/2026"])
    assert exit_info.value.code == 2 and "not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_default_source_is_the_fixture_patients(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["screen", "--as-of", "2026-11-26", "--format", "json"])
    captured = capsys.readouterr()
    patients = [json.loads(x)["patient"] for x in captured.out.splitlines()]
    assert code == 0 and "Patient/fx-base" in patients
    assert len(patients) == len(list(FIXTURES.glob("*.expected.json")))
    assert "medcare-screen: screened 50 patients" in captured.err  # progress of a long run


def test_console_script_runs_the_readme_command() -> None:
    """The README's main command, through the installed entry point."""
    script = Path(sys.executable).with_name("medcare-screen")
    done = subprocess.run(
        [str(script), "screen", "--as-of", "2026-11-26", "--summary"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Patient/fx-base" in done.stdout and "patients screened" in done.stdout


def test_serve_refuses_to_start_without_authentication(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("MEDCARE_"):
            monkeypatch.delenv(name)
    code = main(["serve", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "no API authentication configured" in err and "Traceback" not in err


def test_serve_refuses_tls_verification_off_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDCARE_API_TOKEN_SHA256", "0" * 64)
    monkeypatch.setenv("MEDCARE_TLS_VERIFY", "false")
    monkeypatch.delenv("MEDCARE_ENV", raising=False)
    code = main(["serve", "--port", "0"])
    assert (
        code == 2
        and "TLS verification cannot be turned off in production" in capsys.readouterr().err
    )


def test_credentials_in_the_fhir_url_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["screen", "--fhir-base", "https://user:secret@fhir.example.org/r4"])
    err = capsys.readouterr().err
    assert "credentials do not belong in the URL" in err and "secret" not in err.replace(
        "credentials", ""
    )


def test_screen_stores_results_and_reports_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.store import create_store

    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    args = [
        "screen",
        "--patient",
        "fx-base",
        "--patient",
        "fx-age-17",
        "--as-of",
        "2026-11-26",
        "--database",
        url,
    ]
    assert main(args) == 0
    assert "stored 2 results in sqlite:///" in capsys.readouterr().err
    assert main(args) == 0
    assert "(0 changed)" in capsys.readouterr().err  # the same results again are not changes
    store = create_store(url)
    latest = store.latest_result("Patient/fx-base", "NCT06585007")
    assert latest is not None and latest["status"] == "candidate"
    items, _ = store.changes(None, 10)
    assert [i["patient"] for i in items] == ["Patient/fx-base", "Patient/fx-age-17"]
    store.close()


def test_an_ndjson_export_is_streamed_and_workers_give_the_same_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.ndjson_export import bundles_to_ndjson

    bundles = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".expected.json"))
    folder = bundles_to_ndjson(bundles, tmp_path / "export")
    outputs = []
    for workers in ("1", "2"):
        code = main(
            ["screen", "--source", str(folder), "--as-of", "2026-11-26", "--format", "json",
             "--workers", workers, "--summary"]
        )  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0, captured.err
        outputs.append(sorted(captured.out.splitlines()))
        assert f"{len(bundles)} patients screened" in captured.err  # the summary, on stderr
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(bundles)
    expected = json.loads((FIXTURES / "base.expected.json").read_text())
    base = next(json.loads(x) for x in outputs[0] if '"Patient/fx-base"' in x)
    assert base["status"] == expected["status"]


def test_workers_need_an_ndjson_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["screen", "--source", str(FIXTURES), "--workers", "2"]) == 2
    assert "--workers needs a Bulk Data NDJSON source" in capsys.readouterr().err
    assert main(["screen", "--fhir-base", "http://localhost:1/fhir", "--workers", "2"]) == 2
    assert "not --fhir-base" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["screen", "--workers", "0"])
    assert exit_info.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_a_look_back_screen_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's quick start screens as of 2026-11-26; on a later day that is a look back,
    whose results are stored but never current: the line says so instead of '0 changed'."""
    monkeypatch.setenv("MEDCARE_TODAY", "2026-12-02")
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    args = ["screen", "--patient", "fx-base", "--as-of", "2026-11-26", "--database", url]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "a look back as of 2026-11-26" in err and "changed)" not in err
