"""Job files: a table of bad files, each reported with its field path (all problems at once)."""

import pytest

from nirlink.engine import SpecError
from nirlink.engine.jobs._spec import parse_job

GOOD = """
[job]
name = "demo"

[[inputs]]
name = "register"
kind = "register"
paths = ["{d}/register.parquet"]

[[inputs]]
name = "career"
kind = "career"
paths = ["{d}/career.csv"]
columns = {{ declared_nir = "NIR" }}
csv = {{ separator = ";", decimal = "," }}

[linkage]
threshold = 0.95

[output]
directory = "out"
"""


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "register.parquet").write_bytes(b"x")
    (tmp_path / "career.csv").write_text("a\n")
    return tmp_path


def test_good_job(files):
    spec = parse_job(GOOD.format(d=files), path=str(files / "job.toml"))
    assert spec.name == "demo" and spec.stages == ("ingest", "link", "attach", "aggregate", "export")
    assert spec.inputs[1].columns == (("declared_nir", "NIR"),) and spec.inputs[1].csv.decimal == ","
    assert spec.output.directory == str(files / "out") and spec.linkage.threshold == 0.95


BAD = [
    ("unknown top-level key", "[jobb]\nname='x'\n", "jobb", "unknown key"),
    ("unknown stage", "[job]\nstages = ['ingest', 'score']\n", "job.stages[1]", "unknown stage"),
    ("stages out of order", "[job]\nstages = ['link', 'ingest']\n", "job.stages", "order"),
    ("wrong type", "[job]\nname = 3\n", "job.name", "expected a string, got 3"),
    ("wrong type, TOML spelling", "[output]\ndirectory='o'\npseudonymise='yes'\n", "output.pseudonymise",
     'expected true or false, got "yes"'),
    ("bad threshold", "[linkage]\nthreshold = 1.5\n", "linkage.threshold", "within (0, 1)"),
    ("negative margin", "[linkage]\nmargin = -1\n", "linkage.margin", ">= 0"),
    ("missing model file", "[linkage]\nmodel = 'nope.json'\n", "linkage.model", "not found"),
    ("bad kind", "[[inputs]]\nname='a'\nkind='payroll'\npaths=['x']\n", "inputs[0].kind", "must be one of"),
    ("missing file", "[[inputs]]\nname='a'\nkind='career'\npaths=['missing.csv']\n", "inputs[0].paths[0]", "no file"),
    ("unknown column", "[[inputs]]\nname='a'\nkind='career'\npaths=['x']\ncolumns={salary='S'}\n",
     "inputs[0].columns.salary", "not a career column"),
    ("bad separator", "[[inputs]]\nname='a'\nkind='career'\npaths=['x']\ncsv={separator='#'}\n",
     "inputs[0].csv.separator", "must be"),
    ("workers with address", "[cluster]\naddress='tcp://h:1'\nworkers=2\n", "cluster", "local cluster"),
    ("zero workers", "[cluster]\nworkers=0\n", "cluster.workers", ">= 1"),
    ("review month", "[aggregate]\nfirst_review_month='2021-13'\n", "aggregate.first_review_month", "YYYY-MM"),
    ("review month not a quarter's first", "[aggregate]\nfirst_review_month='2021-02'\n",
     "aggregate.first_review_month", "give 2021-01 or 2021-04"),
    ("review month in the last quarter", "[aggregate]\nfirst_review_month='2021-11'\n",
     "aggregate.first_review_month", "give 2021-10 or 2022-01"),
    ("input name as a path", "[[inputs]]\nname='../x'\nkind='career'\npaths=['x']\n", "inputs[0].name", "letters"),
    ("input named rejects", "[[inputs]]\nname='rejects'\nkind='career'\npaths=['x']\n", "inputs[0].name",
     "not 'rejects'"),
    ("input named identities", "[[inputs]]\nname='identities'\nkind='resource'\npaths=['x']\n", "inputs[0].name",
     "'identities'"),
    ("pseudonymise without key", "[output]\ndirectory='o'\npseudonymise=true\n", "output.pseudonymise", "key"),
    ("key env unset", "[output]\ndirectory='o'\npseudonymise=true\nkey_env='NIRLINK_TEST_UNSET_KEY'\n",
     "output.key_env", "not set"),
    ("not TOML", "[job\n", "", "not valid TOML"),
    ("empty job name", "[job]\nname = ''\n", "job.name", "first a letter or digit"),
    ("job name read as an option", "[job]\nname = '--help'\n", "job.name", "first a letter or digit"),
    ("no stage", "[job]\nstages = []\n", "job.stages", "at least one stage"),
    ("no path", "[[inputs]]\nname='a'\nkind='career'\npaths=[]\n", "inputs[0].paths", "at least one"),
]


