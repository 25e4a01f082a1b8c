"""The volume stage on onnxruntime: the mirror average."""

from __future__ import annotations

import numpy as np

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
    assert np.abs(both.heatmaps - seen.heatmaps).max() < 1e-4  # landmarks come from the crop alone
    assert mirrored(crop, surface=False)[0].volume is None


def test_settings_and_batch_options_choose_the_mirror():
    from facevox.api import Reconstructor, Settings
    from facevox.batch.work import Options, make_reconstructor

    assert Reconstructor().model.mirror and not Reconstructor(settings=Settings(mirror=False)).model.mirror
    assert not make_reconstructor(Options(out="unused", root="unused", mirror=False)).model.mirror
