"""The volume stage on onnxruntime: the mirror average."""

from __future__ import annotations

import numpy as np
import pytest

from facevox.landmarks import MIRROR_68, mirror_maps
from facevox.volume import VolumeModel
from photos import sources


def test_mirrored_volume_is_the_mean_of_both_views():
    crop = np.asarray(sources()[1].resize((192, 192)))
    plain, mirrored = VolumeModel(mirror=False), VolumeModel()
    seen, flipped = plain(crop)[0], plain(np.ascontiguousarray(crop[:, ::-1]))[0]
    both = mirrored(crop)[0]
    assert np.abs(both.volume - (seen.volume + flipped.volume[..., ::-1]) / 2).max() < 1e-4
    assert np.abs(both.volume - seen.volume).max() > 0.1  # the mirror image's view does count
    again = mirrored(np.ascontiguousarray(crop[:, ::-1]))[0]  # a mirrored photo gives the mirrored volume
    assert np.abs(again.volume[..., ::-1] - both.volume).max() < 1e-4
    assert np.abs(again.landmarks(192)[MIRROR_68] * [-1, 1, 1] + [191, 0, 0] - both.landmarks(192)).max() < 1e-3
    assert np.abs(both.heatmaps - (seen.heatmaps + mirror_maps(flipped.heatmaps)) / 2).max() < 1e-4
    first = mirrored(crop, surface=False)[0]  # the landmarks-only pass sees the crop alone
    assert first.volume is None and np.abs(first.heatmaps - seen.heatmaps).max() < 1e-4


def test_landmark_mirror_pairs_match_the_mean_face():
    from facevox.volume import model_files

    mean = np.asarray(model_files()[1]["mean_landmarks_3d"])
    assert np.array_equal(MIRROR_68[MIRROR_68], np.arange(68))
    mirrored = mean[MIRROR_68] * [-1, 1, 1]
    assert np.abs(mirrored - mean).max() < 0.05 * np.ptp(mean[:, 0])  # the mean face is near symmetric about x = 0


@pytest.mark.needs_detector
def test_settings_and_batch_options_choose_the_mirror():
    from facevox.api import Reconstructor, Settings
    from facevox.batch.work import Options, make_reconstructor

    assert Reconstructor().model.mirror and not Reconstructor(settings=Settings(mirror=False)).model.mirror
    assert not make_reconstructor(Options(out="unused", root="unused", mirror=False)).model.mirror
