"""A latency table is one device's: a table measured on another device is refused unless allowed, and a file that
is not a table is never written to.

Tables are synthetic (tests/helpers/luts.py), written with this computer's device description; "another device"
is the same file with its header's description doctored (another CPU model and runtime), as a table copied from
another machine under the same file name would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import nas_rl.devices.host_cpu as device_module
from nas_rl.errors import ConfigError
from nas_rl.latency.device import host_cpu
from nas_rl.latency.flops_latency import FlopsLatency
from nas_rl.latency.latency_table import LatencyTable
from nas_rl.latency.lut import LookupTableLatency
from nas_rl.latency.predictor import LatencyPredictor
from nas_rl.spaces.mnasnet import MnasNetSpace
from nas_rl.tools.profile import profile_device
from tests.helpers.luts import RESOLUTION, small_space, write_synthetic_table

OTHER_CPU, OTHER_RUNTIME = "Other CPU 9000 @ 5.0GHz", "litert 0.0.1"


def other_devices_table(path: Path) -> Path:
    """A complete synthetic table whose header says it was measured on another CPU with another runtime."""
    write_synthetic_table(path, small_space())
    here = host_cpu()
    text = path.read_text()
    text = text.replace(json.dumps(here.cpu_model), json.dumps(OTHER_CPU), 1)
    text = text.replace(json.dumps(here.runtime), json.dumps(OTHER_RUNTIME), 1)
    path.write_text(text)
    return path


MODELS = {
    "lut": lambda path, **kw: LookupTableLatency(small_space(), RESOLUTION, path, **kw),
    "predictor": lambda path, **kw: LatencyPredictor(small_space(), RESOLUTION, path, **kw),
    "flops": lambda path, **kw: FlopsLatency(RESOLUTION, space=small_space(), path=path, **kw),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_table_of_another_device_is_refused_in_one_line_naming_both_devices(tmp_path: Path, kind: str) -> None:
    path = other_devices_table(tmp_path / "copied.jsonl")
    with pytest.raises(ConfigError) as raised:
        MODELS[kind](path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    assert OTHER_CPU in message and OTHER_RUNTIME in message  # the table's device
    assert host_cpu().cpu_model in message and host_cpu().runtime in message  # this one
    assert "differ in runtime, cpu_model" in message and "allow_other_device=true" in message


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_allow_other_device_uses_the_table_with_a_warning_naming_both(tmp_path: Path, kind: str) -> None:
    path = other_devices_table(tmp_path / "copied.jsonl")
    with pytest.warns(UserWarning, match="measured on another device") as warned:
        model = MODELS[kind](path, allow_other_device=True)
    message = str(warned[0].message)
    assert OTHER_CPU in message and host_cpu().cpu_model in message
    assert model.latency_ms(small_space().sample_archs(3, 1)[0]) > 0


def test_this_devices_table_is_used_without_a_warning(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    path = write_synthetic_table(tmp_path / "here.jsonl", small_space()).path
    assert LookupTableLatency(small_space(), RESOLUTION, path).latency_ms(small_space().sample_archs(3, 1)[0]) > 0
    assert not [w for w in recwarn if "another device" in str(w.message)]


def test_the_config_refuses_another_devices_table_unless_latency_allow_other_device(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_module

    from nas_rl.config import build

    path = other_devices_table(tmp_path / "copied.jsonl")
    space = ["search_space.resolution=16", "search_space.in_channels=1", "search_space.num_classes=10",
             "search_space.stem_channels=8", "search_space.head_channels=32",
             "search_space.base_widths=[8,8,8,16,16,24,32]", "search_space.base_repeats=[1,1,1,1,1,1,1]"]  # fmt: skip
    with initialize_config_module(config_module="nas_rl.conf", version_base="1.3"):
        refused = compose("config", overrides=[*space, "latency=lut", f"latency.path={path}"])
        allowed = compose("config", overrides=[*space, "latency=lut", f"latency.path={path}",
                                               "latency.allow_other_device=true"])  # fmt: skip
    with pytest.raises(ConfigError, match="measured on another device"):
        build(refused.latency, "latency")
    with pytest.warns(UserWarning, match="measured on another device"):
        assert build(allowed.latency, "latency").fingerprint()["kind"] == "lut"


def test_the_shipped_reference_table_keeps_working_on_another_computer(monkeypatch: pytest.MonkeyPatch) -> None:
    """nas_rl/MnasNet-OneShot-v0 states its table's reference device: on a computer described otherwise it warns."""
    from nas_rl.config import build
    from nas_rl.envs.registry import load_spec

    spec = load_spec("MnasNet-OneShot-v0")
    assert spec.latency.allow_other_device is True
    monkeypatch.setattr(device_module, "cpu_model_name", lambda: OTHER_CPU)
    with pytest.warns(UserWarning, match="measured on another device"):
        model = build(spec.latency, "latency")
    assert model.latency_ms(MnasNetSpace(resolution=32, num_classes=10, in_channels=1).sample_archs(0, 1)[0]) > 0
    del spec.latency.allow_other_device  # what the spec would do without the setting
    with pytest.raises(ConfigError, match=f"the table's is host-cpu .*, this one is host-cpu \\({OTHER_CPU};"):
        build(spec.latency, "latency")


