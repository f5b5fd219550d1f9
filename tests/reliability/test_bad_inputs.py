"""Unusable input is said once, in one line, with exit 2 (issue 10 item 14): a file of random
bytes passed as NDJSON, a mapping file of YAML aliases ("billion laughs"), a non-Patient search,
a full disk, running out of memory. No traceback, no thousands of warnings, no minute-long start.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service import cli
from service.cli import main
from service.mapping import MappingError, load_mappings
from service.mapping.load import DEFAULT_MAPPINGS_DIR, MAX_ALIASES
from tests.reliability import harness
from tests.reliability.conftest import Medplum

REPO = Path(__file__).resolve().parents[2]
AS_OF = "2026-11-26"


def _random_bytes(path: Path, size: int = 2_000_000) -> Path:
    path.write_bytes(random.Random(10).randbytes(size))
    return path


@pytest.mark.parametrize("where", ["alone", "next-to-a-bundle"])
def test_a_file_of_random_bytes_is_not_ndjson_said_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    folder = tmp_path / "source"
    folder.mkdir()
    noise = _random_bytes(folder / "random.ndjson")
    if where == "next-to-a-bundle":  # a mixed folder is read by LocalSource, not the stream
        shutil.copy(REPO / "fixtures" / "patients" / "base.json", folder / "base.json")
    code = main(["screen", "--source", str(noise if where == "alone" else folder),
                 "--as-of", AS_OF, "--no-store"])  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(err) == 1, err[:5]
    assert err[0].startswith(f"medcare-screen: error: {noise}: not NDJSON (none of its ")
    assert err[0].endswith(" lines is a FHIR resource)")
    harness.record("bad input: 2 MB of random bytes as NDJSON", where=where, exit=code,
                   lines_on_stderr=len(err))  # fmt: skip


def test_an_ndjson_file_with_one_good_line_among_bad_ones_is_still_screened(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.ndjson_export import bundles_to_ndjson

    export = bundles_to_ndjson([REPO / "fixtures" / "patients" / "base.json"], tmp_path / "x")
    with (export / "Patient.ndjson").open("a") as out:
        out.write("not json\n\n   \n{broken\n")
    code = main(["screen", "--source", str(export), "--as-of", AS_OF, "--no-store"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("not valid JSON") == 2


def _laughs(folder: Path, levels: int) -> Path:
    """mappings/ with units.yaml replaced by nested aliases: 9 aliases per level."""
    shutil.copytree(DEFAULT_MAPPINGS_DIR, folder)
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    (folder / "units.yaml").write_text("\n".join(lines) + "\n")
    return folder


def test_a_mapping_file_of_yaml_aliases_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _laughs(tmp_path / "mappings", levels=4)  # 36 aliases: 9^5 nodes expanded
    with pytest.raises(MappingError) as caught:
        load_mappings(folder)
    assert str(caught.value) == (
        f"{folder / 'units.yaml'}: line 3 not valid YAML (more than {MAX_ALIASES} aliases (*name))"
    )
    code = main(["screen", "--mappings", str(folder), "--no-store"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [f"medcare-screen: error: {caught.value}"]
    with pytest.raises(MappingError, match="header: Missing data"):  # 9 aliases: read, then
        load_mappings(_laughs(tmp_path / "few", levels=1))  # judged by the schema as usual
    harness.record("bad input: YAML billion laughs in a mapping file", aliases_allowed=MAX_ALIASES,
                   outcome="MappingError naming file and line, exit 2")  # fmt: skip


def test_a_population_search_of_another_resource_type_is_one_line(
    medplum: Medplum, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["screen", "--fhir-base", medplum.base_url, "--search", "Observation?_id=1",
                 "--as-of", AS_OF, "--no-store"])  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[-1] == (
        "medcare-screen: error: a population search must be a Patient search, not Observation"
    )
    assert not any("Traceback" in line for line in err)


def test_a_full_disk_is_one_line_and_exit_2() -> None:
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "screen", "--as-of", AS_OF, "--format",
             "json", "--no-store"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert errors == ["medcare-screen: error: No space left on device"], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    harness.record("bad input: full disk (stdout on /dev/full)", exit=done.returncode,
                   stderr_error_lines=len(errors))  # fmt: skip


def test_running_out_of_memory_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A MemoryError cannot be provoked reliably on a shared machine: it is raised where the
    largest allocation happens (reading the source)."""

    def exhausted(*_: object, **__: object) -> None:
        raise MemoryError

    monkeypatch.setattr(cli, "screen_records", exhausted)
    code = main(["screen", "--as-of", AS_OF, "--no-store"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("medcare-screen: error: out of memory")
