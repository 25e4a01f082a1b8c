"""facevox's face detector: scene composition, targets, a few training steps on CPU, ONNX export and
the runtime decoder against the training-side decoder, and the shipped model on a package photo."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="detector training tests need the [train] extra (torch)")

from facevox.faces import OnnxFaceDetector, box_iou, merge  # noqa: E402
from training.detector_net import DetectorNet, decode  # noqa: E402
from training.scenes import Picture, SceneMaker, face_boxes, rotate  # noqa: E402
from training.train_detector import CropPool, export, losses, targets  # noqa: E402


def square_face(centre, size) -> np.ndarray:
    """68 stand-in landmarks spread over a square of `size` pixels around `centre`."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([centre[0] + size / 2 * np.cos(t), centre[1] + size / 2 * np.sin(t)], -1)


def tiny_pictures(count: int, seed: int = 0) -> list[Picture]:
    rng = np.random.default_rng(seed)
    pictures = []
    for _ in range(count):
        image = rng.integers(0, 255, (3, 96, 120), dtype=np.uint8)
        image[:, 30:70, 40:80] = 220  # a bright blob where the "face" is
        pictures.append(Picture(torch.as_tensor(image), square_face((59.5, 49.5), 40)[None]))
    return pictures


def test_scene_landmarks_follow_the_pasted_pixels():
    """A face's landmark box in a composed scene covers the bright blob that was pasted with it."""
    maker = SceneMaker(tiny_pictures(4), [torch.zeros(3, 64, 64, dtype=torch.uint8)], size=128)
    images, faces = maker.make(12, tiny_pictures(2, 1), np.random.default_rng(0))
    assert images.shape == (12, 3, 128, 128) and len(faces) == 12
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    assert sum(len(f) for f in faces) > 0
    bright = []
    for image, points in zip(images, faces):
        for box in face_boxes(points) if len(points) else []:
            cx, cy = np.clip(np.round((box[:2] + box[2:]) / 2).astype(int), 1, 126)
            bright.append(float(image[:, cy - 1:cy + 2, cx - 1:cx + 2].mean()) > 0.3)  # unless an occluder covers it
    assert np.mean(bright) > 0.8


def test_rotation_moves_landmarks_with_the_picture():
    image = torch.zeros(3, 64, 64)
    image[:, 10:14, 40:44] = 1.0  # a dot at about (41.5, 11.5)
    points = square_face((41.5, 11.5), 6)[None]
    turned, moved = rotate(image, points, 30.0)
    centre = moved[0].mean(0)
    ys, xs = np.nonzero(turned[0].numpy() > 0.5)
    assert np.hypot(xs.mean() - centre[0], ys.mean() - centre[1]) < 1.0


class FlatFaces:
    """A stand-in crop source: every crop one grey level, so that the pool shows which source made it."""

    def __init__(self, level: int):
        self.level = level

    def sample(self, count: int, seed: int):
        from training.sources import Batch

        image = torch.full((count, 3, 8, 8), self.level / 255)
        landmarks = torch.as_tensor(np.tile(square_face((4, 4), 4), (count, 1, 1)))
        return Batch(image, torch.zeros(count, 8, 8), torch.zeros(count, 8, 8), landmarks, torch.zeros(count, 3), torch.zeros(count, 1, 3))


def test_crop_pool_takes_each_source_in_its_share():
    pool = CropPool([FlatFaces(10), FlatFaces(20), FlatFaces(30)], [0.35, 0.35, 0.3], 300, seed=0)
    levels = pool.images[:, 0, 0, 0].tolist()
    assert np.abs(np.array([levels.count(v) for v in (10, 20, 30)]) - [105, 105, 90]).max() <= 2  # rendered in chunks of 256
    assert CropPool([FlatFaces(10), FlatFaces(20)], [1, 0], 7, seed=0).images[:, 0, 0, 0].tolist() == [10] * 7


def test_targets_and_decoding_round_trip():
    faces = [square_face((100.3, 60.7), 40)[None], np.zeros((0, 68, 2)), np.concatenate([square_face((30, 30), 12)[None], square_face((90, 100), 70)[None]])]
    heat, centres = targets(faces, 128, "cpu")
    assert heat.shape == (3, 32, 32)
    assert [int((h >= 1 - 1e-4).sum()) for h in heat] == [1, 0, 2]
    maps = torch.full((3, 5, 32, 32), -20.0)
    maps[centres["scene"], 0, centres["y"], centres["x"]] = 20.0
    maps[centres["scene"], 1:3, centres["y"], centres["x"]] = centres["log_size"]
    maps[centres["scene"], 3:5, centres["y"], centres["x"]] = centres["offset"]
    for found, truth in zip(decode(maps, 0.5), faces):
        assert len(found) == len(truth)
        for box in face_boxes(truth) if len(truth) else []:
            assert max(box_iou(box, f[:4].numpy()) for f in found) > 0.98


