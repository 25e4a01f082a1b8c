"""Shared parts of the AFLW yardsticks (bench/accuracy_aflw2000.py, bench/accuracy_aflw.py).

* yaw bins and a fixed subset stratified by bin;
* matching a detected face to the labelled one (box centres);
* per-point landmark errors over sqrt(w·h) of the true points' box, NaN points ignored;
* the three systems run on each photo: facevox as shipped (`facevox.Reconstructor`), MediaPipe's face
  mesh (the Surrey model fitted to its 478 points through training/data/mediapipe_to_sfm.json, as
  training/label_real.py labels real photos, so its 68 points are 3D landmark vertices), and the
  classic peer (the Surrey model fitted to facevox's 68 2D landmarks, training/fit.py). Each gives, for
  every face it finds, 68 points (x, y, depth) in photo pixels.

Plain numpy apart from `Systems`, which loads facevox, the Surrey model and (lazily) mediapipe.
"""

from __future__ import annotations

import time

import numpy as np

YAW_BINS = {"0-30": (0.0, 30.0), "30-60": (30.0, 60.0), "60-90": (60.0, 180.0)}  # |yaw| in degrees; AFLW has a few at 90-91
GROUPS_68 = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48), "mouth": slice(48, 68)}
SYSTEMS = ("facevox", "mediapipe", "peer")


def yaw_bin(yaw: float) -> str:
    """The bin name of a yaw angle (degrees; its absolute value is binned)."""
    for name, (low, high) in YAW_BINS.items():
        if low <= abs(yaw) < high:
            return name
    raise ValueError(f"yaw {yaw} outside every bin")


def stratified(yaws: np.ndarray, limit: int) -> np.ndarray:
    """Indices of a fixed subset of about `limit` faces, the same count from each yaw bin (fewer where a
    bin has fewer), evenly spaced through each bin in file order; all faces when limit is 0."""
    yaws = np.asarray(yaws, float)
    if not limit:
        return np.arange(len(yaws))
    bins = np.array([yaw_bin(y) for y in yaws])
    chosen = []
    for name in YAW_BINS:
        members = np.flatnonzero(bins == name)
        take = min(len(members), limit // len(YAW_BINS))
        if take:
            chosen.append(members[np.linspace(0, len(members) - 1, take).round().astype(int)])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)


