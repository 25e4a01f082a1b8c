"""The ICT FaceKit source on CPU, small batches: shapes, targets, mirror symmetry, the landmark convention."""

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the [train] extra (torch)")
pytest.importorskip("cv2", reason="training's synthetic faces need the [train] extra (OpenCV)")

from training.ict_head import DEFAULT_DIR  # noqa: E402

# iBUG-68 mirror pairs (0-based): the point each one becomes in a left-right mirrored face.
IBUG_MIRROR = np.array([16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18,
                        17, 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53,
                        52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])


@pytest.fixture(scope="module")
def source(surrey):
    if not (DEFAULT_DIR / "model.npz").exists():
        pytest.skip("ICT FaceKit model not found")
    from training.sources.ict import IctFaces

    return IctFaces(surrey)


def render(source, yaw, pitch=0.0, expression=None, seed=0, identity=None, distance=1000.0):
    """Neutral-gaze heads at given yaws, no crop jitter, no camera degradation."""
    b = len(yaw)
    g = torch.Generator().manual_seed(seed)
    zeros = torch.zeros(b)
    identity = torch.zeros(b, source.identity_basis.shape[0]) if identity is None else identity
    expression = torch.zeros(b, 53) if expression is None else expression
    return source.render(identity, expression, torch.zeros(b, 2), torch.tensor(yaw, dtype=torch.float32),
                         torch.full((b,), float(pitch)), zeros, torch.full((b,), distance), g, camera_effects=False, jitter=False)


def test_batch_shapes_and_targets(source):
    batch = source.sample(2, seed=5)
    assert batch.image.shape == (2, 3, 192, 192) and 0 <= batch.image.min() and batch.image.max() <= 1
    assert batch.depth.shape == batch.mask.shape == (2, 192, 192) and batch.mask.dtype == torch.bool
    assert batch.landmarks.shape == (2, 68, 3) and batch.vertices.shape == (2, 3448, 3) and batch.pose.shape == (2, 3)
    assert torch.isfinite(batch.depth[batch.mask]).all() and torch.isinf(batch.depth[~batch.mask]).all()
    assert (batch.mask.float().mean((1, 2)) > 0.1).all()
    assert torch.equal(source.sample(2, seed=5).depth, batch.depth)  # one seed, one batch


@pytest.mark.parametrize("distance", [450.0, 3000.0])
def test_frontal_landmarks_lie_in_the_image_on_the_surface(source, distance):
    """Near and far cameras alike: the landmarks' depth is the rendered depth where they are seen."""
    expression = torch.zeros(2, 53)
    expression[1, source.jaw_open] = 0.7
    batch = render(source, [0.0, 0.0], expression=expression, distance=distance)
    assert ((batch.landmarks[..., :2] >= 0) & (batch.landmarks[..., :2] <= 191)).all()
    for b in range(2):  # the visible nose tip, eye corners and brows sit on the rendered depth
        for i in (30, 36, 39, 42, 45, 19, 24):
            x, y, k = batch.landmarks[b, i].tolist()
            assert batch.mask[b, round(y), round(x)] and abs(batch.depth[b, round(y), round(x)].item() - k) < 3.0


@pytest.mark.parametrize("yaw", [0.0, 45.0, 90.0])
def test_face_mask_has_no_holes(source, yaw):
    """The face region (eyes and open mouth included) is one solid patch with finite depth throughout."""
    from scipy.ndimage import binary_fill_holes

    expression = torch.zeros(2, 53)
    expression[1, source.jaw_open] = 0.8
    batch = render(source, [yaw, -yaw], expression=expression)
    for mask in batch.mask.numpy():
        assert (binary_fill_holes(mask) & ~mask).sum() == 0


def test_real_skin_textures_carry_over_to_the_head(surrey):
    """A per-Surrey-vertex texture (here: green on the face's left half, seen from the camera on the
    image's right, and blue on the right) lands on the same side of the ICT head."""
    from training.sources.ict import IctFaces

    texture = np.zeros((1, len(surrey.mean), 3), np.float32)
    texture[0, surrey.mean[:, 0] > 0, 1] = 1.0
    texture[0, surrey.mean[:, 0] <= 0, 2] = 1.0
    source = IctFaces(surrey, textures=texture, texture_fraction=1.0)
    batch = render(source, [0.0])
    image, mask = batch.image[0], batch.mask[0]
    left, right = mask.clone(), mask.clone()
    left[:, 96:] = False
    right[:, :96] = False
    assert image[1][right].mean() > 2 * image[2][right].mean() and image[2][left].mean() > 2 * image[1][left].mean()


def test_near_cameras_enlarge_the_nose_in_the_image_not_in_depth(source):
    """Perspective: from 0.45 m the nose is wider against the jaw than from 3 m (it is ~0.1 m nearer),
    while the nose tip's depth (before the face's mean depth, the volume's middle) against the eyes'
    width stays within 3 %: depth is metric, at the face's scale."""
    widths, depths = [], []
    for distance in (450.0, 3000.0):
        marks = render(source, [0.0], distance=distance).landmarks[0]
        widths.append(((marks[35, 0] - marks[31, 0]) / (marks[16, 0] - marks[0, 0])).item())
        depths.append(((source.volume_depth / 2 - marks[30, 2]) / (marks[45, 0] - marks[36, 0])).item())
    assert widths[0] > 1.15 * widths[1] and abs(depths[0] / depths[1] - 1) < 0.03


