import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def surrey():
    from training import sfm

    if not (sfm.sfm_dir() / "sfm_shape_3448.bin").exists():
        pytest.skip("Surrey Face Model files not found (set FACEVOX_SFM)")
    return sfm.load()
