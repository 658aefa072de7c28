"""What nirlink writes holds identities: directories it creates are 0700 and files 0600 unless
the settings nirlink.privacy.* relax them; directories that already exist keep their mode."""

from __future__ import annotations

import os

import dask.config
import pytest

from nirlink.engine import SpecError
from nirlink.engine.io._datasets import make_private_dir, private_modes
from nirlink.engine.io._readers import InputSpec
from nirlink.engine.stages._ingest import run_ingest

HEADER = "record_id;declared_nir;last_name;first_name;birth_date;employer_id;year;start_date;end_date;kind;gross_salary"
ROW = "1;177127400100163;DUPUY;Frederic;1977-12-16;12345678200010;2015;2015-01-01;2015-12-31;salary;25000.50"


def _modes(root):
    return {(p.relative_to(root).as_posix(), p.is_dir()): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


def _ingest(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text(f"{HEADER}\n{ROW}\n{ROW.replace('1;', '2;', 1).replace('2015-01-01', 'bad')}\n")
    os.chmod(src, 0o644)
    out = tmp_path / "new" / "job" / "ingest"
    run_ingest([InputSpec("career", "career", (str(src),))], out)
    return tmp_path / "new"


def test_stage_outputs_are_private_by_default(tmp_path):
    root = _ingest(tmp_path)
    modes = _modes(root)
    assert any(not d for _, d in modes) and ("job/ingest/rejects/career", True) in modes
    assert {m for (_, d), m in modes.items() if d} == {0o700}
    assert {m for (_, d), m in modes.items() if not d} == {0o600}
    assert (tmp_path / "in.csv").stat().st_mode & 0o777 == 0o644  # inputs are not ours to change


def test_the_settings_relax_the_modes(tmp_path):
    with dask.config.set({"nirlink.privacy.directory-mode": "0750", "nirlink.privacy.file-mode": "0640"}):
        root = _ingest(tmp_path)
    modes = _modes(root)
    assert {m for (_, d), m in modes.items() if d} == {0o750}
    assert {m for (_, d), m in modes.items() if not d} == {0o640}


def test_existing_directories_keep_their_mode(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    make_private_dir(shared / "a" / "b")
    assert shared.stat().st_mode & 0o777 == 0o755
    assert (shared / "a").stat().st_mode & 0o777 == 0o700 and (shared / "a" / "b").stat().st_mode & 0o777 == 0o700


def test_the_job_registry_is_private(tmp_path):
    from nirlink.engine.jobs._registry import register_job
    from nirlink.engine.jobs._spec import parse_job

    spec = parse_job(f'[job]\nname="j"\nstages=["ingest"]\n[[inputs]]\nname="c"\nkind="career"\npaths=["x"]\n'
                     f'[output]\ndirectory="{tmp_path / "out"}"\n', path=str(tmp_path / "job.toml"), check_files=False)
    with dask.config.set({"nirlink.jobs.registry": str(tmp_path / "registry" / "jobs")}):
        register_job("j-1", tmp_path / "out", spec, None)
    assert (tmp_path / "registry").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "registry" / "jobs").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "registry" / "jobs" / "j-1.json").stat().st_mode & 0o777 == 0o600


def test_a_bad_mode_setting_names_the_setting():
    with dask.config.set({"nirlink.privacy.file-mode": "rw-r--r--"}), pytest.raises(SpecError) as info:
        private_modes()
    assert "nirlink.privacy.file-mode" in str(info.value) and "rw-r--r--" in str(info.value)


def test_the_job_log_hides_row_values_quoted_by_a_library(tmp_path):
    from nirlink.engine.jobs._joblog import JobLog

    tb = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    con.sql(q)\n"
          "duckdb.ConversionException: Could not convert string 'DUPUY' (born '1977-12-16') in 'last_name'\n")
    log = JobLog(tmp_path / "job.log", "j")
    log.write("error", "traceback", traceback=tb)
    text = (tmp_path / "job.log").read_text()
    assert "DUPUY" not in text and "1977-12-16" not in text and "'last_name'" in text and "con.sql(q)" in text
    assert (tmp_path / "job.log").stat().st_mode & 0o777 == 0o600
