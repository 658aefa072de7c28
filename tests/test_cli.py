"""The CLI, invoked in-process: output, JSON and exit codes."""

import json
import subprocess
import sys
import time

from typer.testing import CliRunner

from nirlink.engine.cli import app

runner = CliRunner()


def test_help_lists_commands_and_is_fast():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "synth" in result.output
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from nirlink.engine.cli import app"], capture_output=True)
    assert proc.returncode == 0
    # heavy modules are imported lazily: the CLI module must not pull in numba, dask or pyarrow
    proc = subprocess.run([sys.executable, "-c", "import sys; from nirlink.engine.cli import app; "
                           "print(sorted(m for m in ('numba', 'dask', 'pyarrow', 'distributed') if m in sys.modules))"],
                          capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stdout
    assert time.perf_counter() - start < 30


def test_synth_json_output(tmp_path):
    result = runner.invoke(app, ["synth", "--persons", "300", "--out", str(tmp_path / "d"), "--partitions", "2",
                                 "--in-process", "--output", "json", "--seed", "9"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["persons"] == 300 and summary["partitions"] == 2 and summary["seed"] == 9
    assert summary["rows"]["register"] >= 300
    assert (tmp_path / "d" / "career" / "part-00001.parquet").exists()


def test_synth_text_output_on_a_local_cluster(tmp_path):
    result = runner.invoke(app, ["synth", "--persons", "200", "--out", str(tmp_path / "d"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "register" in result.stdout and "rows/s" in result.stdout


def test_errors_are_one_line_with_exit_code_1(tmp_path):
    result = runner.invoke(app, ["synth", "--persons", "0", "--out", str(tmp_path / "d"), "--in-process"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: --persons must be at least 1")
    assert len(result.stderr.strip().splitlines()) == 1


def test_non_empty_output_is_refused_without_overwrite(tmp_path):
    args = ["synth", "--persons", "50", "--out", str(tmp_path / "d"), "--in-process"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "not empty" in again.stderr
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    import dask.config

    with dask.config.set({"nirlink.cluster.connect-timeout": 2}):
        result = runner.invoke(app, ["synth", "--persons", "50", "--out", str(tmp_path / "d"),
                                     "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr
