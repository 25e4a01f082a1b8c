"""Real-photo labels, profiled views, real textures and the mixed training loop, on package photos only."""

import sys

import numpy as np
import pytest
import torch


def package_photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import matplotlib.image
    import skimage.data

    hopper = matplotlib.image.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return {"astronaut.png": skimage.data.astronaut(), "grace_hopper.png": np.ascontiguousarray(hopper[..., :3])}


def facevox_label(surrey, image: np.ndarray) -> dict:
    """A label of the photo's largest face without MediaPipe: the Surrey model fitted to facevox's own
    68 landmarks (the classic peer's fit), in training.label_real's fields."""
    import facevox
    from training.fit import fit_landmarks

    points = facevox.Reconstructor(settings=facevox.Settings(mesh="surface"))(image)[0].landmarks_2d
    fit = fit_landmarks(surrey, surrey.landmarks, points)
    marks = fit.project(surrey)[surrey.landmarks, :2]
    return dict(identity=fit.identity, expression=fit.expression, rotation=fit.rotation, scale=fit.scale,
                translation=fit.translation, error=fit.error, relative_error=fit.error / float(np.sqrt(np.prod(np.ptp(marks, 0)))),
                box=np.r_[points.min(0), points.max(0)], pose=np.array(fit.pose))


@pytest.fixture(scope="module")
def labelled(surrey):
    """The package photos' labels: training.label_real's (MediaPipe's face mesh fitted) where MediaPipe is
    installed, else fits to facevox's own landmarks, so that the sources' tests run everywhere."""
    from training.label_real import FIELDS

    photos = package_photos()
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        results = [facevox_label(surrey, image) for image in photos.values()]
    else:
        from training.label_real import Labeller

        labeller = Labeller(surrey)
        results = [labeller(image, pad=0.1) for image in photos.values()]
        labeller.mesh_points.close()
    assert all("reason" not in r for r in results), results
    labels = {k: np.stack([np.asarray(r[k], dtype=np.float32) for r in results]) for k in FIELDS}
    return list(photos), list(photos.values()), labels, results


def test_labels_fit_the_package_photos(labelled):
    pytest.importorskip("mediapipe", reason="the real-photo labeller needs the [train] extra (MediaPipe)")
    _, images, labels, _ = labelled
    assert np.all(labels["relative_error"] < 0.03)
    assert np.all(np.abs(labels["pose"][:, 0]) < 30)  # both look roughly at the camera
    assert labels["identity"].shape == (2, 63) and labels["rotation"].shape == (2, 3, 3)


def test_label_projects_into_the_detected_box(surrey, labelled):
    pytest.importorskip("mediapipe", reason="the real-photo labeller needs the [train] extra (MediaPipe)")
    from facevox.faces import box_iou
    from training.fit import project

    _, _, labels, _ = labelled
    for i in range(2):
        shape = surrey.shape(labels["identity"][i].astype(float), labels["expression"][i].astype(float))
        marks = project(shape, labels["rotation"][i].astype(float), float(labels["scale"][i]), labels["translation"][i].astype(float))[surrey.landmarks, :2]
        assert box_iou(np.r_[marks.min(0), marks.max(0)], labels["box"][i]) > 0.5


def real_source(surrey, labelled, **kwargs):
    from training.sources.real import RealFaces

    _, images, labels, _ = labelled
    return RealFaces(surrey, images, labels, **kwargs)


