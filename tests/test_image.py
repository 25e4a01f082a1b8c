import io

import numpy as np
import pytest
from PIL import Image

from conftest import bomb_png
from facevox.errors import FacevoxError
from facevox.image import load_image


def test_sources_give_the_same_rgb(tmp_path, astronaut):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    for source in (path, str(path), path.read_bytes(), Image.open(path), astronaut, io.BytesIO(path.read_bytes())):
        image = load_image(source)
        assert image.dtype == np.uint8 and image.shape == astronaut.shape
        assert np.array_equal(image, astronaut)


def test_exif_orientation_is_applied(astronaut):
    picture = Image.fromarray(astronaut[:300, :200])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).shape == (200, 300, 3)


@pytest.mark.parametrize("mode", ["L", "CMYK", "I;16", "RGBA", "LA", "P"])
def test_modes_become_rgb(mode, astronaut):
    picture = Image.fromarray(astronaut)
    if mode == "I;16":
        picture = Image.fromarray((astronaut[..., 0].astype(np.uint16) * 257))
    else:
        picture = picture.convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    image = load_image(buffer.getvalue())
    assert image.shape == astronaut.shape and image.dtype == np.uint8
    if mode == "I;16":
        assert np.abs(image[..., 0].astype(int) - astronaut[..., 0]).max() <= 1


def test_transparent_pixels_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    assert (load_image(buffer.getvalue()) == 255).all()


def test_heic_is_read(astronaut):
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="HEIF")
    image = load_image(buffer.getvalue())
    assert image.shape == astronaut.shape
    assert np.abs(image.astype(int) - astronaut).mean() < 12


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"hello, I am text\n", "not an image"),
        (None, "damaged or truncated"),
        ("bomb", "too many pixels"),
        ("big", "too many pixels, 10000×10000"),
    ],
)
def test_bad_bytes_get_one_line_reasons(data, message, astronaut_jpeg):
    if data is None:
        data = astronaut_jpeg[:5000]
    elif data == "bomb":
        data = bomb_png()
    elif data == "big":
        data = bomb_png(10000, 10000)
    with pytest.raises(FacevoxError, match=message) as error:
        load_image(data)
    assert "\n" not in str(error.value)


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(FacevoxError, match="no such file"):
        load_image(tmp_path / "nothing.jpg")
    with pytest.raises(FacevoxError, match="directory"):
        load_image(tmp_path)


def test_a_large_jpeg_decodes_smaller_with_pixels_mapped_to_the_photo(astronaut):
    from facevox.image import PhotoFile

    large = np.asarray(Image.fromarray(astronaut).resize((2000, 2000), Image.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(large).save(buffer, format="JPEG", quality=95)
    file = PhotoFile(buffer.getvalue())
    assert file.size == (2000, 2000)
    full, quarter = file.decode(), file.decode(4)
    assert (full.reduction, full.pixels.shape) == (1, (2000, 2000, 3))
    assert (quarter.reduction, quarter.pixels.shape) == (4, (500, 500, 3))
    # Pixel (row 100, column 300) of the quarter stands for the photo's 4×4 block from (400, 1200).
    assert np.array_equal(quarter.to_photo() @ [300, 100, 1], [1201.5, 401.5])
    block = full.pixels[400:404, 1200:1204].reshape(-1, 3).mean(0)
    assert np.abs(quarter.pixels[100, 300] - block).max() < 12
    png = io.BytesIO()
    Image.fromarray(large).save(png, format="PNG")
    png_file = PhotoFile(png.getvalue())
    assert png_file.decode(4).reduction == 1 and png_file.decode(4) is png_file.decode()  # only JPEGs decode smaller
    assert file.decode(4) is quarter  # each size decoded once


def test_photo_size_is_upright(astronaut):
    from facevox.image import PhotoFile

    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(astronaut[:300, :200]).save(buffer, format="JPEG", exif=exif)
    assert PhotoFile(buffer.getvalue()).size == (300, 200)
