"""Training code on CPU, a few steps on tiny data: Surrey model, renders, voxel targets, loop, export."""

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the [train] extra (torch)")


@pytest.fixture(scope="module")
def model(surrey):
    return surrey


@pytest.fixture(scope="module")
def batch(model):
    pytest.importorskip("cv2", reason="training's synthetic faces need the [train] extra (OpenCV)")
    from training.sources.synthetic import SyntheticFaces

    return SyntheticFaces(model).sample(3, seed=123)


def test_surrey_model_loads(model):
    assert model.mean.shape == (3448, 3) and model.triangles.shape == (6736, 3)
    assert model.shape_basis.shape == (3448, 3, 63) and model.expression_basis.shape == (3448, 3, 6)
    assert len(model.landmarks) == 68 and len(set(model.landmarks.tolist())) == 66  # inner mouth corners = outer
    marks = model.mean[model.landmarks]
    assert marks[:, 2].argmax() == 30  # the nose tip is the landmark nearest the viewer
    assert marks[36, 0] < marks[45, 0] and marks[8, 1] < marks[27, 1]  # eye corners left/right, chin below


def test_synthetic_batch(batch):
    assert batch.image.shape == (3, 3, 192, 192) and 0 <= batch.image.min() and batch.image.max() <= 1
    assert batch.mask.float().mean() > 0.1
    assert batch.landmarks.shape == (3, 68, 3)
    # Visible landmarks sit on the rendered surface: depth at their pixel matches their own depth.
    for b in range(3):
        x, y, k = batch.landmarks[b, 30].tolist()
        if batch.mask[b, round(y), round(x)] and abs(batch.pose[b, 0]) < 45:
            assert abs(batch.depth[b, round(y), round(x)].item() - k) < 3


def test_voxel_target_gives_back_the_surface(batch):
    from skimage.measure import marching_cubes

    from training.voxels import occupancy

    volume = occupancy(batch.depth, batch.mask, 200)[0].numpy()
    depth = batch.depth[0].numpy()
    vertices, *_ = marching_cubes(volume, 0.5)
    k, y, x = vertices.T
    on_grid = (np.abs(y - np.round(y)) < 1e-6) & (np.abs(x - np.round(x)) < 1e-6)
    front = depth[np.round(y[on_grid]).astype(int), np.round(x[on_grid]).astype(int)]
    near_front = np.isfinite(front) & (k[on_grid] < front + 1.5)
    assert near_front.sum() > 1000
    assert np.abs(k[on_grid][near_front] - front[near_front]).max() <= 1.0


def test_surface_loss_counts_the_shape_alone(batch):
    from training.train import surface_loss
    from training.voxels import occupancy

    def logits(depth):
        return torch.logit(occupancy(depth, batch.mask, 200).clamp(1e-6, 1 - 1e-6))

    assert surface_loss(logits(batch.depth), batch.depth, batch.mask) < 0.01
    assert surface_loss(logits(batch.depth + 1), batch.depth, batch.mask) < 0.01  # moved in depth: the same shape
    bumped = batch.depth - 3.0 * (torch.arange(192.0)[:, None] > 96)  # the lower half 3 voxels nearer
    assert surface_loss(logits(bumped), batch.depth, batch.mask) > 0.5
    tilted = batch.depth + 0.05 * torch.arange(192.0) - 5  # turned a little (within the window): the same shape
    assert surface_loss(logits(tilted), batch.depth, batch.mask) < 0.01
    hazy = logits(batch.depth)
    hazy[:, :20] = 0.0  # stray half-full voxels far in front of the face
    assert surface_loss(hazy, batch.depth, batch.mask) < 0.01


def test_train_resume_export(tmp_path, monkeypatch, surrey):  # surrey: skips without the model files
    import onnxruntime

    pytest.importorskip("cv2", reason="training needs the [train] extra (OpenCV)")
    from training import export_onnx, train

    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--device", "cpu", "--net", "vrn-hg1-w128", "--batch-size", "2",
            "--warmup-steps", "1", "--eval-every", "100"]
    monkeypatch.setattr(sys, "argv", args + ["--total-steps", "2", "--surface-weight", "0.1"])
    train.main()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 1 and np.isfinite(log[0]["loss"]) and np.isfinite(log[0]["surface"])
    monkeypatch.setattr(sys, "argv", args + ["--total-steps", "3"])
    train.main()  # resumes at step 2
    state = torch.load(out / "ckpt.pt", weights_only=False)
    assert state["step"] == 3

    onnx_path = tmp_path / "tiny.onnx"
    monkeypatch.setattr(sys, "argv", ["export", str(out / "ckpt.pt"), str(onnx_path)])
    export_onnx.main()
    info = json.loads(onnx_path.with_suffix(".json").read_text())
    assert info["training_steps"] == 3 and len(info["mean_landmarks_3d"]) == 68 and "commercial" in info["licence"]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    volume, heatmaps, depth = session.run(None, {"image": np.random.rand(1, 3, 192, 192).astype(np.float32)})
    assert volume.shape == (1, 200, 192, 192) and heatmaps.shape == (1, 68, 96, 96) and 0 <= volume.min() <= volume.max() <= 1

    # Training can start again from the shipped file's weights.
    from facevox.net import CONFIGS, VolumeNet
    from facevox.torch_volume import from_onnx

    net = VolumeNet(CONFIGS["vrn-hg1-w128"])
    from_onnx(net, onnx_path)
    saved = {k: v.float() for k, v in state["model"].items()}
    assert all(torch.allclose(v, saved[k]) for k, v in net.state_dict().items() if v.is_floating_point())


