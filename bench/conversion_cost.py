"""What getting a flatbuffer costs next to benchmarking it: TensorFlow's converter against the direct emitter.

    python bench/conversion_cost.py [--archs 10] [--resolutions 32 224] [--threads 1] [--seed 0]

Per architecture and input resolution: the converter path as ``LiteRTLatency.convert`` runs it (build the Keras
model, convert, clear the Keras session; ``conversion=saved_model`` and ``frozen_graph``), the
direct emission (``conversion=direct``, the default: ``tflite_from_arch``, seeded weights, no Keras), and the LiteRT
benchmark of the result with LiteRTLatency's default settings (>= 0.5 s warm-up, >= 50 runs and >= 1 s timed).
Resolution 32 is the default search's space (``envs/MnasNet-v0.yaml``: 32x32 grey, 10 classes); 224 the
MnasNet space at ImageNet's shape (224x224x3, 1000 classes). TensorFlow is imported and warmed up by one
untimed conversion first, as a search does once.

Prints two markdown tables: seconds per architecture (median, with each path's ratio to the benchmark), and the
latency of the direct flatbuffer against the converter's (median and largest relative difference), next to the
converter's flatbuffer measured twice (the measurement's own noise). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from nas_rl.arch import ArchSpec
from nas_rl.config import build
from nas_rl.envs.registry import load_spec
from nas_rl.latency.litert import LiteRTLatency
from nas_rl.models.tflite_builder import tflite_from_arch
from nas_rl.spaces.base import SearchSpace
from nas_rl.spaces.mnasnet import MnasNetSpace

CONVERSIONS = ("saved_model", "frozen_graph")


def space_at(resolution: int) -> SearchSpace:
    if resolution == 32:
        return build(load_spec("MnasNet-v0").search_space, "search_space")
    return MnasNetSpace(resolution=resolution, num_classes=1000, in_channels=3)


def timed(work: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work(*args, **kwargs)
    return time.perf_counter() - start, result


def relative(a: float, b: float) -> float:
    return abs(a / b - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=10)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 224])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cost_rows, latency_rows = [], []
    for resolution in args.resolutions:
        space = space_at(resolution)
        archs: list[ArchSpec] = space.sample_archs(args.seed, args.archs, distinct=True)
        converters = {
            name: LiteRTLatency(threads=args.threads, resolution=resolution, in_channels=archs[0].in_channels,
                                conversion=name)
            for name in CONVERSIONS
        }  # fmt: skip
        latency = converters["saved_model"]
        latency.convert(archs[0])  # imports TensorFlow and warms the converter up: a search pays this once
        times: dict[str, list[float]] = {name: [] for name in (*CONVERSIONS, "direct", "benchmark")}
        direct_gap, noise = [], []
        for arch in archs:
            converted = b""
            for name, model in converters.items():  # both give the same ops; the benchmark takes the last
                seconds, converted = timed(model.convert, arch)
                times[name].append(seconds)
            seconds, emitted = timed(tflite_from_arch, arch, resolution, seed=args.seed)
            times["direct"].append(seconds)
            seconds, first = timed(latency.benchmark, converted)
            times["benchmark"].append(seconds)
            direct, again = latency.benchmark(emitted), latency.benchmark(converted)
            direct_gap.append(relative(direct.median_ms, first.median_ms))
            noise.append(relative(again.median_ms, first.median_ms))
        bench = statistics.median(times["benchmark"])
        for name, label in (("saved_model", "converter, saved_model (the old default)"),
                            ("frozen_graph", "converter, frozen_graph"),
                            ("direct", "direct emitter (conversion=direct, the default)"),
                            ("benchmark", "LiteRT benchmark (default settings)")):  # fmt: skip
            median = statistics.median(times[name])
            cost_rows.append(f"| {resolution} | {label} | {len(archs)} | {median:.3f} | {max(times[name]):.3f} | "
                             f"{median / bench:.3g}x |")  # fmt: skip
        latency_rows.append(f"| {resolution} | {len(archs)} | {statistics.median(direct_gap):.1%} | "
                            f"{max(direct_gap):.1%} | {statistics.median(noise):.1%} | {max(noise):.1%} |")  # fmt: skip
    print(f"Seconds per architecture ({args.threads} thread(s)); the last column is median / the benchmark's median.\n")
    print("| resolution | path | archs | median s | max s | x benchmark |")
    print("|---:|---|---:|---:|---:|---:|")
    print("\n".join(cost_rows))
    print("\nMedian latency, direct flatbuffer vs converter's: relative difference, next to the converter's flatbuffer "
          "measured again (noise).\n")  # fmt: skip
    print("| resolution | archs | direct vs converter, median | max | converter vs itself, median | max |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("\n".join(latency_rows))


if __name__ == "__main__":
    main()
