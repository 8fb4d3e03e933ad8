"""Evaluations on a real Dask cluster on localhost (worker processes): a search spends its budget on two workers
and stores what its controller saw; an architecture in flight is evaluated once; a worker killed mid-evaluation
costs no completed evaluation; latency tasks go only to the worker holding the device; TLS connects; a lost
scheduler stops the search in one line, and its resume neither loses nor repeats an evaluation. What the driver
submits is data only, and a worker refuses a role config naming code outside the packages it accepts.

Small on purpose (two workers of one thread, doubles for accuracy and latency): each cluster costs seconds. The
doubles are built on the workers from their configs, as every role is, so the workers here accept
tests.helpers.doubles besides nas_rl (``cluster.allow_targets``, and the Dask config of the workers started here)."""

from __future__ import annotations

import datetime
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from nas_rl.config import build
from nas_rl.controllers.evolution import RegularizedEvolution
from nas_rl.controllers.random_search import RandomSearch
from nas_rl.envs.nas_env import NasEnv
from nas_rl.errors import ConfigError
from nas_rl.evaluation import tasks
from nas_rl.evaluation.cluster import ClusterLost, DaskExecutor
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from nas_rl.runs.search import run_search
from tests.helpers.tiny import TINY_OVERRIDES, tiny_space

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
DOUBLES = "tests.helpers.doubles"
#: The packages the workers here build roles from: nas-rl's, and the test doubles'.
ALLOW = ["nas_rl.", f"{DOUBLES}."]
#: Worker processes started here find the test doubles (tests.helpers) as the driver does, and accept them.
WORKER_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
              "DASK_NAS_RL__ALLOW_TARGETS": json.dumps(ALLOW)}  # fmt: skip
#: The same Dask config for the workers of a LocalCluster started here.
WORKER_CONFIG = {tasks.TARGETS_CONFIG: ALLOW}


@pytest.fixture(scope="module")
def executor() -> Iterator[DaskExecutor]:
    """cluster=dask with cluster.workers=2: a LocalCluster of two one-thread worker processes."""
    with DaskExecutor(workers=2, threads_per_worker=1, allow_targets=ALLOW) as executor:
        yield executor


def traced_accuracy(trace: Path, seconds: float = 0.0) -> dict:
    return {"_target_": f"{DOUBLES}.TracedAccuracyDouble", "seconds": seconds, "trace": str(trace)}


CHANNEL_LATENCY = {"_target_": f"{DOUBLES}.ChannelLatencyDouble"}


def evaluator(store: Path, executor: DaskExecutor, trace: Path, seconds: float = 0.0, latency=None) -> Evaluator:
    """An evaluator whose roles are built from their configs, here and (by the executor) on the workers."""
    roles = {}
    for key, config in (("accuracy", traced_accuracy(trace, seconds)), ("latency", latency or CHANNEL_LATENCY)):
        roles[key] = build(config, key)
        executor.describe_role(roles[key], config, key)
    return Evaluator(roles["accuracy"], roles["latency"], MnasReward(1.0), EvaluationStore(store), "run",
                     executor=executor)  # fmt: skip


def traced(trace: Path) -> list[tuple[int, str]]:
    """(process id, block string) of every accuracy evaluation that started."""
    if not trace.exists():
        return []
    return [(int(pid), arch) for pid, arch in (line.split(" ", 1) for line in trace.read_text().splitlines())]


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def archs(count: int, seed: int = 0) -> list:
    space, rng = tiny_space(), np.random.default_rng(seed)
    found: dict = {}
    while len(found) < count:
        arch = space.decode(space.sample(rng))
        found[arch.to_string()] = arch
    return list(found.values())


def episode_rows(store: EvaluationStore) -> list[tuple]:
    return [(row["arch"], row["status"], bool(row["cached"]), row["reward"]) for row in store.episodes("run")]


def info_rows(seen: list[dict]) -> list[tuple]:
    return [(info["arch"], info["status"], bool(info["cached"]), float(info["reward"])) for info in seen]


# ------------------------------------------------------------------------------------------ searches


def random_search(env: NasEnv, budget: int) -> list[dict]:
    seen: list[dict] = []
    RandomSearch(n_envs=2).search(env, budget=budget, seed=0, on_evaluation=seen.append)
    return seen


def evolution(env: NasEnv, budget: int) -> list[dict]:
    seen: list[dict] = []
    RegularizedEvolution(population_size=3, sample_size=2, n_envs=2).search(env, budget, 0, seen.append)
    return seen