def test_mirrored_yaw_gives_the_mirrored_face(source):
    batch = render(source, [40.0, -40.0])
    mask_a, mask_b = batch.mask[0], batch.mask[1].flip(-1)
    assert (mask_a & mask_b).sum() / (mask_a | mask_b).sum() > 0.97
    both = mask_a & mask_b
    assert (batch.depth[0] - batch.depth[1].flip(-1))[both].abs().median() < 0.5
    mirrored = batch.landmarks[1, IBUG_MIRROR].clone()
    mirrored[:, 0] = 191 - mirrored[:, 0]
    assert (batch.landmarks[0] - mirrored).norm(dim=-1).max() < 3.0


def test_yaw_turns_the_head_as_the_surrey_source_does(source, surrey):
    from training.sources.synthetic import SyntheticFaces

    yaw = torch.tensor([40.0])
    zero = torch.zeros(1)
    surrey_batch = SyntheticFaces(surrey).render(torch.as_tensor(surrey.mean, dtype=torch.float32)[None], yaw, zero, zero,
                                                 torch.Generator().manual_seed(0), camera_effects=False)
    ict_batch = render(source, [40.0])
    for batch in (surrey_batch, ict_batch):
        marks = batch.landmarks[0]
        assert marks[30, 0] > marks[36:48, 0].mean() + 5  # nose tip to the image's right of the eyes
        assert marks[30, 2] < marks[36:48, 2].mean()  # and nearer the camera


def test_landmarks_follow_the_surrey_convention_on_the_mean_faces(source, surrey):
    """On the ICT head placed on the Surrey mean face, each of the 68 landmark vertices lies where the
    Surrey model has its landmark: the inner points within 1.5 mm (the nearest vertex of a head meshed
    at ~2.5 mm); the jaw, where the two faces' surfaces differ by up to 8 mm, within 3 mm along the
    ICT surface."""
    from training.ict_head import load_head, surrey_correspondence
    from training.render import vertex_normals

    head = load_head()
    match = surrey_correspondence(head, surrey)
    chosen = match.surrey_to_ict[surrey.landmarks]
    assert np.array_equal(source.landmarks.numpy(), chosen)
    offset = match.placed[chosen] - surrey.mean[surrey.landmarks]
    assert np.linalg.norm(offset[17:], axis=1).max() < 1.5
    normals = vertex_normals(torch.as_tensor(match.placed, dtype=torch.float32)[None], torch.as_tensor(head.triangles))[0].numpy()
    across = (offset * normals[chosen]).sum(1, keepdims=True) * normals[chosen]
    assert np.linalg.norm(offset[:17] - across[:17], axis=1).max() < 3.0


@pytest.mark.parametrize("yaw", [0.0, 45.0, 90.0])
def test_face_region_matches_the_surrey_source(source, surrey, yaw):
    """Both mean faces at one pose, crops without jitter: the ICT source asks for nearly the same face
    region (mask IoU > 0.88) and puts the landmarks within 6 px on average."""
    from bench.ict_source import against_surrey
    from training.sources.synthetic import SyntheticFaces

    figures = against_surrey(source, SyntheticFaces(surrey), surrey, yaws=(yaw,))[f"yaw_{yaw:g}"]
    assert figures["mask_iou"] > 0.88 and figures["landmark_offset_px"] < 6.0


def test_train_runs_with_ict_faces_in_the_mix(tmp_path, monkeypatch, source):
    from training import train
    from training.sources.ict import IctFaces

    drawn = []

    class Counted(IctFaces):
        def sample(self, batch_size, seed):
            drawn.append(batch_size)
            return super().sample(batch_size, seed)

    monkeypatch.setattr(train, "IctFaces", Counted)
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["train", "--out", str(out), "--device", "cpu", "--net", "vrn-hg1-w128",
                                      "--batch-size", "2", "--warmup-steps", "1", "--total-steps", "2",
                                      "--ict-fraction", "0.5"])
    train.main()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and np.isfinite(log[0]["loss"])
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 2
    assert drawn == [1, 1]  # half of each 2-face batch


def test_training_pack_is_small_and_close_to_the_model(tmp_path, source):
    from training.ict_head import load_head, pack

    assert pack(DEFAULT_DIR, tmp_path)["bytes"] <= 16 * 2**20 and (tmp_path / "LICENSE").exists()
    packed, full = load_head(tmp_path), load_head(DEFAULT_DIR)
    assert np.array_equal(packed.neutral, full.neutral) and np.array_equal(packed.triangles, full.triangles)
    assert np.abs(packed.identity - full.identity).max() < 0.2 and np.abs(packed.expression - full.expression).max() < 0.2
