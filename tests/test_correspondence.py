import numpy as np
import pytest

from training.correspondence import JAW_OVAL, KNOWN, contour_vertices, load_table, symmetry


def test_table_is_small_and_consistent(surrey):
    mediapipe, vertices = load_table()
    assert len(mediapipe) == len(vertices) > 350
    assert mediapipe.max() < 468 and len(set(mediapipe.tolist())) == len(mediapipe)  # no iris points
    assert vertices.min() >= 0 and vertices.max() < len(surrey.mean)


def test_known_points_land_on_the_ibug_vertices(surrey):
    table = dict(zip(*(a.tolist() for a in load_table())))
    for point, ibug in KNOWN.items():
        distance = np.linalg.norm(surrey.mean[table[point]] - surrey.mean[surrey.landmarks[ibug]])
        assert distance < 5.0, (point, ibug, distance)


def test_face_oval_follows_the_jaw_contour(surrey):
    pytest.importorskip("cv2", reason="training's synthetic faces need the [train] extra (OpenCV)")
    table = dict(zip(*(a.tolist() for a in load_table())))
    on_contour = set(contour_vertices(surrey).tolist())
    jaw = [p for p in JAW_OVAL if p in table]
    assert len(jaw) >= 12
    assert all(table[p] in on_contour for p in jaw)
    x = np.array([surrey.mean[table[p], 0] for p in jaw])
    assert np.all(np.diff(x) > 0)  # photo-left (subject's right) ear round the chin to the other ear
    # The jaw's mapped vertices stay within a few mm of the iBUG jaw polyline (landmarks 1–17).
    from training.sources.synthetic import _distance_to_polyline

    jaw_line = surrey.mean[surrey.landmarks[:17]]
    assert _distance_to_polyline(surrey.mean[[table[p] for p in jaw]], jaw_line).max() < 4.0


def test_symmetry_is_an_involution_mostly(surrey):
    mirror = symmetry(surrey)
    assert np.mean(mirror[mirror] == np.arange(len(mirror))) > 0.95
    assert np.abs(surrey.mean[mirror, 0] + surrey.mean[:, 0]).mean() < 2.0
