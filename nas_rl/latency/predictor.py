"""``latency=predictor``: a scikit-learn regressor from per-architecture features to measured latency.

Features come from the device's latency table (:mod:`nas_rl.latency.lut`): the sum of the architecture's entry
latencies, its multiply-adds and parameters (summed over the entries, as the table records them), its layer
count, and the table latency of each block type. The regressor is trained, when the model is built, on the
table's whole-network samples (``nas-rl-profile profile.networks=N`` measures N of them). By default it fits
in log space (a power law of the features), so its errors are relative, as latency targets are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from nas_rl.arch import ArchSpec
from nas_rl.devices.base import Backend
from nas_rl.errors import ConfigError
from nas_rl.latency.base import LatencyModel, LatencyStats
from nas_rl.latency.latency_table import LatencyTable
from nas_rl.latency.lut import LookupTableLatency


def _sum_where(rows: list[dict[str, Any]], field: str, keep: Callable[[dict[str, Any]], bool]) -> float:
    return float(sum(row[field] for row in rows if keep(row["config"])))


#: Feature name -> function of the architecture's table rows. ``lut_<op>_ms`` sums the layers of one block type.
FEATURES: dict[str, Callable[[list[dict[str, Any]]], float]] = {
    "lut_ms": lambda rows: _sum_where(rows, "median_ms", lambda c: True),
    "macs": lambda rows: _sum_where(rows, "macs", lambda c: True),
    "params": lambda rows: _sum_where(rows, "params", lambda c: True),
    "layers": lambda rows: float(sum(row["config"]["kind"] == "layer" for row in rows)),
    "lut_cn_ms": lambda rows: _sum_where(rows, "median_ms", lambda c: c["kind"] == "layer" and c["op"] == "cn"),
    "lut_ds_ms": lambda rows: _sum_where(rows, "median_ms", lambda c: c["kind"] == "layer" and c["op"] == "ds"),
    "lut_ir_ms": lambda rows: _sum_where(rows, "median_ms", lambda c: c["kind"] == "layer" and c["op"] == "ir"),
    "lut_se_ms": lambda rows: _sum_where(rows, "median_ms", lambda c: c["se_ratio"] > 0),
}


def make_regressor(name: str, seed: int = 0) -> Any:
    """A fresh scikit-learn regressor by name; ``ValueError`` lists the known names."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    regressors = {
        "ridge": lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15))),
        "linear": lambda: make_pipeline(StandardScaler(), LinearRegression()),
        "gbr": lambda: GradientBoostingRegressor(
            n_estimators=300, max_depth=2, learning_rate=0.05, subsample=0.8, random_state=seed
        ),
    }
    if name not in regressors:
        raise ConfigError(f"regressor={name!r} is not accepted: use {', '.join(sorted(regressors))}")
    return regressors[name]()


class LatencyPredictor(LatencyModel):
    """Latency predicted by a regressor trained on a latency table's whole-network samples.

    :param space: the search space; the table must have been profiled for it.
    :param resolution: deployment input height = width; the table must have been profiled at it.
    :param path: the table file; ``None``: ``directory`` / the default file name of these settings.
    :param directory: where default-named tables live.
    :param device: the device the table must describe: the configured device (``${device}``), or a name of this
        computer's CPU with ``threads`` and ``precision``.
    :param threads: the interpreter threads the table must have been measured with; ``None``: the device's.
    :param precision: ``fp32`` or ``int8``, as the table's; ``None``: the device's.
    :param regressor: ``ridge`` (default), ``linear`` or ``gbr`` (gradient boosting).
    :param features: names from :data:`FEATURES`.
    :param log: fit log(latency) on log(features): relative errors, a power law of the features.
    :param min_samples: fewest whole-network samples to train on.
    :param on_miss: as :class:`~nas_rl.latency.lut.LookupTableLatency`'s, for the features' table lookups.
    :param seed: seed of randomised regressors.
    :param allow_other_device: as :class:`~nas_rl.latency.lut.LookupTableLatency`'s.
    """

    def __init__(
        self,
        space: Any = None,
        resolution: int | None = None,
        path: str | os.PathLike[str] | None = None,
        directory: str | os.PathLike[str] = "luts",
        device: Backend | str = "host-cpu",
        threads: int | None = None,
        precision: str | None = None,
        regressor: str = "ridge",
        features: tuple[str, ...] | list[str] = ("lut_ms", "macs", "params", "layers"),
        log: bool = True,
        min_samples: int = 10,
        on_miss: str = "fail",
        seed: int = 0,
        allow_other_device: bool = False,
    ) -> None:
        unknown = [name for name in features if name not in FEATURES]
        if unknown or not features:
            raise ConfigError(
                f"features={list(features)!r} is not accepted: use a non-empty list of {', '.join(FEATURES)}"
            )
        self.features = tuple(features)
        self.regressor_name = regressor
        self.log = bool(log)
        self.seed = int(seed)
        self.regressor = make_regressor(regressor, self.seed)
        self.lut = LookupTableLatency(space, resolution, path, directory, device, threads, precision, on_miss, "none",
                                      allow_other_device=allow_other_device)  # fmt: skip
        samples = self.lut.table.network_archs(space)
        if len(samples) < max(2, min_samples):
            raise ConfigError(
                f"latency table {self.lut.table.path} has {len(samples)} whole-network samples; the predictor needs "
                f"min_samples={min_samples}. Accepted: a table with more samples (run nas-rl-profile again with "
                f"profile.networks={max(2, min_samples, 40)}: it resumes and adds them), or a lower min_samples"
            )
        x = np.array([self.feature_vector(arch) for arch, _ in samples])
        y = np.array([row["median_ms"] for _, row in samples], dtype=float)
        # log(x + offset): per-block-type sums can be 0; 1% of the feature's mean keeps their logs finite
        self._offset = 0.01 * x.mean(axis=0) + 1e-12
        self.regressor.fit(*self._transform(x, y))
        self.samples = len(samples)
        residuals = self._predict(x) / y - 1
        self.training_error = float(np.sqrt(np.mean(residuals**2)))

    def feature_vector(self, arch: ArchSpec) -> np.ndarray:
        rows = self.lut.entry_rows(arch)
        return np.array([FEATURES[name](rows) for name in self.features], dtype=float)

    def measure(self, arch: ArchSpec) -> LatencyStats:
        return LatencyStats.predicted(float(self._predict(self.feature_vector(arch)[None])[0]))

    def fingerprint(self) -> dict[str, Any]:
        header = self.lut.table.header
        return {
            "kind": "predictor",
            "table_id": self.lut.table.table_id,
            "device": header["device"],
            "input_shape": header["input_shape"],
            "samples": self.samples,
            "regressor": self.regressor_name,
            "features": list(self.features),
            "log": self.log,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        return (
            f"LatencyPredictor({self.regressor_name}, features={list(self.features)}, {self.samples} samples of "
            f"{self.lut.table.path}, training RMS relative error {self.training_error:.1%})"
        )

    def _transform(self, x: np.ndarray, y: np.ndarray | None = None) -> Any:
        if not self.log:
            return x if y is None else (x, y)
        x = np.log(x + self._offset)
        return x if y is None else (x, np.log(y))

    def _predict(self, x: np.ndarray) -> np.ndarray:
        predicted = self.regressor.predict(self._transform(x))
        return np.exp(predicted) if self.log else predicted

    def tables(self) -> list[LatencyTable]:
        return [self.lut.table]