def test_ict_landmark_vertices_find_a_heads_own_landmarks(model, tmp_path):
    """A stand-in 'ICT head' that is the mean face turned, scaled (to cm) and shifted, with chosen
    vertices as its landmarks: those vertices come back for the chosen points, the rest stay."""
    from facevox.pose import rotation_matrix
    from training import sfm

    wanted = model.landmarks.copy()
    wanted[:17] = [int(v) + 1 for v in model.landmarks[:17]]  # other vertices for the jaw
    head = 0.1 * model.mean @ rotation_matrix(20, -5, 3).T + [1.0, 2.0, 3.0]
    path = tmp_path / "ict.npz"
    np.savez(path, neutral=head.astype(np.float32), landmarks68=wanted.astype(np.int32))
    chosen = sfm.ict_landmark_vertices(model, ict_path=path)
    assert np.array_equal(chosen[:17], wanted[:17]) and np.array_equal(chosen[17:], model.landmarks[17:])
    assert np.array_equal(sfm.ict_landmark_vertices(model, points=(), ict_path=path), model.landmarks)


def test_ict_jaw_convention_lies_on_the_jaw_line(model):
    from training import sfm

    if not sfm.ICT_DEFAULT.exists():
        pytest.skip("ICT FaceKit model not found")
    jaw = model.mean[sfm.ict_landmark_vertices(model)[:17]]
    today = model.mean[model.landmarks[:17]]
    assert np.allclose(jaw[:8, 0], -jaw[16:8:-1, 0], atol=4.0) and np.allclose(jaw[:8, 1], jaw[16:8:-1, 1], atol=4.0)  # mm, mirror pairs
    assert np.all(np.diff(jaw[:9, 1]) < 0)  # down to the chin
    assert np.all(jaw[:8, 2] > today[:8, 2])  # in front of the Surrey mesh's edge, where the contour points sit


def test_contour_at_heights_lands_on_contour_vertices(model):
    from training import sfm

    contours = json.loads((sfm.sfm_dir() / "sfm_model_contours.json").read_text())["model_contour"]
    right, left = contours["right_contour"], contours["left_contour"]
    heights = np.zeros(17)
    heights[:8] = model.mean[right[2:10], 1]  # points 1–8 on right-contour vertices 2–9
    heights[16:8:-1] = model.mean[left[2:10], 1]
    heights[0] = 1e3  # above the contour: its top vertex
    chosen = sfm.contour_at_heights(model, heights)
    assert chosen[0] == right[0] and np.array_equal(chosen[1:8], right[3:10])
    assert np.array_equal(chosen[16:8:-1], left[2:10]) and chosen[8] == model.landmarks[8]
    assert np.array_equal(chosen[17:], model.landmarks[17:])


def test_landmark_conventions_by_name(model):
    from training import sfm

    with pytest.raises(ValueError):
        sfm.load(landmarks="nonsense")
    if not sfm.ICT_DEFAULT.exists():
        pytest.skip("ICT FaceKit model not found")
    bridge = sfm.load(landmarks="ict-nose-bridge")
    changed = np.flatnonzero(bridge.landmarks != model.landmarks)
    assert set(changed) <= set(sfm.NOSE_BRIDGE) and len(changed) >= 1
    moved, today = bridge.mean[bridge.landmarks[27]], model.mean[model.landmarks[27]]
    assert abs(moved[0]) < 2.0 and moved[1] < today[1]  # on the midline, lower down the bridge


def test_jpeg_in_torch_matches_a_real_encoder():
    """training.jpeg's round trip degrades a photo as much as OpenCV's libjpeg does, and the same way."""
    cv2 = pytest.importorskip("cv2")
    from skimage import data

    from training.jpeg import jpeg_roundtrip

    photo = cv2.resize(data.astronaut(), (192, 192), interpolation=cv2.INTER_AREA)
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255

    def psnr(a, b):
        return 10 * np.log10(255**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))

    for quality in (30, 60, 90):
        _, encoded = cv2.imencode(".jpg", photo[..., ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, quality])
        reference = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
        ours = (jpeg_roundtrip(image, torch.tensor([quality]))[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert abs(psnr(ours, photo) - psnr(reference, photo)) < 0.5  # the same loss of quality
        assert psnr(ours, reference) > 38  # and much the same pixels