def test_profiled_views_show_the_labelled_face(surrey, labelled):
    source = real_source(surrey, labelled, original_fraction=0.0)
    batch = source.sample(6, seed=3)
    assert batch.image.shape == (6, 3, 192, 192) and batch.vertices.shape == (6, len(surrey.mean), 3)
    assert batch.pose[:, 0].abs().max() > 40  # turned well beyond the photos' own near-frontal poses
    # The face the view shows lies where its label says: the rendered face covers the projected landmarks…
    mask = torch.nn.functional.max_pool2d(batch.mask[:, None].float(), 5, 1, 2)[:, 0] > 0
    xy = batch.landmarks[..., :2].round().long().clamp(0, 191)
    covered = mask[torch.arange(6)[:, None], xy[..., 1], xy[..., 0]]
    assert covered.float().mean() > 0.95
    # …and a face finder run on the profiled views (MediaPipe's face mesh where installed, else facevox
    # itself) puts the nose tip where the label has it.
    import cv2

    checked = 0
    for i, nose_tip in enumerate(nose_tips([cv2.resize((batch.image[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8), (384, 384))
                                            for i in range(6)])):
        if nose_tip is None or abs(float(batch.pose[i, 0])) > 60:
            continue
        marks = batch.landmarks[i, :, :2].numpy()
        size = np.sqrt(np.prod(marks.max(0) - marks.min(0)))
        nose = np.linalg.norm((nose_tip + 0.5) / 2 - 0.5 - marks[30]) / size
        assert nose < 0.12, (i, nose, float(batch.pose[i, 0]))
        checked += 1
    assert checked >= 1


def nose_tips(images: list[np.ndarray]) -> list[np.ndarray | None]:
    """Each image's nose tip as a face finder sees it: MediaPipe's face mesh (point 4) where installed,
    else facevox (iBUG point 31); None where it finds no face."""
    try:
        from training.mediapipe_points import FaceMeshPoints

        finder = FaceMeshPoints()
    except ImportError:
        import facevox

        recon = facevox.Reconstructor(settings=facevox.Settings(mesh="surface"))

        def find(image):
            try:
                return recon(image)[0].landmarks_2d[30]
            except facevox.NoFaceError:
                return None

        return [find(image) for image in images]
    tips = [faces[0][4, :2] if faces else None for faces in map(finder, images)]
    finder.close()
    return tips


def test_unturned_views_are_the_photo(surrey, labelled):
    source = real_source(surrey, labelled, original_fraction=1.0)
    batch = source.sample(2, seed=0)
    own = source.poses[:, 0].abs()
    assert all(torch.isclose(own, y.abs(), atol=1e-3).any() for y in batch.pose[:, 0])  # the photos' own yaw (maybe mirrored)
    assert batch.mask.float().mean() > 0.2  # the fitted face fills a good part of the crop
    assert torch.isfinite(batch.depth[batch.mask]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_profiled_views_on_cuda(surrey, labelled):
    batch = real_source(surrey, labelled, device="cuda").sample(4, seed=1)
    assert batch.image.is_cuda and batch.image.shape == (4, 3, 192, 192)


def test_real_textures_dress_synthetic_faces(surrey, labelled):
    from training.sources.synthetic import SyntheticFaces

    textures = real_source(surrey, labelled).textures()
    assert textures.shape == (2, len(surrey.mean), 3)
    assert 0.0 <= float(textures.min()) and float(textures.max()) <= 1.0
    plain = SyntheticFaces(surrey).sample(2, 5)
    dressed = SyntheticFaces(surrey, textures=textures, texture_fraction=1.0).sample(2, 5)
    assert torch.equal(plain.mask, dressed.mask) and not torch.allclose(plain.image, dressed.image)


def test_training_mixes_real_and_synthetic(surrey, labelled, tmp_path, monkeypatch):
    import cv2

    from training import train
    from training.ict_head import DEFAULT_DIR
    from training.label_real import save_labels

    names, images, _, results = labelled
    (tmp_path / "package").mkdir()
    for name, image in zip(names, images):
        cv2.imwrite(str(tmp_path / "package" / name), image[:, :, ::-1])
    (tmp_path / "labels").mkdir()
    save_labels(tmp_path / "labels" / "package.npz", "package", names, ["train", "train"], results)
    monkeypatch.setattr(sys, "argv", ["train", "--net", "vrn-hg1-w128", "--batch-size", "3", "--total-steps", "2",
                                      "--warmup-steps", "1", "--device", "cpu", "--out", str(tmp_path / "run"),
                                      "--real-labels", str(tmp_path / "labels"), "--real-photos", str(tmp_path),
                                      "--real-fraction", "0.34", "--real-head", str(int((DEFAULT_DIR / "model.npz").exists()))])
    train.main()
    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert state["step"] == 2
    assert (tmp_path / "run" / "log.jsonl").read_text().strip()


def test_mixture_keeps_batch_size_and_order(surrey, labelled):
    from training.sources.real import Mixture
    from training.sources.synthetic import SyntheticFaces

    mixture = Mixture([SyntheticFaces(surrey), real_source(surrey, labelled)], [0.5, 0.5])
    batch = mixture.sample(4, seed=2)
    assert batch.image.shape[0] == batch.vertices.shape[0] == 4


def tight_crops(labelled):
    """The package photos cut to their fitted face's box (as many real-faces photos are), labels moved along."""
    from training.fit import project
    from training import sfm

    _, images, labels, _ = labelled
    model, cut, labels = sfm.load(), [], {k: v.copy() for k, v in labels.items()}
    for i, image in enumerate(images):
        shape = model.shape(labels["identity"][i].astype(float), labels["expression"][i].astype(float))
        marks = project(shape, labels["rotation"][i].astype(float), float(labels["scale"][i]), labels["translation"][i].astype(float))[model.landmarks, :2]
        x0, y0 = np.floor(marks.min(0)).astype(int)
        x1, y1 = np.ceil(marks.max(0)).astype(int)
        cut.append(np.ascontiguousarray(image[y0:y1, x0:x1]))
        labels["translation"][i] -= [x0, y0]
    return cut, labels


def test_profiled_views_of_tight_crops_show_no_black_frame(surrey, labelled):
    from training.sources.real import RealFaces

    images, labels = tight_crops(labelled)
    assert max(float((image.max(-1) <= 3).mean()) for image in images) < 0.01  # the photos themselves hold no black
    source = RealFaces(surrey, images, labels, original_fraction=0.0)
    for yaw in (30, 90):
        image = source.sample(4, seed=yaw, yaw=yaw, camera_effects=False).image
        assert float((image.amax(1) <= 3 / 255).float().mean()) < 0.005, yaw


@pytest.fixture(scope="module")
def with_and_without_head(surrey, labelled):
    from training.ict_head import DEFAULT_DIR

    if not (DEFAULT_DIR / "model.npz").exists():
        pytest.skip("ICT FaceKit model not found")
    return real_source(surrey, labelled, original_fraction=0.0, head=DEFAULT_DIR), real_source(surrey, labelled, original_fraction=0.0)


def test_head_sits_on_the_fitted_face(surrey, with_and_without_head):
    headed, _ = with_and_without_head
    index = torch.arange(headed.count)
    on_face = headed.head.shapes(index)[:, headed.head.ict.surrey_vertices]
    error = (on_face - headed.shapes).norm(dim=-1).mean(1)
    mean_face = torch.as_tensor(surrey.mean, dtype=torch.float32)
    one_for_all = headed.head.homogeneous @ (torch.linalg.pinv(headed.head.homogeneous[headed.head.ict.surrey_vertices]) @ mean_face)
    error_one_for_all = (one_for_all[headed.head.ict.surrey_vertices] - headed.shapes).norm(dim=-1).mean(1)
    assert (error < 5.0).all() and (error < error_one_for_all).all()  # mm: each photo's own fit follows its face


def test_head_is_drawn_behind_the_face_and_leaves_targets_alone(with_and_without_head):
    headed, bare = with_and_without_head
    for yaw in (10, 60, 90):
        a = headed.sample(4, seed=yaw, yaw=yaw, camera_effects=False)
        b = bare.sample(4, seed=yaw, yaw=yaw, camera_effects=False)
        for field in ("mask", "depth", "landmarks", "vertices", "pose"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (yaw, field)
        face = a.mask[:, None].expand_as(a.image)
        assert torch.equal(a.image[face], b.image[face])  # the head never covers the face
        changed = float((a.image != b.image).any(1).float().mean())
        if yaw < 15:
            assert changed == 0.0  # small turns keep the photo's own head
        else:
            assert changed > 0.05, yaw  # ears, neck and scalp appear around the face