def test_training_steps_export_and_the_runtime_decoder(tmp_path):
    """A few steps on CPU lower the loss on a fixed batch; the exported ONNX model, run by the runtime's
    detector, finds what the torch network and decoder find."""
    torch.manual_seed(0)
    maker = SceneMaker(tiny_pictures(6), [torch.zeros(3, 64, 64, dtype=torch.uint8)], size=128)
    images, faces = maker.make(8, tiny_pictures(3, 2), np.random.default_rng(1))
    heat, centres = targets(faces, 128, "cpu")
    net = DetectorNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        parts = losses(net(images), heat, centres)
        loss = parts["centre"] + parts["size"] + parts["offset"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert np.isfinite(float(loss)) and float(loss) < first

    net.eval()
    checkpoint = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "optimizer": {}, "step": 15, "config": "det-s"}, checkpoint)
    export(checkpoint, tmp_path / "face-detector.onnx")
    detector = OnnxFaceDetector(tmp_path / "face-detector.onnx", min_score=0.05, pixels=(128 * 128,))
    photo = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with torch.no_grad():
        expected = decode(net(torch.as_tensor(photo).permute(2, 0, 1)[None].float() / 255), 0.05, top=10**6)[0].numpy()
    found = detector.detect(photo)
    assert len(found) == len(expected)
    for detection in found:
        best = np.abs(expected[:, :4] - detection.box).max(1).argmin()
        assert np.abs(expected[best, :4] - detection.box).max() < 0.6  # half-pixel conventions apart
        assert abs(expected[best, 4] - detection.score) < 1e-3


def test_shipped_detector_finds_the_astronaut(astronaut):
    """One face on the astronaut photo, where the volume network puts the face's 68 landmarks."""
    import facevox

    found = [d for d in merge(OnnxFaceDetector().detect(astronaut)) if not d.fallback]
    assert len(found) == 1
    faces = facevox.Reconstructor(detectors=[OnnxFaceDetector()])(astronaut)
    marks = faces[0].landmarks_2d
    assert box_iou(found[0].box, np.r_[marks.min(0), marks.max(0)]) > 0.6


class FixedDetector:
    """A detector that returns the same detections for any photo."""

    name = "fixed"

    def __init__(self, detections):
        self.detections = detections

    def detect(self, image):
        return self.detections


def test_fallback_detections_are_checked_only_where_no_confident_one_is_a_face(astronaut, monkeypatch):
    import facevox
    from facevox.faces import Detection

    face_box = next(d.box for d in merge(OnnxFaceDetector().detect(astronaut)) if not d.fallback)
    background = Detection(np.array([0.0, 0.0, 90.0, 90.0]), 0.9, "fixed")  # the flag: no face there
    recon = facevox.Reconstructor(detectors=[], settings=facevox.Settings(mesh="surface"))
    checked = []
    reconstruct_face = recon.reconstruct_face
    monkeypatch.setattr(recon, "reconstruct_face", lambda photo, d, clock=None: checked.append(d.fallback) or reconstruct_face(photo, d, clock))

    recon.detectors = [FixedDetector([background, Detection(face_box, 0.2, "fixed", fallback=True)])]
    faces = recon(astronaut)  # the confident box is no face: the fallback one is tried, and is the face
    assert checked == [False, True] and len(faces) == 1 and box_iou(faces[0].box, face_box) > 0.5

    checked.clear()
    recon.detectors = [FixedDetector([Detection(face_box, 0.9, "fixed"), replace(background, score=0.2, fallback=True)])]
    faces = recon(astronaut)  # a confident face: the fallback box is never checked
    assert checked == [False] and len(faces) == 1


def test_a_small_fallback_box_decodes_a_large_jpeg_finer_only_when_it_is_checked(astronaut):
    """A 12-megapixel JPEG is decoded small for its large face; a tiny fallback box beside it costs a
    finer decode only when no confident box is a face."""
    import io

    import facevox
    from facevox.faces import Detection
    from facevox.image import PhotoFile
    from PIL import Image

    canvas = np.full((3000, 4000, 3), 128, np.uint8)
    canvas[:, 500:3500] = np.asarray(Image.fromarray(astronaut).resize((3000, 3000), Image.BILINEAR))
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=90)
    face_box = next(d.box for d in merge(OnnxFaceDetector().detect(astronaut)) if not d.fallback) * 3000 / 512 + [500, 0, 500, 0]
    tiny = Detection(np.array([100.0, 100.0, 140.0, 140.0]), 0.2, "fixed", fallback=True)
    recon = facevox.Reconstructor(detectors=[], settings=facevox.Settings(mesh="surface"))

    recon.detectors = [FixedDetector([Detection(face_box / 4, 0.9, "fixed"), replace(tiny, box=tiny.box / 4)])]  # boxes in the detector's pixels
    file = PhotoFile(buffer.getvalue())
    assert len(recon(file)) == 1
    assert sorted(file._photos) == [4]  # the confident face was checked alone, at a quarter of the size

    nothing = Detection(np.array([750.0, 0.0, 1000.0, 250.0]), 0.9, "fixed")  # no face there, large enough for a quarter
    recon.detectors = [FixedDetector([nothing, replace(tiny, box=tiny.box / 4)])]
    file = PhotoFile(buffer.getvalue())
    with pytest.raises(facevox.NoFaceError):
        recon(file)
    assert sorted(file._photos) == [1, 4]  # the tiny fallback box was checked, on full-size pixels
