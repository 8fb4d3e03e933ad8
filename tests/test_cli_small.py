"""Small things people meet on the command line and at the env's door: each refusal is one line that says what was
wrong and what to do instead.

- ``+key=value`` adding a key that nothing reads is refused (``+`` inside a ``_target_`` section is left to the
  one validator, ``nas_rl.config.build``); a key that does not exist keeps a hint that mentions ``+``.
- A ``???`` value left unset is named where it is unset (``dataset.num_classes``), not where it is read.
- Each entry point names itself in its errors; ``nas-rl-profile`` never writes to a file that is not a table.
- An empty image folder is called empty; ``env.step`` refuses actions that are not integers.

The command-line checks run in this process through ``validate_overrides`` (what every entry point runs first);
the entry points themselves run as subprocesses (marked slow).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nas_rl.cli import validate_overrides
from nas_rl.data.datasets import load_image_folder
from nas_rl.envs.nas_env import NasEnv
from nas_rl.errors import ConfigError
from nas_rl.evaluation.evaluator import Evaluator
from nas_rl.evaluation.reward import MnasReward
from nas_rl.evaluation.store import EvaluationStore
from tests.helpers.data import write_image_folder
from tests.helpers.doubles import ChannelLatencyDouble, HashAccuracyDouble
from tests.helpers.tiny import tiny_space


def refusal(capsys: pytest.CaptureFixture[str], overrides: list[str], config: str = "config", **kwargs) -> str:
    """The one line ``validate_overrides`` prints before exiting with code 2."""
    with pytest.raises(SystemExit) as exited:
        validate_overrides(config, overrides, **kwargs)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- + keys ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["+foo=1"], "+foo=1 is not accepted: nothing reads a new top-level key 'foo'; use a key of the config: seed"),
        (["++foo=1"], "++foo=1 is not accepted: nothing reads a new top-level key 'foo'"),
        (["+search.nope=1"], "+search.nope=1 is not accepted: nothing reads a new key 'nope' of search; use one of "
                             "its keys: budget"),
        (["seed=1,2", "+foo=1"], "+foo=1 is not accepted"),
        (["+seed=1"], "+seed=1 is not accepted: seed is a key of the config already; use seed=1"),
    ],
)  # fmt: skip
def test_a_new_key_that_nothing_reads_is_refused(capsys, overrides: list[str], named: str) -> None:
    line = refusal(capsys, overrides, checks=())
    assert line.startswith(f"nas-rl: error: {named}"), line


@pytest.mark.parametrize(
    "overrides",
    [["++seed=3"], ["+accuracy.nope=1"], ["controller=ppo", "+controller.algorithm.policy_kwargs.net_arch=[8]"]],
)
def test_plus_where_something_reads_the_key_is_left_to_the_checks_that_read_it(capsys, overrides: list[str]) -> None:
    validate_overrides("config", overrides, checks=())  # composes: a _target_'s section is checked by build
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (
            "search.nope=1",
            "search.nope=1 is not accepted: search has no key 'nope'; use one of its keys: budget, store",
        ),
        ("search.nope=", "search.nope= is not accepted: search has no key 'nope'"),
        ("search.budget.x=1", "search.budget.x=1 is not accepted: search.budget is a value (16), not a section"),
        ("nope=1", "nope=1 is not accepted: the config has no top-level key 'nope'; use one of its keys: seed"),
    ],
)
def test_a_key_that_does_not_exist_says_what_exists_and_what_plus_would_do(capsys, override: str, named: str) -> None:
    line = refusal(capsys, [override], checks=())
    assert line.startswith(f"nas-rl: error: {named}"), line
    if "has no key" in named:
        assert f"+{override}" in line and "is refused: nothing reads it" in line


def test_a_missing_value_is_named_where_it_is_unset_not_where_it_is_read(capsys, tmp_path: Path) -> None:
    line = refusal(capsys, ["dataset=image_folder", f"dataset.root={tmp_path}"])
    assert "dataset.num_classes is not set" in line and "dataset.num_classes=<value>" in line, line
    assert "search_space.num_classes is not set" not in line and "MissingMandatoryValue" not in line


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["cluster=dask", "cluster.workers=0"], "cluster.workers=0 is not accepted: use an integer >= 1"),
        (["cluster=dask", "seed=1,2", "cluster.retries=-1"], "cluster.retries=-1 is not accepted"),
    ],
)  # fmt: skip
def test_a_wrong_cluster_setting_is_refused_before_any_run_starts(capsys, overrides: list[str], named: str) -> None:
    """Checked with the other cheap settings (the cluster connects only on first use), so no run folder is made."""
    line = refusal(capsys, overrides)
    assert line.startswith(f"nas-rl: error: {named}"), line


def test_the_one_validator_names_where_a_value_is_unset() -> None:
    from hydra import compose, initialize_config_module

    from nas_rl.config import build

    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        cfg = compose("config", overrides=["dataset=npz"])
    with pytest.raises(ConfigError, match=r"^dataset.num_classes is not set .*search_space.num_classes reads it"):
        build(cfg.search_space, "search_space")


# --- entry points name themselves; the profiler never writes to a file that is not a table ----------------------


def entry_point(main: str, arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = f"from nas_rl.cli import {main}; {main}()"
    return subprocess.run([sys.executable, "-c", code, *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[0]


@pytest.mark.slow  # a subprocess run of the entry point
def test_profile_leaves_a_file_that_is_not_a_table_byte_identical(tmp_path: Path) -> None:
    csv = tmp_path / "latencies.csv"
    csv.write_bytes(b"arch,latency_ms\nir_r1_k3_s1_e3_c16,0.41\nir_r1_k5_s1_e6_c16,0.52")  # last line unterminated
    before = csv.read_bytes()
    done = entry_point("profile_main", [f"profile.table={csv}", "profile.progress=false", "dataset=digits",
                                        f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)  # fmt: skip
    line = one_line(done)
    assert line.startswith("nas-rl-profile: error: ") and f"{csv} is not a nas-rl latency table" in line, line
    assert csv.read_bytes() == before


@pytest.mark.slow  # a subprocess run of the entry point
@pytest.mark.parametrize(
    ("main", "prog"),
    [("profile_main", "nas-rl-profile"), ("latency_report_main", "nas-rl-latency-report"),
     ("supernet_main", "nas-rl-supernet"), ("accuracy_report_main", "nas-rl-accuracy-report")],
)  # fmt: skip
def test_each_entry_point_names_itself_and_validates_before_running(main: str, prog: str, tmp_path: Path) -> None:
    unknown = one_line(entry_point(main, ["nope.key=1"], tmp_path))
    assert unknown.startswith(f"{prog}: error: nope.key=1 is not accepted: the config has no top-level key 'nope'")
    unset = one_line(entry_point(main, ["dataset=image_folder", f"dataset.root={tmp_path}"], tmp_path))
    assert unset.startswith(f"{prog}: error: dataset.num_classes is not set"), unset
    assert not (tmp_path / "outputs").exists()


# --- image folders ----------------------------------------------------------------------------------------------


def test_an_empty_image_folder_is_called_empty_and_the_layout_is_shown(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as raised:
        load_image_folder(empty, num_classes=3, resolution=8)
    message = str(raised.value)
    assert f"{empty} is empty" in message and f"{empty}/<class>/<image>" in message
    assert "num_classes=0" not in message
    flat = write_image_folder(tmp_path / "flat", {"a": 2}) / "a"  # images, but no class sub-folders
    with pytest.raises(ConfigError, match=r"has no class folders, only 2 file\(s\) \(0.png, 1.png\)"):
        load_image_folder(flat, num_classes=2, resolution=8)
    (tmp_path / "folders" / "a").mkdir(parents=True)
    (tmp_path / "folders" / "b").mkdir()
    with pytest.raises(ConfigError, match=r"2 sub-folder\(s\) \(a, b\) but none is a class folder of image files"):
        load_image_folder(tmp_path / "folders", num_classes=2, resolution=8)


# --- env actions ------------------------------------------------------------------------------------------------


def make_env() -> NasEnv:
    evaluator = Evaluator(HashAccuracyDouble(), ChannelLatencyDouble(), MnasReward(1.0), EvaluationStore(":memory:"))
    return NasEnv(tiny_space(), evaluator)


@pytest.mark.parametrize("action", [1.9, 1.0, np.float32(1.0), "2", True, np.bool_(True), np.array([1, 2]),
                                    np.array(1.5), np.array([True]), None])  # fmt: skip
def test_step_refuses_an_action_that_is_not_an_integer(action) -> None:
    env = make_env()
    env.reset(seed=0)
    with pytest.raises(TypeError, match=r"is not accepted: use an integer index of a choice \(a Python int or a numpy"):
        env.step(action)
    assert env.step(1)[0]["position"] == 1  # nothing was played


@pytest.mark.parametrize("action", [1, np.int64(1), np.uint8(1), np.int32(1), np.array(1), np.array([1])])
def test_step_takes_python_and_numpy_integers_and_one_element_integer_arrays(action) -> None:
    env = make_env()
    env.reset(seed=0)
    obs, _, _, _, _ = env.step(action)
    assert obs["position"] == 1 and obs["tokens"][0] == 2
