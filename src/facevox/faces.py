"""Faces stage: find faces in an RGB photo and return them as face boxes, largest first.

A *face box* is the box of the 68 iBUG landmarks (see `crop.py`). Each detector reports its own
kind of box, so each carries a `BoxConvention` that maps its boxes onto face boxes; the numbers were
measured by `training/calibrate_detectors.py` (detector box against the network's own landmarks on
real photos). Detectors are looked up by name in `DETECTORS`; each imports its own package when
made, so that a detector whose package is not installed is left out. By default MediaPipe's detector
(bundled in its wheel, the `mediapipe` extra, Python ≤ 3.12) runs first where it is installed, and
facevox's own ONNX detector (shipped in the package) finds the faces it misses, or all of them where
MediaPipe is absent. OpenCV's Haar cascades (the `haar` extra) can be named but are not a default.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from facevox.errors import FacevoxError
from facevox.image import reduction_for
from facevox.rules import RULES
from facevox.volume import MODELS_DIR


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # face box (x0, y0, x1, y1) in photo pixels
    score: float
    detector: str
    fallback: bool = False  # a low-score candidate: worth checking only where no confident detection is a face


@dataclass(frozen=True)
class BoxConvention:
    """Face box = detector box scaled by (scale_x, scale_y) about its centre moved by (shift_x, shift_y)·size."""

    scale_x: float = 1.0
    scale_y: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0

    def to_face_box(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        width, height = x1 - x0, y1 - y0
        cx = (x0 + x1) / 2 + self.shift_x * width
        cy = (y0 + y1) / 2 + self.shift_y * height
        half_w, half_h = self.scale_x * width / 2, self.scale_y * height / 2
        return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])


DETECT_SIDE = RULES["detection"]["side"]  # pixels: detectors see larger photos shrunk to this (`shrink`)


def decode_reduction(size: tuple[int, int]) -> int:
    """The largest power of two up to 8 by which a photo of this (width, height), larger than DETECT_SIDE,
    may be decoded smaller for the detectors: its longer side stays at DETECT_SIDE / 2 or more, where
    `shrink` would bring it anyway."""
    return reduction_for(max(size), DETECT_SIDE / 2) if max(size) > DETECT_SIDE else 1


class Detector(Protocol):
    name: str

    def detect(self, image: np.ndarray) -> list[Detection]: ...


@contextlib.contextmanager
def _quiet_native_logs():
    """Silence what MediaPipe's C++ side prints to stderr (TFLite and absl start-up chatter)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class MediaPipeDetector:
    """MediaPipe's BlazeFace, short range (faces near the camera), then full range (small faces) only
    where the first finds none. On the 952 held-out real photos the short-range model alone found faces
    in 924, the full-range one in 555, either in 926, and the full-range model takes 2.4–2.5 times the
    short-range one's CPU time (`python bench/detector_models.py`)."""

    name = "mediapipe"
    convention = BoxConvention(scale_x=1.066, scale_y=0.820, shift_x=0.0, shift_y=0.057)  # 194 training photos

    def __init__(self, min_score: float = 0.5):
        from mediapipe.python.solutions import face_detection

        with _quiet_native_logs():
            self._models = [face_detection.FaceDetection(model_selection=m, min_detection_confidence=min_score) for m in (0, 1)]
            for model in self._models:  # start each graph now, while its start-up chatter is silenced
                model.process(np.zeros((64, 64, 3), np.uint8))
        atexit.register(self.close)  # MediaPipe logs its teardown to stderr; close quietly instead

    def detect(self, image: np.ndarray) -> list[Detection]:
        """The whole photo, and overlapping square tiles of it when it is far from square (the
        models see a small downscaled picture, so faces in a wide group photo would be too small):
        the short-range model's faces in them, or if it finds none, the full-range model's."""
        height, width = image.shape[:2]
        tiles = [(box, np.ascontiguousarray(image[box[1]:box[3], box[0]:box[2]])) for box in square_tiles(width, height)]
        for model in self._models:
            found = [self._face(detection, box) for box, tile in tiles for detection in self._run(model, tile)]
            if found:
                return found
        return []

    @staticmethod
    def _run(model, tile: np.ndarray) -> list:
        with _quiet_native_logs():
            return model.process(tile).detections or []

    def _face(self, detection, tile_box) -> Detection:
        x0, y0, x1, y1 = tile_box
        box = detection.location_data.relative_bounding_box
        bx0, by0 = x0 + box.xmin * (x1 - x0), y0 + box.ymin * (y1 - y0)
        bx1, by1 = bx0 + box.width * (x1 - x0), by0 + box.height * (y1 - y0)
        return Detection(self.convention.to_face_box(bx0, by0, bx1, by1), float(detection.score[0]), self.name)

    def close(self):
        with _quiet_native_logs():
            for model in self._models:
                model.close()
        self._models = []


