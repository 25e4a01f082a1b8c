"""The AFLW yardsticks' metric functions and the 68 → 21 point correspondence, on synthetic inputs."""

from __future__ import annotations

import numpy as np
import pytest

from bench import aflw, aflw21
from facevox.landmarks import MIRROR_68
from facevox.pose import rotation_matrix


def test_yaw_bins_and_stratified_subset():
    yaws = np.r_[np.linspace(0, 29, 40), -np.linspace(30, 59, 20), np.linspace(60, 90.5, 10)]
    assert [aflw.yaw_bin(y) for y in (0, -29.9, 30, -59.9, 60, 90.5)] == ["0-30", "0-30", "30-60", "30-60", "60-90", "60-90"]
    chosen = aflw.stratified(yaws, 30)
    bins = [aflw.yaw_bin(yaws[i]) for i in chosen]
    assert [bins.count(b) for b in aflw.YAW_BINS] == [10, 10, 10]
    assert len(set(chosen)) == 30 and np.array_equal(chosen, np.sort(chosen))
    assert np.array_equal(aflw.stratified(yaws, 30), chosen)  # fixed
    assert len(aflw.stratified(yaws, 90)) == 30 + 20 + 10  # a short bin gives what it has
    assert len(aflw.stratified(yaws, 0)) == len(yaws)


def test_point_errors_normalise_by_the_true_box_and_skip_unlabelled_points():
    truth = np.array([[0.0, 0.0], [40.0, 0.0], [40.0, 10.0], [np.nan, np.nan]])  # box 40 × 10 → sqrt = 20
    predicted = truth + [[3.0, 4.0], [0.0, 0.0], [0.0, -10.0], [0.0, 0.0]]
    predicted[3] = [5.0, 5.0]
    errors = aflw.point_errors(predicted, truth)
    assert errors[:3] == pytest.approx([5 / 20, 0.0, 10 / 20])
    assert np.isnan(errors[3])


def test_match_takes_the_nearest_face_within_half_the_true_width():
    truth_box = np.array([100.0, 100.0, 200.0, 220.0])  # centre (150, 160), width 100
    square = np.array([[0.0, 0.0], [80.0, 0.0], [0.0, 80.0], [80.0, 80.0]])
    near, nearer, far = square + [120, 130], square + [105, 125], square + [300, 100]
    assert aflw.match([far, near, nearer], truth_box) == 2
    assert aflw.match([far], truth_box) is None
    assert aflw.match([square + [110 + 49, 120]], truth_box) == 0  # centre 49 px off
    assert aflw.match([square + [110 + 51, 120]], truth_box) is None
    assert aflw.match([], truth_box) is None


def test_groups_and_mean_of_bins():
    errors = np.zeros((2, 68))
    errors[:, :17] = [[0.1], [0.3]]
    errors[0, 36:48] = 0.12
    groups = aflw.group_nme(errors)
    assert groups["jaw"] == pytest.approx(0.2) and groups["eyes"] == pytest.approx(0.06) and groups["mouth"] == 0.0
    by_bin = {name: {"nme": {"mean": m}} for name, m in zip(aflw.YAW_BINS, (0.03, 0.06, 0.09))}
    assert aflw.mean_of_bins(by_bin) == pytest.approx(0.06)
    by_bin["60-90"]["nme"] = {"count": 0}
    assert aflw.mean_of_bins(by_bin) is None


def symmetric_head(rng) -> aflw21.MeanHead:
    """A random head that is its own mirror image (x → −x with the iBUG mirror order)."""
    half = rng.normal(0, 30, (68, 3))
    landmarks = np.where(np.arange(68)[:, None] < MIRROR_68[:, None], half, half[MIRROR_68] * [-1, 1, 1])
    landmarks[MIRROR_68 == np.arange(68), 0] = 0.0
    lobe, wing = rng.normal(0, 30, 3), rng.normal(0, 30, 3)
    extra = np.stack([lobe * [-1, 1, 1], lobe, wing * [-1, 1, 1], wing])
    return aflw21.MeanHead(landmarks, extra)


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    source = rng.normal(0, 10, (30, 3))
    rotation = rotation_matrix(35, -10, 5)
    scale, r, t = aflw21.similarity(source, 2.5 * source @ rotation.T + [1, 2, 3])
    assert scale == pytest.approx(2.5) and r == pytest.approx(rotation) and t == pytest.approx([1, 2, 3])


