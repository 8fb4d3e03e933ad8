"""Faults around a run folder, through the real entry points with real kills: two resumes at once, a run killed
before its identity was written, a moved folder, a corrupt run.json, read-only folders, a resume stopped
before it rewrote its outputs. Each ends in one line and exit code 2, or in a run that holds exactly its budget."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.cli import nas_rl_command, run_cli

pytestmark = pytest.mark.slow  # every test runs the entry point in a subprocess

#: A real search that takes seconds: every architecture looked up in the shipped table.
TABULAR = ["experiment=tabular", "controller=evolution", "controller.population_size=4", "controller.sample_size=2",
           "search.progress=false"]  # fmt: skip


def episodes(run_dir: Path) -> int:
    """The run's episodes in its store (one run per store here)."""
    with sqlite3.connect(run_dir / "evaluations.sqlite", timeout=30) as conn:
        return conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0]


def csv_rows(run_dir: Path) -> int:
    return len((run_dir / "evaluations.csv").read_text().strip().splitlines()) - 1


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def wait_until(done: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    """Poll until ``done()``; the process must still be running meanwhile (the deadline only stops a hung test)."""
    deadline = time.monotonic() + 300
    while not done():
        assert process.poll() is None, f"ended before {what}: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} after 300 s"
        time.sleep(0.02)


def lock_holder(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "run.lock").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tabular run of 4 architectures."""
    base = tmp_path_factory.mktemp("finished")
    result = run_cli([*TABULAR, "search.budget=4", f"hydra.run.dir={base / 'run'}"], base)
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "run"


@pytest.fixture
def run_dir(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run: a moved run folder, so it works on its own store (the copy's)."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def resume_command(run_dir: Path, *overrides: str) -> list[str]:
    return nas_rl_command() + [f"resume={run_dir}", *overrides, f"hydra.run.dir={run_dir.parent / 'resumed'}"]


def test_two_resumes_at_once_one_is_refused_and_the_run_holds_its_budget(run_dir: Path, tmp_path: Path) -> None:
    first = subprocess.Popen(resume_command(run_dir, "search.budget=60"), cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_until(lambda: lock_holder(run_dir) == first.pid, first, "the first resume's lock")
        first.send_signal(signal.SIGSTOP)  # holds the lock, mid-resume, for as long as the second one needs
        second = subprocess.run(resume_command(run_dir, "search.budget=60"), cwd=tmp_path, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        line = one_line_error(second)
        assert f"{run_dir} is in use by another nas-rl process (pid {first.pid} on " in line, line
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-3000:]
    assert episodes(run_dir) == 60 and csv_rows(run_dir) == 60


def test_a_resume_killed_holding_the_lock_leaves_the_run_resumable(run_dir: Path, tmp_path: Path) -> None:
    killed = subprocess.Popen(resume_command(run_dir, "search.budget=8"), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)  # fmt: skip
    wait_until(lambda: lock_holder(run_dir) == killed.pid, killed, "the resume's lock")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    result = run_cli([f"resume={run_dir}", "search.budget=8", f"hydra.run.dir={tmp_path / 'again'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]  # the OS released the lock of the killed process
    assert episodes(run_dir) == 8 and csv_rows(run_dir) == 8


def test_a_run_killed_in_its_first_moments_is_resumed_or_plainly_restarted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(nas_rl_command() + [*TABULAR, "search.budget=3", f"hydra.run.dir={run_dir}"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    wait_until(lambda: (run_dir / ".hydra" / "overrides.yaml").is_file(), process, "the run folder")
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = run_cli([f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path)
    if (run_dir / "run.json").is_file():  # killed after the run's identity was written: it resumes
        assert result.returncode == 0, result.stderr[-3000:]
        assert episodes(run_dir) == 3
    else:  # killed before: nothing was evaluated, and the line says to start again, with the run's overrides
        line = one_line_error(result)
        assert "nothing was evaluated" in line and "start it again: nas-rl experiment=tabular" in line, line


def test_a_run_stopped_before_its_identity_says_to_start_again(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)  # what Hydra writes before the run begins
    (run_dir / ".hydra" / "overrides.yaml").write_text("- experiment=tabular\n- search.budget=3\n")
    line = one_line_error(run_cli([f"resume={run_dir}"], tmp_path, timeout=300))
    assert f"resume={run_dir} is not accepted" in line and "nothing was evaluated" in line, line
    assert line.endswith("start it again: nas-rl experiment=tabular search.budget=3"), line


def test_a_run_killed_while_hydra_wrote_its_overrides_still_names_them(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)  # killed after hydra.yaml, with overrides.yaml opened but not written
    (run_dir / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  overrides:\n    hydra: []\n    task:\n    - experiment=tabular\n    - search.budget=3\n"
    )
    (run_dir / ".hydra" / "overrides.yaml").write_text("")
    line = one_line_error(run_cli([f"resume={run_dir}"], tmp_path, timeout=300))
    assert line.endswith("start it again: nas-rl experiment=tabular search.budget=3"), line


def test_a_moved_run_resumes_on_its_own_store(finished_run: Path, tmp_path: Path) -> None:
    original = Path(shutil.copytree(finished_run, tmp_path / "before" / "run"))
    json_file = original / "run.json"  # as if it had been started there
    json_file.write_text(json.dumps({**json.loads(json_file.read_text()), "run_dir": str(original)}))
    (original / "config.yaml").write_text(
        (original / "config.yaml").read_text().replace(str(finished_run), str(original))
    )
    moved = tmp_path / "after" / "run"
    moved.parent.mkdir()
    shutil.move(original, moved)
    result = run_cli([f"resume={moved}", "search.budget=6", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert episodes(moved) == 6 and csv_rows(moved) == 6
    assert not original.exists()  # nothing written where the run used to be
    assert f"store: {moved / 'evaluations.sqlite'}" in (moved / "config.yaml").read_text()


def test_a_corrupt_run_json_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "run.json").write_text('{"run_id": "run-1234')  # cut short
    line = one_line_error(run_cli([f"resume={run_dir}"], tmp_path, timeout=300))
    assert f"{run_dir / 'run.json'} is not readable as a nas-rl run.json" in line and "run_id" in line, line


def test_resume_refuses_another_table_without_touching_the_run(run_dir: Path, tmp_path: Path) -> None:
    from nas_rl.benchmark.table import shipped_path

    other = Path(shutil.copy(shipped_path("tabular-digits-v0"), tmp_path / "other.npz"))
    before = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "evaluations.csv", "best.json")}
    result = run_cli([f"resume={run_dir}", "experiment=tabular", f"tabular.table={other}", "search.budget=6"],
                     tmp_path)  # fmt: skip
    line = one_line_error(result)
    assert "is refused" in line and "accuracy.table, latency.table" in line, line
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert episodes(run_dir) == 4


def test_resume_applies_a_setting_of_the_runs_own_controller(run_dir: Path, tmp_path: Path) -> None:
    """controller.sample_size is a key of the run's controller (evolution), not of the default (mnasnet)."""
    result = run_cli([f"resume={run_dir}", "controller.sample_size=3", "search.budget=6",
                      f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sample_size: 3" in (run_dir / "config.yaml").read_text()
    assert episodes(run_dir) == 6 and csv_rows(run_dir) == 6


def test_report_of_a_resume_killed_before_its_outputs_is_refused(run_dir: Path, tmp_path: Path) -> None:
    killed = subprocess.Popen(resume_command(run_dir, "search.budget=100000"), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    wait_until(lambda: episodes(run_dir) > 6, killed, "evaluations past the run's first 4")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stored = episodes(run_dir)
    report = [sys.executable, "-c", "from nas_rl.cli import report_main; report_main()", str(run_dir)]
    result = subprocess.run(report, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    line = one_line_error(result)
    assert "evaluations.csv holds 4 architectures but the run's history in its store" in line, line
    assert f"has {stored}" in line and f"resume={run_dir}" in line, line


# ------------------------------------------------------------------------------------------- read-only


def read_only(folder: Path, command: list[str]) -> list[str]:
    """``command`` run with ``folder`` read-only: by its mode for a user; for root (whom modes do not stop) in a
    private mount namespace where the folder is a read-only bind mount."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{folder}' '{folder}'"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"running as root, whom file modes do not stop, and no read-only bind mount here: {probe.stderr}")
    return ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder), *command]


def test_resume_of_a_run_in_a_read_only_folder_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    before = {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}
    command = read_only(run_dir, resume_command(run_dir, "search.budget=6"))
    try:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        run_dir.chmod(0o755)
    line = one_line_error(result)
    assert f"{run_dir / 'run.lock'} cannot be written" in line and "writable directory" in line, line
    assert {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()} == before


def test_a_run_into_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    command = read_only(outputs, nas_rl_command() + [*TABULAR, "search.budget=3", f"hydra.run.dir={outputs / 'run'}"])
    try:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        outputs.chmod(0o755)
    line = one_line_error(result)
    assert f"{outputs / 'run'} cannot be written ({outputs} is read-only)" in line, line