class HaarDetector:
    """OpenCV's Haar cascades: frontal faces, and profiles facing either way."""

    name = "haar"
    # Measured on 67 frontal detections of training photos; profiles were too rare to measure (2 of
    # 200 photos) and share it.
    convention = BoxConvention(scale_x=1.206, scale_y=0.859, shift_x=0.0, shift_y=0.142)

    def __init__(self):
        import cv2

        if not hasattr(cv2, "CascadeClassifier"):
            raise ImportError("this OpenCV has no Haar cascades (OpenCV 5 moved them out of its main module)")
        folder = cv2.data.haarcascades
        self._cv2 = cv2
        self._frontal = cv2.CascadeClassifier(folder + "haarcascade_frontalface_default.xml")
        self._profile = cv2.CascadeClassifier(folder + "haarcascade_profileface.xml")

    def detect(self, image: np.ndarray) -> list[Detection]:
        cv2 = self._cv2
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        height, width = grey.shape
        min_size = (max(24, min(height, width) // 12),) * 2
        found = []
        for kind, cascade, flipped in (("frontal", self._frontal, False), ("profile", self._profile, False), ("profile", self._profile, True)):
            source = grey[:, ::-1] if flipped else grey
            boxes, _, weights = cascade.detectMultiScale3(source, 1.1, 5, minSize=min_size, outputRejectLevels=True)
            for (x, y, w, h), weight in zip(boxes, np.ravel(weights)):
                x0 = width - (x + w) if flipped else x
                score = float(1 / (1 + np.exp(-(weight - 2.0))))  # cascade level weight → (0, 1)
                found.append(Detection(self.convention.to_face_box(x0, y, x0 + w, y + h), score, f"{self.name}-{kind}"))
        return found


class OnnxFaceDetector:
    """facevox's own detector (`training/train_detector.py`), run by onnxruntime: a small fully
    convolutional network run on the photo scaled to each of `pixels` pixel counts (at most twice the
    photo's size; one level by default, 512² pixels, which found more held-out faces than 448² or 640²,
    and two levels added false detections), face centres as peaks of its centre map; `detect_faces`
    merges the levels' boxes. Its boxes are face boxes already (the box of the 68
    landmarks), so its convention is the identity. One onnxruntime thread by default: the network is
    small, and a second thread doubled its CPU time (`bench/detection.py`) for little wall time.
    Peaks between `fallback_score` and `min_score` come back as fallback detections, which the
    pipeline checks only where no confident one is a face (turned faces often score low)."""

    name = "facevox"
    convention = BoxConvention()

    def __init__(self, path=None, min_score: float | None = None, pixels: tuple[int, ...] = (RULES["detection"]["pixels"],), threads: int | None = 1,
                 fallback_score: float | None = None):
        import json

        import onnxruntime

        self.path = Path(path) if path else MODELS_DIR / f"{RULES['models']['detector']}.onnx"
        if not self.path.exists():
            raise FileNotFoundError(f"face detector model {self.path} not found")
        self.info = json.loads(self.path.with_suffix(".json").read_text())
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.min_score = float(self.info.get("min_score", 0.5) if min_score is None else min_score)
        self.fallback_score = min(self.min_score, float(self.info.get("fallback_score", self.min_score) if fallback_score is None else fallback_score))
        self.pixels, self.stride, self.multiple = pixels, int(self.info["stride"]), int(self.info["multiple"])

    def detect(self, image: np.ndarray) -> list[Detection]:
        return [found for pixels in self.pixels for found in self.detect_at(image, pixels)]

    def detect_at(self, image: np.ndarray, pixels: int) -> list[Detection]:
        height, width = image.shape[:2]
        scale = min(2.0, float(np.sqrt(pixels / (height * width))))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0)) if size != (width, height) else image
        padded = np.zeros((-(-size[1] // self.multiple) * self.multiple, -(-size[0] // self.multiple) * self.multiple, 3), np.float32)
        padded[:size[1], :size[0]] = small / np.float32(255)
        maps = self.session.run(None, {"image": padded.transpose(2, 0, 1)[None]})[0][0]
        return [Detection(box, score, self.name, fallback=score < self.min_score)
                for box, score in self.decode(maps, (size[0] / width, size[1] / height))]

    def decode(self, maps: np.ndarray, scale: tuple[float, float]) -> list[tuple[np.ndarray, float]]:
        """Peaks of the centre map above fallback_score → boxes in photo pixels (pixel centres at integers)."""
        from scipy.ndimage import maximum_filter

        heat = 1 / (1 + np.exp(-maps[0]))
        rows, cols = np.nonzero((heat >= self.fallback_score) & (heat == maximum_filter(heat, size=3, mode="constant")))
        found = []
        for r, c in zip(rows, cols):
            _, log_w, log_h, dx, dy = maps[:, r, c]
            cx, cy = (c + dx) * self.stride, (r + dy) * self.stride
            w, h = np.exp(log_w) * self.stride, np.exp(log_h) * self.stride
            box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            box = (box + 0.5) / np.array([scale[0], scale[1], scale[0], scale[1]]) - 0.5
            found.append((box, float(heat[r, c])))
        return found


def square_tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The whole picture, plus squares of its short side overlapping by half, if it is not near square."""
    tiles = [(0, 0, width, height)]
    side, long = min(width, height), max(width, height)
    if long > 1.3 * side:
        starts = np.linspace(0, long - side, int(np.ceil(2 * long / side - 1))).round().astype(int)
        tiles += [(s, 0, s + side, height) if width > height else (0, s, width, s + side) for s in starts]
    return tiles


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / max(area(a) + area(b) - inter, 1e-9)


def merge(detections: list[Detection], overlap: float = RULES["detection"]["merge_overlap"]) -> list[Detection]:
    """Non-maximum suppression by score, then largest face first."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: -d.score):
        if all(box_iou(detection.box, k.box) < overlap for k in kept):
            kept.append(detection)
    return sorted(kept, key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))


def tiers(detections: list[Detection]) -> tuple[list[Detection], list[Detection]]:
    """The confident detections, then the fallback ones, each in the given order: the pipeline checks
    the second only where none of the first is a face."""
    return [d for d in detections if not d.fallback], [d for d in detections if d.fallback]


def detect_faces(image: np.ndarray, detectors: list[Detector]) -> list[Detection]:
    """All faces found by the first detector that finds any (the rest are fallbacks), largest first,
    their boxes in the photo's pixels. The detectors see the photo shrunk by a whole factor to at
    most DETECT_SIDE pixels on its longer side (`shrink`)."""
    small, (scale_x, scale_y) = shrink(image, DETECT_SIDE)
    for detector in detectors:
        found = merge(detector.detect(small))
        if found:
            return [replace(d, box=d.box * (scale_x, scale_y, scale_x, scale_y)) for d in found]
    return []


def shrink(image: np.ndarray, side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The image shrunk by the smallest whole factor that brings its longer side to at most `side`
    pixels (the mean of each factor × factor block; the last rows and columns that fill no block are
    left out), and the (x, y) scale from its pixels back to the image's. MediaPipe looks at 128 or 192
    pixels of each tile anyway; on a 12-megapixel photo this makes detection about twice as fast, with
    the same boxes to a few pixels."""
    height, width = image.shape[:2]
    factor = -(-max(height, width) // side)
    if factor <= 1:
        return image, (1.0, 1.0)
    from PIL import Image

    whole = (0, 0, width // factor * factor, height // factor * factor)
    small = np.asarray(Image.fromarray(image).reduce(factor, box=whole))
    return small, (float(factor), float(factor))


# Detectors by name; `detectors_by_name("a+b")` gives [a, b], b a fallback where a finds no face.
DETECTORS: dict[str, type] = {
    "facevox": OnnxFaceDetector,  # shipped in the package
    "mediapipe": MediaPipeDetector,  # pip install facevox[mediapipe]
    "haar": HaarDetector,  # pip install facevox[haar]
}
DEFAULT_DETECTORS = ("mediapipe", "facevox")  # tried in this order; those not installed are left out


def detectors_by_name(names: str) -> list[Detector]:
    """The detectors named in "a+b+…" (keys of DETECTORS), made in that order; ImportError if one
    needs a package that is not installed, ValueError for an unknown name."""
    unknown = [name for name in names.split("+") if name not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown face detector {unknown[0]!r} (known: {', '.join(DETECTORS)})")
    return [DETECTORS[name]() for name in names.split("+")]


def default_detectors() -> list[Detector]:
    """The installed detectors of DEFAULT_DETECTORS, in that order (the later ones are fallbacks)."""
    detectors: list[Detector] = []
    for name in DEFAULT_DETECTORS:
        try:
            detectors.append(DETECTORS[name]())
        except ImportError:  # its package is not installed (or an OpenCV without the cascades)
            pass
    if not detectors:
        raise FacevoxError("no face detector installed: pip install 'facevox[mediapipe]' (Python 3.12 or older) or 'facevox[haar]'")
    return detectors
