"""A sweep whose --storage is an S3 URI, against a real S3 server (moto's, on loopback; the protocol, not a mock of
the sweep): the record, the frames and Tune's checkpoints land in the bucket, Optuna's study lives in memory (SQLite
needs a local file; README), a killed driver resumes from the bucket, and the printed copy command brings the
experiment here, where the analysis reads it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pyarrow.fs as pafs
import pytest

from analysis.load import load_experiment
from tests.conftest import free_ports
from tests.test_sweep import TINY, assert_full_histories, hook_env, release_and_end, wait_for
from tune_adder.storage import Storage
from tune_adder.testhooks import BLOCK_AT

pytestmark = pytest.mark.ray

BUCKET = "sweeps"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, one bucket; (the --storage URI, the environment that reaches it)."""
    pytest.importorskip("moto", reason="moto[server] is a test dependency (pyproject's [test] extra)")
    port = free_ports(1)[0]
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS})  # fmt: skip
    try:
        wait_for(lambda: server.poll() is not None or _answers(port), 60, "moto's S3 server")
        assert server.poll() is None, "moto's S3 server did not start"
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/{BUCKET}", method="PUT"), timeout=10)
        yield f"s3://{BUCKET}/tune_adder?endpoint_override=127.0.0.1:{port}&scheme=http", CREDENTIALS
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
        return True
    except OSError:
        return False


def _files(storage: Storage) -> list[str]:
    infos = storage.fs.get_file_info(pafs.FileSelector(storage.root, recursive=True, allow_not_found=True))
    return [i.path.removeprefix(storage.root + "/") for i in infos if i.type == pafs.FileType.File]


def test_an_optuna_sweep_on_s3_keeps_its_study_in_memory_resumes_after_a_kill_and_copies_down(s3, tmp_path, ray_address):
    """Optuna's 3 samples on S3: one trial finished and two held at step 30 when the driver is killed (kill -9); the
    rerun resumes from the bucket and ends with exactly the 3 samples, each trained once to step 40, no SQLite file
    anywhere; the summary names the bucket's URIs and a copy command that, run as printed, brings a folder the
    analysis loads with the same trials."""
    uri, credentials = s3
    os.environ.update(credentials)  # for this process's own reads of the bucket
    storage = Storage.from_arg(uri)
    args = ["--search", "optuna", "--num-samples", "3", "--digits", "3", "--max-steps", "40", "--eval-every", "10",
            "--checkpoint-every", "2", *TINY, "--storage", uri, "--address", ray_address]  # fmt: skip
    cmd = [sys.executable, "-m", "tune_adder.sweep", *args]
    work, gate = tmp_path / "work", tmp_path / "gate"
    work.mkdir()
    gate.mkdir()
    proc = subprocess.Popen(cmd, env=hook_env({BLOCK_AT: f"30:{gate}", **credentials}, probes=False), cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        held = wait_for(lambda: proc.poll() is not None or len(list(gate.glob("*.blocked"))) == 2 and list(gate.glob("*.blocked")),
                        300, "two trials held at step 30")  # fmt: skip
        assert proc.poll() is None
        first = sorted(held)[0]
        (gate / f"{first.read_text()}.release").touch()

        def finished_in_bucket() -> bool:  # the live frames in the bucket record the released trial's end
            try:
                trials = storage.read_parquet(storage.path(_name(storage), "trials.parquet"))
            except (OSError, ValueError):
                return False
            return bool((trials["stop_reason"] == "completed").any())

        wait_for(lambda: proc.poll() is not None or finished_in_bucket(), 300, "the released trial's end in the bucket")
        wait_for(lambda: proc.poll() is not None or len(list(gate.glob("*.blocked"))) == 2, 300, "the third trial held")
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1)
        out = subprocess.run(cmd, env=hook_env(credentials, probes=False), cwd=work, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
    finally:
        release_and_end(proc, gate)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming" in out.stdout, out.stdout
    name = _name(storage)
    record = json.loads(storage.read_bytes(storage.path(name, "experiment.json")))
    assert record["status"] == "completed" and [s["resumed"] for s in record["sessions"]] == [False, True]
    trials = storage.read_parquet(storage.path(name, "trials.parquet"))
    history = storage.read_parquet(storage.path(name, "history.parquet"))
    assert len(trials) == 3 and trials["lr"].nunique() == 3 and set(trials["stop_reason"]) == {"completed"}
    assert_full_histories(history, 10, 40)  # nothing lost, nothing repeated
    files = _files(storage)
    assert len({f.split("/")[1] for f in files if f.split("/")[1].startswith("train_")}) == 3  # no trial started twice
    assert not [f for f in files if f.endswith(".db")] and not list(work.rglob("*")), "nothing local, no SQLite"
    # The summary names the bucket's URIs, and its copy command, pasted into a shell, brings a folder the analysis reads.
    assert f"{uri.partition('?')[0]}/{name}/trials.parquet?" in out.stdout
    (copy,) = [line.removeprefix("copy them here: ") for line in out.stdout.splitlines() if line.startswith("copy them here: ")]
    (plot,) = [line for line in out.stdout.splitlines() if line.startswith("plot them: ")]
    subprocess.run(["bash", "-c", copy], cwd=work, env={**os.environ, **credentials}, check=True, timeout=120)
    assert plot == f"plot them: python analysis/plot_convergence.py {name}"
    copied = load_experiment(work / name)
    assert copied.trials.sort_values("trial_id")["lr"].tolist() == trials.sort_values("trial_id")["lr"].tolist()


def _name(storage: Storage) -> str:
    (name,) = {f.split("/")[0] for f in _files(storage)}
    return name
