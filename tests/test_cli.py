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
    result = runner.invoke(app, ["run", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.toml'}: job file not found"
    assert not list(tmp_path.iterdir())


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


def _commands(group, path=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name)


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("nirlink ")


def test_every_command_help_has_an_example():
    import typer.main

    commands = list(_commands(typer.main.get_command(app)))
    assert len(commands) >= 15 and ("config", "show") in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example: nirlink" in result.stdout or "Example: DASK_" in result.stdout, path


def test_usage_errors_are_one_line_with_exit_code_2():
    for args, fragment in ((["run"], "missing argument"), (["status", "--outptu", "json", "x"], "no such option"),
                           (["synth", "--persons", "many", "--out", "x"], "invalid value for '--persons'"),
                           (["synth", "--persons", "0", "--out", "x"], "greater than or equal to 1"),
                           (["synth", "--persons", "9", "--partitions", "0", "--out", "x"], "greater than or equal to 1"),
                           (["run", "job.toml", "--scheduler", "notaurl"], "'notaurl' is not a scheduler address"),
                           (["synth", "--persons", "9", "--out", "x", "--scheduler", "tcp://h"], "expected tcp://HOST:PORT"),
                           (["bogus"], "no such command"),
                           (["link", "--input", "a", "--out", "b", "--threshold", "3"], "--threshold must be"),
                           (["aggregate", "--out", "o", "--synthetic", "s", "--first-review-month", "2021-02"],
                            "--first-review-month: reviews are quarterly")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, lines)
        assert "BadParameter" not in lines[0] and "Usage:" not in result.output
        assert result.stdout == ""


def test_output_json_prints_an_error_object_on_failure(tmp_path):
    usage = runner.invoke(app, ["run", "--output", "json"])
    assert usage.exit_code == 2
    assert json.loads(usage.stdout) == {"error": "missing argument 'file' (see 'nirlink run --help')",
                                        "exit_code": 2, "problems": []}
    failed = runner.invoke(app, ["status", str(tmp_path / "nothing"), "--output", "json"])
    data = json.loads(failed.stdout)
    assert failed.exit_code == 1 and data["exit_code"] == 1 and "no job" in data["error"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[job]\nname = 1\n[linkage]\nthreshold = 3\n")
    check = runner.invoke(app, ["job", "check", str(bad), "--output", "json"])
    data = json.loads(check.stdout)
    assert check.exit_code == 1 and "errors" in data["error"]
    assert any(p.startswith("job.name: expected a string") for p in data["problems"]), data


def test_a_bad_setting_value_is_an_error_naming_the_setting(tmp_path):
    import dask.config

    from nirlink.engine.io._datasets import write_json
    from nirlink.engine.jobs._registry import job_paths, set_current
    from nirlink.engine.jobs._state import JobState

    state = JobState(job_id="x", name="x", stages=("ingest",), status="running", stage_index=0, stage="ingest",
                     submitted_at=1.0, started_at=1.0, heartbeat=time.time())
    write_json(job_paths(tmp_path, "x")["state"], state.to_json())
    set_current(tmp_path, "x")
    with dask.config.set({"nirlink.jobs.stale-after-seconds": "abc"}):
        result = runner.invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "nirlink.jobs.stale-after-seconds: expected a number, got 'abc'" in message, message
    assert "DASK_NIRLINK__JOBS__STALE_AFTER_SECONDS" in message
    assert "ValueError" not in message and "could not convert" not in message


def test_a_misspelt_setting_is_warned_about():
    import dask.config

    with dask.config.set({"nirlink.jobs.stale-afer-seconds": 5}):
        result = runner.invoke(app, ["config", "show", "--output", "json"])
    assert result.exit_code == 0
    assert "warning: unknown setting nirlink.jobs.stale-afer-seconds is ignored (did you mean stale-after-seconds?)" \
        in result.stderr
    entries = {e["setting"]: e for e in json.loads(result.stdout)["settings"]}
    assert entries["nirlink.jobs.stale-afer-seconds"]["problem"].startswith("unknown setting")


def test_config_show_prints_the_effective_settings():
    import dask.config

    with dask.config.set({"nirlink.ingest.chunk-rows": 1234}):
        text = runner.invoke(app, ["config", "show"])
        data = json.loads(runner.invoke(app, ["config", "show", "--output", "json"]).stdout)
    assert text.exit_code == 0
    assert "nirlink.ingest.chunk-rows" in text.stdout and "1234   (default 1000000)" in text.stdout
    entries = {e["setting"]: e for e in data["settings"]}
    assert entries["nirlink.ingest.chunk-rows"] == {**entries["nirlink.ingest.chunk-rows"], "value": 1234,
                                                    "default": 1000000, "changed": True, "problem": None}
    assert entries["nirlink.privacy.directory-mode"]["value"] == "0700"
    assert "yaml_files" in data["sources"]
    changed = runner.invoke(app, ["config", "show", "--changed"]).stdout
    assert "nirlink.synth.seed" not in changed


def test_unexpected_errors_are_described_without_class_names():
    from nirlink.kernels import InputError, describe_error

    assert describe_error(ValueError("could not convert string to float: 'abc'")).startswith(
        "unexpected failure: could not convert string to float: 'abc'")
    duck = describe_error(RuntimeError("Conversion Error: Could not convert string 'DUPUY' to INT64 in 'last_name'"))
    assert "DUPUY" not in duck and "'...'" in duck and "'last_name'" in duck
    missing = FileNotFoundError(2, "No such file or directory", "/x/y")
    assert describe_error(missing) == "no such file or directory: /x/y"
    assert describe_error(InputError("bad thing")) == "bad thing"


def _handled_command(tmp_path, body: str) -> tuple[dict, str]:
    """(environment, ``python -c`` code) of a command whose ``body`` (indented lines) runs under
    the CLI's ``handle_errors``, its typer.Exit turned into the exit code as click does."""
    import os

    env = {**os.environ, "DASK_NIRLINK__JOBS__REGISTRY": str(tmp_path / "registry")}
    code = ("import os, sys; from nirlink.engine.cli._utilities import handle_errors\n"
            "@handle_errors\n"
            "def command():\n" + body +
            "import typer\n"
            "try:\n"
            "    command()\n"
            "except typer.Exit as e:  # what click does with it\n"
            "    sys.exit(e.exit_code)\n")
    return env, code


def test_a_broken_pipe_that_is_not_the_output_is_an_error(tmp_path):
    """A pipe to something else breaking (here one the command writes to itself, its reader
    closed) is an error (exit 1, said on stderr), not the quiet end of a closed output."""
    import subprocess
    import sys

    env, code = _handled_command(tmp_path, "    print('started', flush=True)\n"
                                           "    r, w = os.pipe(); os.close(r)\n"
                                           "    os.write(w, b'x')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and p.stdout == "started\n", (p.returncode, p.stdout, p.stderr)
    assert "broken pipe" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = subprocess.run(["/bin/bash", "-o", "pipefail", "-c", f"{sys.executable} -c \"{code}\" | cat"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "broken pipe" in p.stderr, (p.returncode, p.stderr)


def test_a_closed_output_pipe_ends_the_command_quietly(tmp_path):
    """`nirlink jobs | head -1`: once the reader has gone, the command stops without an error
    (exit 0), whatever it had left to print."""
    import subprocess
    import sys

    env, code = _handled_command(tmp_path, "    for i in range(200000):\n"
                                           "        print(f'line {i} ' + 'x' * 60)\n")
    p = subprocess.run(f"{sys.executable} -c \"{code}\" | head -1", shell=True, capture_output=True, text=True, env=env,
                       executable="/bin/bash")
    assert p.stdout.startswith("line 0") and "error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = subprocess.run(["/bin/bash", "-o", "pipefail", "-c", f"{sys.executable} -c \"{code}\" | head -1"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