def box_of(points: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of the finite 2D points."""
    points = np.asarray(points, float)[:, :2]
    points = points[np.isfinite(points).all(1)]
    return np.r_[points.min(0), points.max(0)]


def match(candidates: list[np.ndarray], truth_box: np.ndarray) -> int | None:
    """Index of the candidate face (each an (n, ≥2) point array) whose points' box centre lies nearest
    the true box's centre, if within half the true box's width of it; else None."""
    if not candidates:
        return None
    centre = (truth_box[:2] + truth_box[2:]) / 2
    distances = [np.linalg.norm((box_of(c)[:2] + box_of(c)[2:]) / 2 - centre) for c in candidates]
    best = int(np.argmin(distances))
    return best if distances[best] <= 0.5 * (truth_box[2] - truth_box[0]) else None


def point_errors(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(n,) 2D distance of each point over sqrt(w·h) of the box of the finite true points; NaN where the
    true point is NaN (not labelled)."""
    predicted, truth = np.asarray(predicted, float)[:, :2], np.asarray(truth, float)[:, :2]
    w, h = np.ptp(truth[np.isfinite(truth).all(1)], axis=0)
    return np.linalg.norm(predicted - truth, axis=1) / np.sqrt(w * h)


def summary(values) -> dict:
    """mean / median / count (rounded) of the finite values."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if not len(values):
        return {"count": 0}
    return {"mean": round(float(values.mean()), 5), "median": round(float(np.median(values)), 5), "count": int(len(values))}


def mean_of_bins(by_bin: dict) -> float | None:
    """The mean over the yaw bins of each bin's mean NME (None when a bin has none)."""
    means = [by_bin[name]["nme"].get("mean") for name in YAW_BINS if name in by_bin]
    return round(float(np.mean(means)), 5) if means and all(m is not None for m in means) else None


def group_nme(errors: np.ndarray) -> dict:
    """(faces, 68) per-point errors → each landmark group's mean NME over the faces (mean of the
    per-face group means)."""
    return {name: round(float(np.nanmean(np.nanmean(errors[:, part], axis=1))), 5) if len(errors) else None
            for name, part in GROUPS_68.items()}


def score_by_bin(per_face: dict, found: dict, yaws: np.ndarray, details=lambda system, rows: {}) -> dict:
    """Each system's report: per |yaw| bin the faces, how many it found and its NME summary on them,
    the same NME on the faces every system found (`common`), and both as a mean of bins.
    per_face, found: {system: (n,) NME, (n,) bool}; details(system, rows) adds fields to each bin's entries."""
    bins = np.array([yaw_bin(y) for y in yaws])
    common = np.logical_and.reduce(list(found.values()))
    out = {}
    for system, nme in per_face.items():
        report = {"by_bin": {}, "common": {"by_bin": {}}}
        for name in YAW_BINS:
            part = bins == name
            hit, both = part & found[system], part & common
            report["by_bin"][name] = {"faces": int(part.sum()), "found": int(hit.sum()), "found_share": round(float(hit.sum() / max(part.sum(), 1)), 4),
                                      "nme": summary(nme[hit]), **details(system, hit)}
            report["common"]["by_bin"][name] = {"faces": int(both.sum()), "nme": summary(nme[both]), **details(system, both)}
        report["mean_of_bins"] = mean_of_bins(report["by_bin"])
        report["common"]["mean_of_bins"] = mean_of_bins(report["common"]["by_bin"])
        report["found"] = int(found[system].sum())
        out[system] = report
    return out


class Systems:
    """facevox, MediaPipe's face mesh and the classic peer (and, with `candidate`, facevox with another
    model beside the first, for a side-by-side run), loaded once; `__call__` runs them on a photo."""

    def __init__(self, model_path: str | None = None, mirror: bool = True, threads: int | None = None, max_faces: int = 4,
                 candidate: str | None = None):
        import facevox
        from training import sfm
        from training.correspondence import load_table
        from training.mediapipe_points import FaceMeshPoints  # imports mediapipe only when built

        settings = facevox.Settings(mirror=mirror)
        self.recons = {"facevox": facevox.Reconstructor(model_path, settings=settings, threads=threads)}
        if candidate:
            self.recons["candidate"] = facevox.Reconstructor(candidate, settings=settings, threads=threads)
        self.names = SYSTEMS + (("candidate",) if candidate else ())
        self.sfm = sfm.load()
        self.face_mesh = FaceMeshPoints(max_faces=max_faces)
        self.point_ids, self.vertex_ids = load_table()
        self.seconds = {name: 0.0 for name in self.names}

    def facevox(self, image: np.ndarray, name: str = "facevox") -> list[np.ndarray]:
        from facevox.errors import NoFaceError

        started = time.perf_counter()
        try:
            faces = self.recons[name](image)
        except NoFaceError:
            faces = []
        self.seconds[name] += time.perf_counter() - started
        return [f.landmarks_3d for f in faces if len(f.mesh.vertices)]

    def mediapipe(self, image: np.ndarray) -> list[np.ndarray]:
        from training.label_real import fit_face_mesh

        started = time.perf_counter()
        out = []
        for points in self.face_mesh(image):
            fit = fit_face_mesh(self.sfm, self.point_ids, self.vertex_ids, points[:, :2])
            out.append(fit.project(self.sfm)[self.sfm.landmarks])
        self.seconds["mediapipe"] += time.perf_counter() - started
        return out

    def peer(self, landmarks_3d: np.ndarray) -> np.ndarray:
        """The Surrey model fitted to facevox's 2D landmarks; its 68 landmark vertices placed at
        facevox's mean landmark depth."""
        from training.fit import fit_landmarks

        started = time.perf_counter()
        fit = fit_landmarks(self.sfm, self.sfm.landmarks, landmarks_3d[:, :2])
        points = fit.project(self.sfm)[self.sfm.landmarks]
        points[:, 2] += landmarks_3d[:, 2].mean() - points[:, 2].mean()
        self.seconds["peer"] += time.perf_counter() - started
        return points

    def __call__(self, image: np.ndarray, truth_box: np.ndarray, compared=lambda points: points[:, :2]) -> dict:
        """{system: (68, 3) points of the face matched to the true box, or None when not found}.
        `compared` maps a face's 68 points to the points whose box is matched to the true box."""
        found = {}
        faces = self.facevox(image)
        i = match([compared(f) for f in faces], truth_box)
        found["facevox"] = None if i is None else faces[i]
        found["peer"] = None if i is None else self.peer(faces[i])
        faces = self.mediapipe(image)
        i = match([compared(f) for f in faces], truth_box)
        found["mediapipe"] = None if i is None else faces[i]
        if "candidate" in self.recons:
            faces = self.facevox(image, "candidate")
            i = match([compared(f) for f in faces], truth_box)
            found["candidate"] = None if i is None else faces[i]
        return found
