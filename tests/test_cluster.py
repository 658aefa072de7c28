"""Real clusters: separate scheduler and worker processes on loopback. The plain-processes
recipe, TLS, the worker plugin, and the fault scenarios (marked slow: `make test-slow`,
also run by CI when they fit)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nirlink.engine.cli import app

from conftest import data_with_own_career, write_job

runner = CliRunner()
RECIPES = Path(__file__).parent.parent / "cluster" / "recipes"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """`dask scheduler` and `dask worker` processes started through the recipe scripts; TLS
    with the scripts' TLS_DIR (``tls_dir_env``) or with the explicit `--tls-*` options. Their
    logs go to tmp/scheduler.log and tmp/worker.log."""

    def __init__(self, tmp: Path, *, workers: int = 2, memory_limit: str = "3GiB", tls: Path | None = None,
                 tls_dir_env: bool = False):
        self.tmp = tmp
        self.tls = tls
        self.tls_dir_env = tls_dir_env
        self.port = _free_port()
        self.protocol = "tls" if tls else "tcp"
        self.address = f"{self.protocol}://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.logs: list = []
        self.workers = workers
        self.memory_limit = memory_limit
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HOST": "127.0.0.1", "PORT": str(self.port),
               "DASHBOARD": ":0"}
        if tls and tls_dir_env:
            env["TLS_DIR"] = str(tls)
        self.env = env

    def _tls_args(self, role):
        if not self.tls or self.tls_dir_env:
            return []
        return ["--tls-ca-file", str(self.tls / "ca.pem"), "--tls-cert", str(self.tls / f"{role}.pem"),
                "--tls-key", str(self.tls / f"{role}-key.pem")]

    def start_scheduler(self):
        args = [str(RECIPES / "start-scheduler.sh")] + (["--protocol", "tls"] if self.tls and not self.tls_dir_env
                                                        else []) + self._tls_args("scheduler")
        self.scheduler = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=self._log("scheduler"),
                                          start_new_session=True)
        self.procs.append(self.scheduler)

    def start_workers(self):
        env = {**self.env, "NWORKERS": str(self.workers), "MEMORY_LIMIT": self.memory_limit,
               "LOCAL_DIRECTORY": str(self.tmp / "dask")}
        p = subprocess.Popen([str(RECIPES / "start-worker.sh"), self.address, *self._tls_args("worker")], env=env,
                             stdout=subprocess.DEVNULL, stderr=self._log("worker"), start_new_session=True)
        self.procs.append(p)

    def _log(self, role):
        f = open(self.tmp / f"{role}.log", "ab")  # noqa: SIM115 - closed in __exit__
        self.logs.append(f)
        return f

    def client(self):
        from distributed import Client

        sec = None
        if self.tls:
            from nirlink.cluster import security_from_dir

            sec = security_from_dir(self.tls, "client")
        return Client(self.address, security=sec, timeout=30)

    def wait_for_workers(self, n=None, timeout=60):
        with self.client() as c:
            c.wait_for_workers(n or self.workers, timeout=timeout)

    def __enter__(self):
        self.start_scheduler()
        time.sleep(1.0)
        self.start_workers()
        self.wait_for_workers()
        return self

    def kill_scheduler(self):
        os.killpg(self.scheduler.pid, signal.SIGKILL)

    def __exit__(self, *exc):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            p.wait(timeout=30)
        for f in self.logs:
            f.close()


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet")) if "_job" not in p.parts}


def _worker_pids(address, security=None) -> dict:
    from distributed import Client

    with Client(address, security=security, timeout=30) as c:
        return c.run(os.getpid)


def _wait_state(out: Path, predicate, timeout=300):
    from nirlink.engine.jobs._registry import read_state

    deadline = time.time() + timeout
    while time.time() < deadline:
        st = read_state(out)
        if st is not None and predicate(st):
            return st
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting; last state {read_state(out)}")


# ------------------------------------------------------------------ recipe, plugin, TLS


def test_plain_process_recipe_runs_a_job(tmp_path, synth_small, job_run):
    root, baseline_out, _ = job_run
    job_file = write_job(tmp_path / "job.toml", root, tmp_path / "out")
    with LoopbackCluster(tmp_path) as cl:
        result = runner.invoke(app, ["run", job_file, "--scheduler", cl.address, "--output", "json"])
        assert result.exit_code == 0, result.output
        with cl.client() as c:
            assert "nirlink" in c.run(lambda dask_worker: list(dask_worker.plugins))[next(iter(c.run(os.getpid)))]
            # the plugin gave each worker process the Arrow memory pool of the settings (jemalloc)
            pools = c.run(lambda: __import__("pyarrow").default_memory_pool().backend_name)
            assert set(pools.values()) == {"jemalloc"}, pools
    # the same job on separate processes publishes the same bytes as on the in-process cluster
    assert _digest(tmp_path / "out") == _digest(baseline_out)


def test_worker_plugin_refuses_another_version(dask_client):
    from nirlink.cluster import NirlinkWorkerPlugin

    with pytest.raises(Exception, match="runs nirlink .* the client 0.0.0-other"):
        dask_client.register_plugin(NirlinkWorkerPlugin("0.0.0-other", warm=False), name="nirlink-other")


def test_a_closing_workers_failed_heartbeat_is_not_reported():
    """A heartbeat cut by the worker's own close is not an error for the operator's terminal;
    a running worker's failed heartbeat, and any other error of a closing worker, still are.
    Through a real worker's close: it removes its plugins before it closes its connection pool
    (which is what cuts a heartbeat on its way), so the failure is logged at that point."""
    import gc
    import logging

    from distributed.core import Status

    from nirlink.cluster import NirlinkWorkerPlugin, open_client
    from nirlink.cluster._plugin import HEARTBEAT_FAILED, QuietHeartbeatAtClose

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append((record.getMessage(), record.exc_info is not None))

    log = logging.getLogger("distributed.worker")
    handler = Keep(level=logging.ERROR)
    log.addHandler(handler)
    other = "Unexpected exception during heartbeat. Closing worker."

    def heartbeat_failed():
        try:
            raise OSError("Stream is closed")
        except OSError:
            log.exception(HEARTBEAT_FAILED)
            log.exception(other)

    try:
        with open_client(n_workers=1, threads_per_worker=1, processes=False, dashboard=False) as client:
            installed = client.run(lambda: [type(f).__name__ for f in log.filters])
            worker = next(iter(client.cluster.workers.values()))
            heartbeat_failed()  # a running worker: reported
            close_pool = worker.rpc.close

            async def cut():  # where Worker.close cuts a heartbeat on its way
                heartbeat_failed()
                await close_pool()

            worker.rpc.close = cut
        assert worker.status == Status.closed
        # the running worker's two errors, then only the other error (once per pool close)
        assert seen[:2] == [(HEARTBEAT_FAILED, True), (other, True)] and len(seen) > 2, seen
        assert set(seen[2:]) == {(other, True)}, seen
        # (the failed-task filter is one per process, left in place: an earlier test may have set it)
        assert [sorted(v) for v in installed.values()] == [["FailedTaskInOneLine", "QuietHeartbeatAtClose"]], installed

        class Worker:  # what the plugin and the filter read of a worker
            address = "tcp://127.0.0.1:1"
            status = Status.running

        # a plugin removed from a running worker takes its filter along at once
        plain = Worker()
        plugin = NirlinkWorkerPlugin(__import__("nirlink").version(), warm=False)
        plugin.setup(plain)
        mine = [f for f in log.filters if isinstance(f, QuietHeartbeatAtClose) and f.worker() is plain]
        assert len(mine) == 1
        plugin.teardown(plain)
        assert mine[0] not in log.filters
        # removed by a closing worker, it stays until the worker object is gone
        closing = Worker()
        plugin.setup(closing)
        mine = [f for f in log.filters if isinstance(f, QuietHeartbeatAtClose) and f.worker() is closing]
        closing.status = Status.closing
        plugin.teardown(closing)
        assert mine[0] in log.filters
        seen.clear()
        heartbeat_failed()
        assert seen == [(other, True)]
        del closing
        gc.collect()
        assert mine[0] not in log.filters
    finally:
        log.removeHandler(handler)


def test_arrow_memory_pool_follows_the_setting(dask_client):
    import dask.config
    import pyarrow as pa

    from nirlink.cluster import NirlinkWorkerPlugin, use_arrow_memory_pool
    from nirlink.kernels import ClusterError

    before = pa.default_memory_pool()
    try:
        assert use_arrow_memory_pool("system") == "system" == pa.default_memory_pool().backend_name
        assert use_arrow_memory_pool("default") == "system"  # pyarrow's choice kept: nothing changed
        with dask.config.set({"nirlink.cluster.arrow-memory-pool": "jemalloc"}):
            assert use_arrow_memory_pool() == "jemalloc"
        # the plugin sets it on the workers (in this process: the fixture's workers are threads)
        dask_client.register_plugin(NirlinkWorkerPlugin(__import__("nirlink").version(), warm=False,
                                                        arrow_memory_pool="mimalloc"), name="nirlink-pool")
        assert set(dask_client.run(lambda: pa.default_memory_pool().backend_name).values()) == {"mimalloc"}
        with dask.config.set({"nirlink.cluster.arrow-memory-pool": "tcmalloc"}):
            with pytest.raises(ClusterError, match="nirlink.cluster.arrow-memory-pool is 'tcmalloc': expected one of"):
                use_arrow_memory_pool()
    finally:
        dask_client.unregister_worker_plugin("nirlink-pool")
        pa.set_memory_pool(before)


def test_tls_only(tmp_path, synth_small):
    from distributed import Client

    from nirlink.cluster import make_certificates, open_client
    from nirlink.engine.synth._generate import synth

    make_certificates(tmp_path / "tls")
    with LoopbackCluster(tmp_path, workers=1, tls=tmp_path / "tls") as cl:
        import dask.config

        with dask.config.set({"nirlink.cluster.tls-dir": str(tmp_path / "tls")}):
            with open_client(cl.address) as client:
                assert client.scheduler.address.startswith("tls://")
                info = client.scheduler_info()
                assert all(w.startswith("tls://") for w in info["workers"])
                summary = synth(tmp_path / "d", persons=300, partitions=2, client=client)
                assert summary["rows"]["register"] >= 300
        with pytest.raises(Exception):
            Client(f"tcp://127.0.0.1:{cl.port}", timeout=5)
        with pytest.raises(Exception):  # TLS without a certificate the CA signed
            from distributed.security import Security

            make_certificates(tmp_path / "other")
            Client(cl.address, security=Security(tls_ca_file=str(tmp_path / "other" / "ca.pem"),
                                                  tls_client_cert=str(tmp_path / "other" / "client.pem"),
                                                  tls_client_key=str(tmp_path / "other" / "client-key.pem"),
                                                  require_encryption=True), timeout=5)


def test_submit_over_tls_on_the_recipe_cluster(tmp_path, dask_client, monkeypatch):
    """The recipe's TLS cluster exactly (its scripts with TLS_DIR, certificates from `nirlink
    cluster certs`): a pseudonymising job is submitted from a shell that alone holds the key
    and the client certificates. Its driver, in a worker process, reaches the scheduler with
    the worker's certificate and gets the key in memory: the job succeeds, persons are
    HMAC(key, NIR), and the key is in no file of the job nor in the cluster's logs."""
    import hmac

    import dask.config
    import pyarrow.parquet as pq

    from nirlink.engine.jobs._state import TERMINAL
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    synth(tmp_path / "data", persons=150, partitions=1, client=dask_client, params=SynthParams(seed=3))
    tls = tmp_path / "tls"
    assert runner.invoke(app, ["cluster", "certs", str(tls)]).exit_code == 0
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", tmp_path / "data", out, stages=["ingest", "aggregate", "export"],
                         extra='pseudonymise = true\nkey_env = "NIRLINK_TEST_SUBMIT_KEY"\n')
    key = "a-submitting-shell-only-key-0123"
    with LoopbackCluster(tmp_path, workers=1, tls=tls, tls_dir_env=True) as cl:
        assert cl.address.startswith("tls://") and "NIRLINK_TEST_SUBMIT_KEY" not in cl.env
        monkeypatch.setenv("NIRLINK_TEST_SUBMIT_KEY", key)
        with dask.config.set({"nirlink.cluster.tls-dir": str(tls)}):
            result = runner.invoke(app, ["submit", job_file, "--scheduler", cl.address, "--output", "json"])
        assert result.exit_code == 0, result.output
        final = _wait_state(out, lambda s: s.status in TERMINAL, timeout=120)
        assert final.status == "succeeded", final.error
    nirs = set(pq.read_table(out / "ingest" / "identities" / "career", columns=["declared_nir"]).column("declared_nir").to_pylist())
    persons = set(pq.read_table(out / "export" / "career_person", columns=["person"]).column("person").to_pylist())
    assert persons and persons <= {hmac.new(key.encode(), n.encode(), "sha256").hexdigest() for n in nirs if n}
    for f in [*out.rglob("*"), tmp_path / "scheduler.log", tmp_path / "worker.log"]:
        assert not f.is_file() or key.encode() not in f.read_bytes(), f


def test_a_tls_address_without_certificates_is_one_clear_line(tmp_path, synth_small):
    import dask.config

    root, _ = synth_small
    job_file = write_job(tmp_path / "job.toml", root, tmp_path / "out", stages=["ingest"])
    with dask.config.set({"nirlink.cluster.tls-dir": None}):
        result = runner.invoke(app, ["submit", job_file, "--scheduler", "tls://127.0.0.1:1"])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert "tls://127.0.0.1:1 is a TLS address and no client certificate is set" in line
    assert "nirlink.cluster.tls-dir" in line and "DASK_NIRLINK__CLUSTER__TLS_DIR" in line and "Error" not in line
    make = runner.invoke(app, ["cluster", "certs", str(tmp_path / "tls")])
    assert make.exit_code == 0
    with dask.config.set({"nirlink.cluster.tls-dir": str(tmp_path / "tls")}):  # and the other way round
        result = runner.invoke(app, ["run", job_file, "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 1 and "is not a tls:// address: use tls://HOST:PORT" in result.stderr


def test_submit_warns_before_the_key_crosses_a_network_in_clear(tmp_path, monkeypatch, capsys):
    from nirlink.engine.cli.run import _pseudonym_key
    from nirlink.engine.jobs._spec import parse_job

    monkeypatch.setenv("NIRLINK_TEST_CLEAR_KEY", "k" * 20)
    spec = parse_job("[job]\nname='t'\nstages=['ingest']\n[[inputs]]\nname='c'\nkind='career'\npaths=['c.csv']\n"
                     "[output]\ndirectory='o'\npseudonymise=true\nkey_env='NIRLINK_TEST_CLEAR_KEY'\n",
                     path=str(tmp_path / "job.toml"), check_files=False)
    warned = {}
    for address in ("tcp://10.1.2.3:8786", "tls://10.1.2.3:8786", "tcp://127.0.0.1:8786", "scheduler:8786"):
        key = _pseudonym_key(spec, address)
        assert key.value == b"k" * 20 and "k" * 20 not in repr(key)
        warned[address] = "unencrypted" in capsys.readouterr().err
    assert warned == {"tcp://10.1.2.3:8786": True, "tls://10.1.2.3:8786": False, "tcp://127.0.0.1:8786": False,
                      "scheduler:8786": True}


def test_the_driver_connects_with_the_workers_certificate(tmp_path):
    """What `dask worker --tls-cert worker.pem` gives a worker (no client certificate) is turned
    into a client identity; the client certificates of nirlink.cluster.tls-dir win when set."""
    import ssl

    import dask.config
    from distributed.security import Security

    from nirlink.cluster import driver_security, make_certificates

    make_certificates(tmp_path)
    worker = Security(tls_ca_file=str(tmp_path / "ca.pem"), tls_worker_cert=str(tmp_path / "worker.pem"),
                      tls_worker_key=str(tmp_path / "worker-key.pem"), require_encryption=True)
    assert worker.get_connection_args("client")["ssl_context"] is None  # what failed with a TypeError
    with dask.config.set({"nirlink.cluster.tls-dir": None}):
        sec = driver_security(worker)
        assert sec.tls_client_cert == str(tmp_path / "worker.pem") and sec.require_encryption
        assert isinstance(sec.get_connection_args("client")["ssl_context"], ssl.SSLContext)
        plain = Security(require_encryption=False)
        assert driver_security(plain) is plain
    with dask.config.set({"nirlink.cluster.tls-dir": str(tmp_path)}):
        assert driver_security(worker).tls_client_cert == str(tmp_path / "client.pem")


def test_a_driver_that_cannot_start_fails_its_job(tmp_path, synth_small, dask_client, monkeypatch):
    """The driver's own client cannot be opened: the job's state says failed, with the cause,
    instead of staying "submitted" with the error only in a worker's log."""
    import nirlink.cluster
    from nirlink.engine.jobs._state import TERMINAL

    def refuse(security):
        raise TypeError("TLS expects a `ssl_context` argument (simulated)")

    monkeypatch.setattr(nirlink.cluster, "driver_security", refuse)  # the in-process workers see it
    root, _ = synth_small
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out, stages=["ingest"])
    result = runner.invoke(app, ["submit", job_file, "--scheduler", dask_client.scheduler.address, "--output", "json"])
    assert result.exit_code == 0, result.output
    final = _wait_state(out, lambda s: s.status in TERMINAL, timeout=60)
    assert final.status == "failed" and final.started_at is None
    assert "driver" in final.error and "cannot connect to the scheduler" in final.error
    assert "simulated" in final.error
    assert not (out / "ingest").exists()


def test_slurm_and_kubernetes_recipes_load():
    import yaml

    from nirlink.cluster.recipes.slurm import make_cluster

    c = make_cluster(cores=2, processes=2, memory="4GiB", queue="batch", walltime="00:10:00")
    script = c.job_script()
    c.close()
    assert "#SBATCH -p batch" in script and "--nthreads 1" in script and "--nworkers 2" in script
    docs = [d for f in sorted((RECIPES / "kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert kinds == {("Deployment", "nirlink-scheduler"), ("Service", "nirlink-scheduler"),
                     ("Deployment", "nirlink-worker")}
    worker = next(d for d in docs if d["metadata"]["name"] == "nirlink-worker")
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["dask", "worker", "tcp://nirlink-scheduler:8786"] and "--nthreads" in args


# ------------------------------------------------------------------ faults


def _run_and_kill_a_worker(tmp_path, root, step: str, baseline: Path):
    """Run the job detached; SIGKILL one worker process when the job reaches ``step``."""
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out)
    with LoopbackCluster(tmp_path, workers=2) as cl:
        result = runner.invoke(app, ["submit", job_file, "--scheduler", cl.address, "--output", "json"])
        assert result.exit_code == 0, result.output
        _wait_state(out, lambda s: s.step == step and s.step_done < s.step_total or s.status != "running"
                    and s.status != "queued")
        pids = _worker_pids(cl.address)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        final = _wait_state(out, lambda s: s.status in ("succeeded", "failed", "cancelled"), timeout=400)
        assert final.status == "succeeded", final.error
    assert _digest(out) == _digest(baseline)
    return final


@pytest.mark.slow
def test_worker_killed_during_linkage_scoring(tmp_path, synth_small, job_run):
    root, baseline, _ = job_run
    _run_and_kill_a_worker(tmp_path, root, "score-identity", baseline)


@pytest.mark.slow
def test_worker_killed_during_the_person_shuffle(tmp_path, synth_small, job_run):
    root, baseline, _ = job_run
    _run_and_kill_a_worker(tmp_path, root, "attach", baseline)


@pytest.mark.slow
def test_scheduler_killed_then_resubmitted(tmp_path, synth_small, job_run, monkeypatch):
    import dask.config

    root, baseline, _ = job_run
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", root, out)
    with LoopbackCluster(tmp_path, workers=2) as cl:
        result = runner.invoke(app, ["submit", job_file, "--scheduler", cl.address, "--output", "json"])
        job_id = json.loads(result.stdout)["job_id"]
        _wait_state(out, lambda s: s.stage == "attach")
        cl.kill_scheduler()
        with dask.config.set({"nirlink.jobs.stale-after-seconds": 8}):
            deadline = time.time() + 120
            while time.time() < deadline:
                st = json.loads(runner.invoke(app, ["status", job_id, "--output", "json"]).stdout)
                if st["status"] == "failed":
                    break
                time.sleep(1)
        assert st["status"] == "failed" and st["error"], st
    # a new scheduler; the re-submitted job resumes after the last published stage
    with LoopbackCluster(tmp_path, workers=2) as cl2:
        result = runner.invoke(app, ["submit", job_file, "--scheduler", cl2.address, "--output", "json"])
        job2 = json.loads(result.stdout)["job_id"]
        final = _wait_state(out, lambda s: s.job_id == job2 and s.status in ("succeeded", "failed"), timeout=400)
        assert final.status == "succeeded", final.error
        assert {"ingest", "link"} <= set(final.skipped)
    assert _digest(out) == _digest(baseline)


@pytest.mark.slow
def test_partition_larger_than_a_worker_fails_clearly(tmp_path):
    """One ingest chunk of ~2M rows takes its process to ~0.85 GB; the worker has 600 MiB. Dask's nanny
    kills the worker each time it passes 95% of its limit; after the allowed retries the job
    fails with an error naming the stage and the file - it does not hang."""
    import dask.config

    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    synth(tmp_path / "data", persons=22_000, partitions=1, params=SynthParams(seed=5))
    out = tmp_path / "out"
    job_file = write_job(tmp_path / "job.toml", tmp_path / "data", out, stages=["ingest"])
    with LoopbackCluster(tmp_path, workers=1, memory_limit="600MiB") as cl:
        with dask.config.set({"nirlink.ingest.chunk-rows": 10_000_000}):
            t0 = time.time()
            result = runner.invoke(app, ["run", job_file, "--scheduler", cl.address])
            elapsed = time.time() - t0
    assert result.exit_code == 1, result.output
    assert "stage ingest" in result.stderr and "killed its worker" in result.stderr, result.stderr
    assert "resource/part-00000.parquet" in result.stderr or "career/part-00000.parquet" in result.stderr
    assert elapsed < 400  # it ends; it does not hang


@pytest.mark.slow
def test_poisoned_file_fails_once_naming_it(tmp_path, synth_small):
    import pyarrow.parquet as pq

    root, _ = synth_small
    data = data_with_own_career(root, tmp_path)
    t = pq.read_table(root / "career" / "part-00000.parquet")
    path = data / "career" / "part-00000.parquet"
    pq.write_table(t, path, compression="snappy", row_group_size=len(t))
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 4000):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    job_file = write_job(tmp_path / "job.toml", data, tmp_path / "out", stages=["ingest"])
    with LoopbackCluster(tmp_path, workers=2) as cl:
        result = runner.invoke(app, ["run", job_file, "--scheduler", cl.address])
    assert result.exit_code == 1
    assert "part-00000.parquet" in result.stderr and "stage ingest" in result.stderr
    from nirlink.engine.jobs._registry import job_paths

    log = job_paths(tmp_path / "out")["log"].read_text()
    assert log.count('"job failed"') == 1


def test_a_local_clusters_workers_never_write_to_the_commands_stdout(tmp_path):
    # what a worker prints goes to stderr: a command's stdout holds its own result only
    script = (
        "from nirlink.cluster import open_client\n"
        "with open_client(None, n_workers=1, dashboard=False) as c:\n"
        "    c.run(lambda: print('from-a-worker', flush=True))\n"
        "print('the-result')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "the-result\n"
    assert "from-a-worker" in proc.stderr


def test_a_failed_task_is_logged_by_the_workers_in_one_line_without_its_values():
    """distributed's "Compute Failed" record (the task's arguments, the exception's repr and a
    traceback: where a row's value may sit) reaches the worker's log as one line naming the
    task (nirlink records the error in the job's log)."""
    import logging

    from nirlink.cluster._plugin import FailedTaskInOneLine

    record = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1,
                               "Compute Failed\nKey:       %s\nState:     %s\nTask:  %s\nException: %r\nTraceback: %r\n",
                               ("nirlink-ingest-3", "executing", "<Task (['DUPUY 1850575123456'])>",
                                "ValueError('DUPUY')", '  File "x.py", line 1'), None)
    assert FailedTaskInOneLine().filter(record)
    message = record.getMessage()
    assert message == "task nirlink-ingest-3 failed (its error is in the nirlink job's log)"
    other = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "other %s", ("x",), None)
    assert FailedTaskInOneLine().filter(other) and other.getMessage() == "other x"