# --- a file that is not a table is never written; a table's half-written last line is said to be one ----------


def test_a_file_that_is_not_a_table_is_left_byte_identical_even_when_repairing(tmp_path: Path) -> None:
    csv = tmp_path / "results.csv"
    csv.write_bytes(b"arch,latency_ms\nir_r1_k3,0.4\nds_r1_k5,0.5")  # no newline at the end: looks "half-written"
    before = csv.read_bytes()
    for repair in (False, True):
        with pytest.raises(ConfigError) as raised:
            LatencyTable.read(csv, repair=repair)
        assert "is not a nas-rl latency table" in str(raised.value) and str(csv) in str(raised.value)
        assert "half-written" not in str(raised.value)
    with pytest.raises(ConfigError, match="is not a nas-rl latency table"):
        profile_device(small_space(), host_cpu(), RESOLUTION, csv, progress=False)
    assert csv.read_bytes() == before


def test_a_tables_half_written_last_line_is_named_and_only_the_profiler_cuts_it(tmp_path: Path) -> None:
    path = write_synthetic_table(tmp_path / "t.jsonl", small_space()).path
    complete = path.read_bytes()
    path.write_bytes(complete + b'{"row": "entry", "key": "layer:half-wri')
    with pytest.raises(ConfigError) as raised:
        LookupTableLatency(small_space(), RESOLUTION, path)
    message = str(raised.value)
    assert "is a nas-rl latency table whose last line" in message and "half-written" in message
    assert "nas-rl-profile" in message and "not a nas-rl latency table" not in message
    assert path.read_bytes().startswith(complete) and len(path.read_bytes()) > len(complete)  # read: untouched
    LatencyTable.read(path, repair=True)
    assert path.read_bytes() == complete


def test_a_complete_last_row_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    path = write_synthetic_table(tmp_path / "t.jsonl", small_space()).path
    table = LatencyTable.read(path)
    key = next(iter(table.entries))
    row = {**table.entries[key], "median_ms": table.entries[key]["median_ms"] / 4}
    path.write_bytes(path.read_bytes() + json.dumps(row).encode())
    assert LatencyTable.read(path).entries[key]["median_ms"] == row["median_ms"]
    before = path.read_bytes()
    LatencyTable.read(path, repair=True)
    assert path.read_bytes() == before  # nothing to cut
    LatencyTable.read(path).append({**row, "key": "layer:new"})  # goes on a line of its own
    reread = LatencyTable.read(path)
    assert reread.entries[key]["median_ms"] == row["median_ms"] and "layer:new" in reread.entries