def test_21_points_of_a_posed_head_are_its_own_points():
    rng = np.random.default_rng(1)
    head = symmetric_head(rng)
    rotation, scale, shift = rotation_matrix(50, 10, -8), 1.7, np.array([200.0, 150.0, 500.0])
    place = lambda p: (scale * p @ rotation.T) * aflw21.FLIP + shift  # model frame → photo frame
    points = aflw21.aflw21(place(head.landmarks), head)
    assert points[[12, 16, 13, 15]] == pytest.approx(place(head.extra)[[0, 1, 2, 3], :2])
    marks = place(head.landmarks)[:, :2]
    assert points[0] == pytest.approx(marks[17]) and points[14] == pytest.approx(marks[30]) and points[20] == pytest.approx(marks[8])
    assert points[7] == pytest.approx(marks[36:42].mean(0)) and points[18] == pytest.approx(marks[[62, 66]].mean(0))


def test_21_points_follow_the_mirror_image():
    """Mirroring the face (x → −x, iBUG points swapped) mirrors the 21 points with AFLW's sides swapped."""
    rng = np.random.default_rng(2)
    head = symmetric_head(rng)
    landmarks = (head.landmarks @ rotation_matrix(40, 5, 0).T) * aflw21.FLIP + rng.normal(0, 2, (68, 3))
    mirrored = landmarks[MIRROR_68] * [-1, 1, 1]
    assert aflw21.aflw21(mirrored, head) == pytest.approx(aflw21.aflw21(landmarks, head)[aflw21.MIRROR_21] * [-1, 1])


def test_ict_head_points_sit_where_their_names_say():
    if not aflw21.ICT.exists():
        pytest.skip("ICT FaceKit model not present")
    head = aflw21.MeanHead.from_ict()
    (right_lobe, left_lobe, right_wing, left_wing), marks = head.extra, head.landmarks
    assert right_lobe == pytest.approx(left_lobe * [-1, 1, 1], abs=0.05)  # cm
    assert right_wing == pytest.approx(left_wing * [-1, 1, 1], abs=0.05)
    assert right_lobe[0] < marks[0, 0] < 0 and right_lobe[1] < marks[0, 1] and right_lobe[2] < marks[30, 2] - 8  # out, down, behind
    assert marks[31, 0] - 1.0 < right_wing[0] < marks[31, 0] and marks[31, 1] <= right_wing[1] <= marks[30, 1]


def test_face_frame_offsets_point_inward_across_and_down():
    from bench.landmark_convention import face_frame_offsets

    truth = np.zeros((68, 2))
    truth[:, 0] = np.linspace(-50, 50, 68)
    truth[:, 1] = np.linspace(-40, 60, 68) ** 2 / 60  # a box of 100 × ~60
    truth[36:42] = [-30, 0]
    truth[42:48] = [30, 0]  # eyes level: across = +x, down = +y
    size = np.sqrt(np.prod(np.ptp(truth, axis=0)))
    predicted = truth.copy()
    centre = truth.mean(0)
    predicted[0] += 5 * (centre - truth[0]) / np.linalg.norm(centre - truth[0])  # 5 px towards the centre
    predicted[8] += [0, 3]  # 3 px down
    offsets = face_frame_offsets(predicted, truth)
    assert offsets[0, 0] == pytest.approx(5 / size) and offsets[8, 2] == pytest.approx(3 / size) and offsets[8, 1] == pytest.approx(0)
    tilted = truth @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # the whole face turned by 90° in the image
    assert face_frame_offsets(predicted @ np.array([[0.0, 1.0], [-1.0, 0.0]]), tilted) == pytest.approx(offsets)


def test_offsets_of_mirrored_faces_agree():
    """A face and its mirror image give the same table: each is turned so that jaw half 10–17 is the near one."""
    from bench.landmark_convention import mirrored, offset_table

    rng = np.random.default_rng(3)
    truth = rng.normal(0, 30, (1, 68, 3))
    truth[0, 9:17, 0] += 40  # jaw half 10–17 far from the nose: the near side
    predicted = truth + rng.normal(0, 2, truth.shape)
    one = offset_table(predicted, truth, np.array([45.0]))
    other = offset_table(mirrored(predicted), mirrored(truth), np.array([-45.0]))
    assert one["30-60"]["inward"] == pytest.approx(other["30-60"]["inward"], abs=1e-4)


def test_remap_turns_a_model_frame_offset_with_the_face():
    from bench.landmark_convention import remap

    rng = np.random.default_rng(4)
    mean = rng.normal(0, 30, (68, 3))
    rotation = rotation_matrix(60, 0, 10)
    place = lambda p: (2.0 * p @ rotation.T) * aflw21.FLIP + [100, 100, 0]
    offset = np.zeros((68, 3))
    offset[3] = [0, 0, -10]  # 10 mm deeper
    moved = remap(place(mean), mean, offset)
    assert moved == pytest.approx(place(mean + offset))