@pytest.mark.parametrize("label,text,path,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_job_files(tmp_path, label, text, path, fragment):
    with pytest.raises(SpecError) as info:
        parse_job(text, path=str(tmp_path / "job.toml"))
    errors = info.value.errors
    assert any(p == path and fragment in m for p, m in errors), errors


def test_every_error_is_reported_at_once(tmp_path):
    text = "[job]\nname = 3\nstages = ['x']\n[linkage]\nthreshold = 2\n[cluster]\nworkers = 0\n"
    with pytest.raises(SpecError) as info:
        parse_job(text, path=str(tmp_path / "job.toml"))
    paths = {p for p, _ in info.value.errors}
    assert {"job.name", "job.stages[0]", "linkage.threshold", "cluster.workers", "inputs", "output.directory"} <= paths
    assert str(info.value).startswith(str(tmp_path / "job.toml"))


def _pseudonymising(files, key_line: str) -> str:
    return GOOD.format(d=files).replace('directory = "out"', f'directory = "out"\npseudonymise = true\n{key_line}')


@pytest.mark.parametrize("key,ok", [("k" * 15, False), ("k" * 16, True), ("", False)])
def test_the_pseudonymisation_key_is_resolved_and_checked_with_the_job(files, monkeypatch, key, ok):
    """key_env and key_file alike: a key under 16 bytes (the documented minimum) is refused by
    the check, naming the setting and the length, never the key."""
    monkeypatch.setenv("NIRLINK_TEST_SPEC_KEY", key)
    (files / "pseudonym.key").write_text(key + "\n")
    for field, line in (("output.key_env", 'key_env = "NIRLINK_TEST_SPEC_KEY"'), ("output.key_file",
                                                                                  'key_file = "pseudonym.key"')):
        text = _pseudonymising(files, line)
        if ok:
            assert parse_job(text, path=str(files / "job.toml")).output.pseudonymise
            continue
        with pytest.raises(SpecError) as info:
            parse_job(text, path=str(files / "job.toml"))
        [(path, message)] = info.value.errors
        assert path == field and f"is {len(key)} bytes; it needs at least 16" in message
        assert not key or key not in message


def test_an_unset_key_env_says_where_to_set_it(files, monkeypatch):
    monkeypatch.delenv("NIRLINK_TEST_SPEC_KEY", raising=False)
    with pytest.raises(SpecError) as info:
        parse_job(_pseudonymising(files, 'key_env = "NIRLINK_TEST_SPEC_KEY"'), path=str(files / "job.toml"))
    [(path, message)] = info.value.errors
    assert path == "output.key_env" and "NIRLINK_TEST_SPEC_KEY is not set" in message
    assert "`run` or `submit`" in message and "workers need not have it" in message


def _job_with(tmp_path, input_path, output):
    return f"""
[job]
name = "j"
stages = ["ingest"]
[[inputs]]
name = "career"
kind = "career"
paths = ["{input_path}"]
[output]
directory = "{output}"
"""


@pytest.mark.parametrize("input_path,output,fragment", [
    ("data", "data/out", "inside the input directory"),
    ("data/", "data", "inside the input directory"),
    ("data/**/*.parquet", "data/job", "where the input pattern"),
    ("data/*/*.csv", "data/job", "where the input pattern"),
    ("data/job/ingest/career", "data/job", "is inside"),
    ("data/c.csv", "data/c.csv", "an existing file"),
    ("data/c.csv", "data/c.csv/out", "lies under"),
])
def test_output_directory_overlapping_an_input_or_a_file_is_refused(tmp_path, input_path, output, fragment):
    (tmp_path / "data" / "job" / "ingest" / "career").mkdir(parents=True)
    (tmp_path / "data" / "c.csv").write_text("a\n")
    (tmp_path / "data" / "job" / "ingest" / "career" / "x.csv").write_text("a\n")
    (tmp_path / "data" / "sub").mkdir()
    (tmp_path / "data" / "sub" / "y.csv").write_text("a\n")
    (tmp_path / "data" / "y.parquet").write_bytes(b"x")
    with pytest.raises(SpecError) as info:
        parse_job(_job_with(tmp_path, input_path, output), path=str(tmp_path / "job.toml"))
    assert any(p == "output.directory" and fragment in m for p, m in info.value.errors), info.value.errors


@pytest.mark.parametrize("input_path,output", [("data/*.csv", "data/job"), ("data", "elsewhere/job"),
                                               ("data/c.csv", "data/job")])
def test_output_beside_its_inputs_is_fine(tmp_path, input_path, output):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.csv").write_text("a\n")
    spec = parse_job(_job_with(tmp_path, input_path, output), path=str(tmp_path / "job.toml"))
    assert spec.output.directory == str(tmp_path / output)
