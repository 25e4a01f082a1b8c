"""Volume stage: a (192, 192, 3) crop → the network's occupancy volume, landmark heatmaps and depths.

The model is an ONNX file with a JSON of its sizes beside it (docs/architecture.md, "model contract");
sizes are read from that JSON, never assumed here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facevox.landmarks import face_evidence, from_heatmaps, mirror_maps
from facevox.rules import RULES

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = RULES["models"]["network"]


@dataclass
class NetworkOutput:
    """volume (D, s, s) occupancy in [0, 1], indexed [k, y, x]; heatmaps and landmark_depth (68, H, H).
    points: the landmarks (`landmarks`) where the network stage already found them (on a GPU); then the
    heatmaps and depths may be left out (None), and face_evidence carries their evidence. front: the volume's front depth and mask
    (`facevox.mesh.front_depth`) where the network stage already made them (a GPU does it at a fraction of
    the cost); then the volume may be left out. A landmarks-only pass (surface=False) may leave out both."""

    volume: np.ndarray | None
    heatmaps: np.ndarray | None
    landmark_depth: np.ndarray | None
    front: tuple[np.ndarray, np.ndarray] | None = None
    points: np.ndarray | None = None
    face_evidence: float | None = None  # where the network stage already measured it (on a GPU)
    hierarchy: object | None = None  # a hierarchical model's facevox.hierarchy.Hierarchy (then volume is None)

    def dense_volume(self) -> np.ndarray:
        """The volume on the crop's grid: `volume`, or the hierarchy's composed on its level of that grid."""
        if self.volume is not None or self.hierarchy is None:
            return self.volume
        return self.hierarchy.volume(self.hierarchy.grids.index(self.hierarchy.input_size))

    def landmarks(self, input_size: int) -> np.ndarray:
        """(68, 3) points (x, y, k) in crop pixels: `points`, or `facevox.landmarks.from_heatmaps`."""
        return self.points if self.points is not None else from_heatmaps(self.heatmaps, self.landmark_depth, input_size)

    def evidence(self) -> float | None:
        """`facevox.landmarks.face_evidence`: as measured by the network stage, or of the heatmaps; None
        where neither is there."""
        if self.face_evidence is not None:
            return self.face_evidence
        return None if self.heatmaps is None else face_evidence(self.heatmaps)

    def front_depth(self) -> tuple[np.ndarray, np.ndarray]:
        from facevox.mesh import front_depth

        return self.front if self.front is not None else front_depth(self.volume)


def model_files(path: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """The ONNX file (default: the shipped model; a bare name such as "hsp-hg2-w192": that model in
    facevox/models/) and its JSON of sizes."""
    path = Path(path) if path else MODELS_DIR / f"{DEFAULT_MODEL}.onnx"
    if not path.exists() and not path.suffix and (MODELS_DIR / f"{path.name}.onnx").exists():
        path = MODELS_DIR / f"{path.name}.onnx"
    if not path.exists():
        raise FileNotFoundError(f"model file {path} not found")
    return path, json.loads(path.with_suffix(".json").read_text())


def load_network(path: str | os.PathLike | None = None, threads: int | None = None, mirror: bool = True):
    """The volume stage for a model file: VolumeModel for a dense model, facevox.hierarchy.HierarchicalModel
    for a hierarchical one (its JSON has `hierarchy`)."""
    path, info = model_files(path)
    if "hierarchy" in info:
        from facevox.hierarchy import HierarchicalModel

        return HierarchicalModel(path, threads=threads, mirror=mirror)
    return VolumeModel(path, threads=threads, mirror=mirror)


class VolumeModel:
    """The shipped network on onnxruntime (CPU unless told otherwise). Load once, call many times.
    mirror: where the surface is asked for, the volume, heatmaps and landmark depths are the means of the
    crop's and its mirror image's (mirrored back, each landmark's maps from its mirror landmark's), which
    lowers the surface error by about a twentieth at the cost of a second network run
    (bench/accuracy_synthetic.py)."""

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None, providers=None, mirror: bool = True):
        import onnxruntime

        self.path, self.info = model_files(path)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        self.input_size = int(self.info["input_size"])
        self.mirror = mirror

    def __call__(self, crops: np.ndarray, surface: bool = True) -> list[NetworkOutput]:
        """crops: (n, s, s, 3) uint8 RGB → one NetworkOutput per crop; surface=False: the landmarks' maps
        alone (no volume)."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        n = len(crops)
        batch = crops.transpose(0, 3, 1, 2)
        if surface and self.mirror:
            batch = np.concatenate([batch, batch[..., ::-1]])
        batch = np.ascontiguousarray(batch, dtype=np.float32) / 255.0
        outputs = self.session.run(["volume"] * surface + ["heatmaps", "landmark_depth"], {"image": batch})
        heatmaps, depth = outputs[-2:]
        volumes = outputs[0] if surface else [None] * n
        if surface and self.mirror:
            volumes = (volumes[:n] + volumes[n:, ..., ::-1]) / 2
            heatmaps, depth = ((maps[:n] + mirror_maps(maps[n:])) / 2 for maps in (heatmaps, depth))
        return [NetworkOutput(v, h, d) for v, h, d in zip(volumes, heatmaps, depth)]