def maskable_ppo(env: NasEnv, budget: int) -> list[dict]:
    from sb3_contrib import MaskablePPO

    from nas_rl.controllers.sb3 import SB3Controller

    seen: list[dict] = []
    algorithm = functools.partial(MaskablePPO, policy="MultiInputPolicy", n_steps=42, batch_size=42, n_epochs=1)
    SB3Controller(algorithm, n_envs=2).search(env, budget=budget, seed=0, on_evaluation=seen.append)
    return seen


@pytest.mark.parametrize("search", [random_search, evolution, pytest.param(maskable_ppo, marks=pytest.mark.slow)],
                         ids=["random", "evolution", "mnasnet"])  # fmt: skip
def test_a_search_on_two_workers_spends_its_budget_and_stores_what_its_controller_saw(
    search, executor: DaskExecutor, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.txt"
    env = NasEnv(tiny_space(), evaluator(tmp_path / "e.sqlite", executor, trace, seconds=0.2))
    seen = search(env, budget=6)
    store = env.evaluator.store
    assert len(seen) == 6 and all(info["status"] == "ok" for info in seen)
    rows = episode_rows(store)
    assert rows[:6] == info_rows(seen)  # (an SB3 step may finish one more, stored and not reported)
    evaluated = traced(trace)
    assert os.getpid() not in {pid for pid, _ in evaluated}  # the workers evaluated, the driver stored
    assert Counter(arch for _, arch in evaluated) == Counter(arch for arch, _, cached, _ in rows if not cached)
    assert sorted(e.arch for e in store.evaluations()) == sorted(arch for _, arch in evaluated)  # each once
    assert store.claims() == []


def test_gym_make_takes_an_executor_and_its_workers_evaluate(executor: DaskExecutor, tmp_path: Path) -> None:
    """A registered id made with executor=... evaluates on the cluster (roles built there from the spec's sections)."""
    import gymnasium as gym

    trace = tmp_path / "trace.txt"
    env = gym.make("nas_rl/MnasNet-v0", store=str(tmp_path / "e.sqlite"), executor=executor,
                   accuracy=traced_accuracy(trace, seconds=0.2), latency=CHANNEL_LATENCY)  # fmt: skip
    seen = random_search(env, budget=4)
    env.close()
    assert len(seen) == 4 and all(info["status"] == "ok" for info in seen)
    evaluated = traced(trace)
    assert sorted(arch for _, arch in evaluated) == sorted(info["arch"] for info in seen)
    assert os.getpid() not in {pid for pid, _ in evaluated}
    # An SB3 controller copies the env into n_envs slots; the env's spec holds the executor: shared, not copied.
    env = gym.make("nas_rl/MnasNet-v0", executor=executor, accuracy=traced_accuracy(trace), latency=CHANNEL_LATENCY)
    assert env.unwrapped.spec.kwargs["executor"] is executor
    seen = maskable_ppo(env, budget=4)
    assert len(seen) == 4 and all(info["status"] == "ok" for info in seen)
    with pytest.raises(TypeError, match="executor='dask' is not accepted: use None .* or an nas_rl.evaluation"):
        gym.make("nas_rl/MnasNet-v0", executor="dask")


def test_an_architecture_in_flight_is_evaluated_once(executor: DaskExecutor, tmp_path: Path) -> None:
    """Twice in one batch, and again by another evaluator on the same store (another process's claims)."""
    trace, path = tmp_path / "trace.txt", tmp_path / "e.sqlite"
    first = evaluator(path, executor, trace, seconds=1.0)
    other = evaluator(path, executor, trace)
    arch, second = archs(2)
    first.start([arch, second, arch])
    other.start([arch])  # claimed by `first`: not submitted again (its evaluate() would wait for the store)
    assert set(first.finish([arch, second])) == {arch, second}
    outcomes = [first.evaluate(arch), first.evaluate(arch), other.evaluate(arch), first.evaluate(second)]
    assert [outcome.cached for outcome in outcomes] == [False, True, True, False]
    assert sorted(a for _, a in traced(trace)) == sorted([arch.to_string(), second.to_string()])
    assert len({outcome.evaluation.id for outcome in outcomes[:3]}) == 1


def test_the_workers_started_here_keep_glibc_adaptive_malloc(executor: DaskExecutor) -> None:
    """Dask's nanny would start them with MALLOC_TRIM_THRESHOLD_ set, which made proxy training ~1.4x slower."""
    seen = executor.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert len(seen) == 2
    assert set(seen.values()) == {os.environ.get("MALLOC_TRIM_THRESHOLD_")}  # the driver's own, if it has one


# ------------------------------------------------------------------------------------------ data only


def spy_on_submit(executor: DaskExecutor, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every (function, arguments, keyword arguments) the executor submits from here on, recorded as it goes."""
    client, calls = executor.client, []
    submit = client.submit

    def recording(function, *args, **kwargs):
        calls.append((function, args, kwargs))
        return submit(function, *args, **kwargs)

    monkeypatch.setattr(client, "submit", recording)
    return calls


def plain_data(value) -> bool:
    """Whether ``value`` is a string, number, boolean or None, or a list or str-keyed dict of those."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(plain_data(item) for item in value)
    return isinstance(value, dict) and all(isinstance(k, str) and plain_data(v) for k, v in value.items())


def assert_data_only(calls: list[tuple], expected: dict) -> None:
    """Each submitted task is one of nas-rl's task functions, called with data and with the futures of earlier
    tasks (a role built on the cluster, an accuracy part): no object, code or pickled bytes of the driver's."""
    assert Counter(function for function, _, _ in calls) == expected
    for function, args, kwargs in calls:
        assert function.__module__ == "nas_rl.evaluation.tasks"
        assert set(kwargs) <= {"key", "resources", "retries", "pure"} and plain_data(kwargs)
        for arg in args:
            if isinstance(arg, distributed.Future):
                assert arg.key.startswith(("nas-rl-role-", "nas-rl-accuracy-")), arg.key
            else:
                assert plain_data(arg), (function.__name__, type(arg))
    for _, args, _ in [call for call in calls if call[0] is tasks.load_role]:
        assert "_target_" in args[0] and json.loads(json.dumps(args[0])) == args[0]


def test_the_driver_submits_only_data(executor: DaskExecutor, tmp_path: Path, monkeypatch) -> None:
    """A block string, the network settings, the fingerprint and each role's config; the workers build the roles."""
    submitted = spy_on_submit(executor, monkeypatch)
    latency = {"_target_": f"{DOUBLES}.PidLatencyDouble", "measured": str(tmp_path / "measured.txt")}
    driver = evaluator(tmp_path / "e.sqlite", executor, tmp_path / "trace.txt", latency=latency)
    candidates = archs(3, seed=7)
    driver.start(candidates)
    driver.finish(candidates)
    assert all(driver.evaluate(arch).evaluation.status == "ok" for arch in candidates)
    assert_data_only(submitted, {tasks.load_role: 2, tasks.remote_evaluate: 3})
    configs = [args[0] for function, args, _ in submitted if function is tasks.load_role]
    assert sorted(configs, key=str) == sorted([traced_accuracy(tmp_path / "trace.txt"), latency], key=str)


@pytest.mark.parametrize("config", [
    {"_target_": "os.system", "_args_": ["touch {marker}"]},
    {"_target_": f"{DOUBLES}.TracedAccuracyDouble", "seconds": 0.0,
     "trace": {"_target_": "builtins.eval", "_args_": ["open('{marker}', 'w').close()"]}},
    {"_target_": "nas_rl._util.os.system", "_args_": ["touch {marker}"]},  # nas_rl's name for os.system
], ids=["os.system", "nested-eval", "re-exported"])  # fmt: skip
def test_a_worker_refuses_a_role_config_naming_code_outside_the_accepted_packages(
    config: dict, executor: DaskExecutor, tmp_path: Path
) -> None:
    """Sent straight to a worker (past the driver's own check): refused there in one line, nothing run."""
    marker = tmp_path / "ran"
    config = json.loads(json.dumps(config).replace("{marker}", str(marker)))
    future = executor.client.submit(tasks.load_role, config, pure=False)
    with pytest.raises(tasks.TargetRefused) as refused:
        future.result()
    message = str(refused.value)
    assert "\n" not in message and "is not accepted on a Dask worker" in message and not marker.exists()
    assert "nas_rl.*" in message and f"{DOUBLES}.*" in message and "nas-rl.allow-targets" in message
    target = "trace._target_='builtins.eval'" if "trace" in config else f"_target_={config['_target_']!r}"
    assert message.startswith(target)


def test_a_role_its_workers_refuse_stops_the_search_in_one_line(executor: DaskExecutor, tmp_path: Path) -> None:
    """A driver that accepts more packages than its workers' Dask config: the first evaluation says so."""
    elsewhere = {"_target_": "tests.helpers.tiny.tiny_space"}  # accepted by this driver, not by the workers
    wider = [*ALLOW, "tests.helpers.tiny."]
    with DaskExecutor(address=executor.client.scheduler.address, allow_targets=wider) as other:
        driver = evaluator(tmp_path / "e.sqlite", other, tmp_path / "trace.txt")
        other.describe_role(driver.latency, elsewhere, "latency")
        with pytest.raises(tasks.TargetRefused) as refused:
            driver.evaluate(archs(1, seed=9)[0])
    message = str(refused.value)
    assert message.startswith("_target_='tests.helpers.tiny.tiny_space' is not accepted on a Dask worker")
    assert "\n" not in message and not list(driver.store.evaluations())


@pytest.mark.slow  # two worker kills, each restarted by its nanny
def test_a_worker_killed_mid_evaluation_costs_no_completed_evaluation(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    with DaskExecutor(workers=2, retries=1, allow_targets=ALLOW) as cluster:
        driver = evaluator(tmp_path / "e.sqlite", cluster, trace, seconds=3.0)
        done, survivor, doomed = archs(3)
        assert driver.evaluate(done).evaluation.status == "ok"

        driver.start([survivor])
        wait_for(lambda: len(traced(trace)) == 2)
        os.kill(traced(trace)[-1][0], signal.SIGKILL)  # the worker evaluating `survivor`, mid-evaluation
        assert driver.evaluate(survivor).evaluation.status == "ok"  # run again on a worker alive (retries=1)

        driver.start([doomed])
        for attempt in (4, 5):  # its first run and its one retry: both workers die under it
            wait_for(lambda attempt=attempt: len(traced(trace)) == attempt)
            os.kill(traced(trace)[-1][0], signal.SIGKILL)
        failed = driver.evaluate(doomed).evaluation
        assert failed.status == "failed" and "died 2 times" in failed.error and "cluster.retries=1" in failed.error

    attempts = Counter(arch for _, arch in traced(trace))
    assert attempts == {done.to_string(): 1, survivor.to_string(): 2, doomed.to_string(): 2}
    stored = {e.arch: e.status for e in driver.store.evaluations()}
    assert stored == {done.to_string(): "ok", survivor.to_string(): "ok", doomed.to_string(): "failed"}


# ------------------------------------------------------------------------------------------ devices, TLS


def start_worker(scheduler: str, *options: str) -> subprocess.Popen:
    """A `dask worker` process of one thread, as a board or a phone's host starts one."""
    command = [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--nthreads", "1", "--no-dashboard",
               *options]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=WORKER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.slow  # a LocalCluster and a worker process of its own
def test_latency_tasks_run_only_on_the_worker_holding_the_device(tmp_path: Path, monkeypatch) -> None:
    trace, measured = tmp_path / "trace.txt", tmp_path / "measured.txt"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  config=WORKER_CONFIG) as local:  # fmt: skip
        board = start_worker(local.scheduler_address, "--resources", "device-test=1")
        try:
            with distributed.Client(local) as client:
                client.wait_for_workers(2, timeout=120)
                pids = client.run(os.getpid)
                tagged = {address for address, info in client.scheduler_info()["workers"].items()
                          if info.get("resources", {}).get("device-test")}  # fmt: skip
            with DaskExecutor(address=local.scheduler_address, latency_resources={"device-test": 1},
                              allow_targets=ALLOW) as executor:  # fmt: skip
                latency = {"_target_": f"{DOUBLES}.PidLatencyDouble", "measured": str(measured)}
                driver = evaluator(tmp_path / "e.sqlite", executor, trace, seconds=0.3, latency=latency)
                submitted = spy_on_submit(executor, monkeypatch)
                candidates = archs(4)
                driver.start(candidates)
                driver.finish(candidates)
                outcomes = [driver.evaluate(arch) for arch in candidates]
        finally:
            stop(board)
    assert [outcome.evaluation.status for outcome in outcomes] == ["ok"] * 4
    assert all(outcome.evaluation.latency_ms > 0 for outcome in outcomes)
    assert_data_only(submitted, {tasks.load_role: 2, tasks.remote_accuracy: 4, tasks.remote_latency: 4})
    (device,) = tagged
    assert [int(pid) for pid in measured.read_text().split()] == [pids[device]] * 4


def write_certificates(folder: Path) -> dict[str, str]:
    """A CA and one certificate for 127.0.0.1 signed by it (the scheduler's, the workers' and the client's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))  # fmt: skip
        if not ca:
            import ipaddress

            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("nas-rl test CA", ca_key, "nas-rl test CA", ca_key, ca=True)
    cert = certificate("127.0.0.1", key, "nas-rl test CA", ca_key, ca=False)
    files = {
        "tls_ca_file": folder / "ca.pem",
        "tls_client_cert": folder / "cert.pem",
        "tls_client_key": folder / "key.pem",
    }
    files["tls_ca_file"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["tls_client_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["tls_client_key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))  # fmt: skip
    return {setting: str(path) for setting, path in files.items()}


def test_tls_with_certificates_connects_and_evaluates(tmp_path: Path) -> None:
    files = write_certificates(tmp_path)
    cert, key = files["tls_client_cert"], files["tls_client_key"]
    security = distributed.security.Security(
        tls_ca_file=files["tls_ca_file"], tls_scheduler_cert=cert, tls_scheduler_key=key, tls_worker_cert=cert,
        tls_worker_key=key, tls_client_cert=cert, tls_client_key=key, require_encryption=True,
    )  # fmt: skip
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", protocol="tls://",
                                  security=security, dashboard_address=None,
                                  config=WORKER_CONFIG) as local:  # fmt: skip
        assert local.scheduler_address.startswith("tls://")
        with DaskExecutor(address=local.scheduler_address, security=files, allow_targets=ALLOW) as executor:
            driver = evaluator(tmp_path / "e.sqlite", executor, tmp_path / "trace.txt")
            (arch,) = archs(1)
            assert driver.evaluate(arch).evaluation.status == "ok"
        plain = DaskExecutor(address=local.scheduler_address.replace("tls://", "tcp://"), connect_timeout_s=5)
        with pytest.raises(ConfigError, match=r"^cluster.address=tcp://127.0.0.1:\d+ cannot be reached"):
            plain.client  # noqa: B018  (a TLS scheduler does not speak plain text)


# ------------------------------------------------------------------------------------------ a lost scheduler


def search_config(overrides: list[str], trace: Path):
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):  # the real controller, wiring, store and outputs; doubles for the costly roles
        cfg.accuracy = traced_accuracy(trace, seconds=1.0)
        cfg.latency = CHANNEL_LATENCY
    return cfg


@pytest.mark.slow  # a scheduler and a worker process, then a LocalCluster
def test_a_lost_scheduler_stops_the_search_in_one_line_and_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    run_dir, trace, scheduler_file = tmp_path / "run", tmp_path / "trace.txt", tmp_path / "scheduler.json"
    store_path = run_dir / "evaluations.sqlite"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                 cwd=REPO, env=WORKER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    worker = None
    try:
        wait_for(lambda: scheduler_file.exists() and scheduler_file.stat().st_size > 0)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = start_worker(address)
        overrides = [*TINY_OVERRIDES, "controller=random", "controller.n_envs=2", "search.budget=6",
                     "search.export=false", "search.progress=false", f"search.store={store_path}", "cluster=dask",
                     f"cluster.address={address}", f"cluster.allow_targets={ALLOW}"]  # fmt: skip

        def lose_the_scheduler() -> None:  # once two evaluations are stored, mid-way through the next ones
            wait_for(lambda: store_path.exists() and len(list(EvaluationStore(store_path).evaluations())) >= 2, 300)
            scheduler.send_signal(signal.SIGKILL)

        killer = threading.Thread(target=lose_the_scheduler, daemon=True)
        killer.start()
        with pytest.raises(ClusterLost) as lost:
            run_search(search_config(overrides, trace), run_dir, overrides)
        killer.join()
    finally:
        for process in (worker, scheduler):
            if process is not None:
                stop(process)
    message = str(lost.value)
    assert "\n" not in message and "scheduler" in message and f"resume={run_dir}" in message
    before = {e.arch: e.id for e in EvaluationStore(store_path).evaluations()}
    assert len(before) >= 2 and EvaluationStore(store_path).claims() == []

    resume = ["cluster.address=null", "cluster.workers=1"]  # the cluster may change on resume: a LocalCluster now
    cfg = search_config([*overrides, *resume], trace)
    with open_dict(cfg):
        cfg.resume = str(run_dir)
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        result = run_search(cfg, run_dir, resume)
    assert len(result.episodes) == 6 and all(row["status"] == "ok" for row in result.episodes)
    after = {e.arch: e.id for e in EvaluationStore(store_path).evaluations()}
    assert {arch: after[arch] for arch in before} == before  # nothing completed was lost
    finished = [arch for _, arch in traced(trace)]
    assert all(finished.count(arch) == 1 for arch in before)  # ... nor evaluated again
