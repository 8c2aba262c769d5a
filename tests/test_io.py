import os

import numpy as np
import pytest
import torch
from PIL import Image

from sketchcolor.errors import ImageError, OutputExistsError
from sketchcolor.io import (
    atomic_write,
    crop_to,
    load_rgb,
    load_rgba,
    open_image,
    pad_to_multiple,
    read_png_text,
    save_image,
    tensor_to_image,
)


def _gradient(w=12, h=8) -> np.ndarray:
    x = np.linspace(0, 255, w * h * 3).reshape(h, w, 3)
    return x.astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp", ".tif"])
def test_reads_common_formats(tmp_path, suffix):
    path = tmp_path / f"img{suffix}"
    arr = _gradient()
    kwargs = {"quality": 100} if suffix in (".jpg", ".webp") else {}
    if suffix == ".webp":
        kwargs["lossless"] = True
    Image.fromarray(arr).save(path, **kwargs)
    x = load_rgb(path)
    assert x.shape == (1, 3, 8, 12) and x.dtype == torch.float32
    tol = 0.1 if suffix == ".jpg" else 1e-6
    assert np.abs(x[0].permute(1, 2, 0).numpy() * 255 - arr).max() <= tol * 255


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 3] = 0  # fully transparent black
    arr[0, 0] = (0, 0, 0, 255)  # one opaque black pixel
    path = tmp_path / "a.png"
    Image.fromarray(arr, "RGBA").save(path)
    x = load_rgb(path)
    assert x[0, :, 0, 0].tolist() == [0, 0, 0]
    assert torch.all(x[0, :, 1:, :] == 1.0)
    rgba = load_rgba(path)
    assert rgba.shape == (1, 4, 4, 4) and rgba[0, 3, 1, 1] == 0 and rgba[0, 3, 0, 0] == 1


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 1
    path = tmp_path / "p.png"
    img.save(path, transparency=1)
    assert torch.all(load_rgb(path) == 1.0)  # transparent -> white paper
    assert torch.all(load_rgba(path)[0, 3] == 0)


def test_sixteen_bit_greyscale_scaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 32768, np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    x = load_rgb(path)
    assert abs(x.mean().item() - 0.5) < 0.01


def test_cmyk_and_greyscale(tmp_path):
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    assert load_rgb(tmp_path / "c.jpg").min() > 0.95  # no ink = white
    Image.new("L", (4, 4), 0).save(tmp_path / "l.png")
    assert load_rgb(tmp_path / "l.png").max() == 0.0


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((2, 4, 3), np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif)
    assert load_rgb(path).shape[-2:] == (4, 2)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"just some text", "not an image file"), (None, "file not found")],
)
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as info:
        open_image(path)
    assert str(path) in str(info.value)


def test_truncated_png(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(_gradient(64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        open_image(path)


def test_pixel_limit(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    with pytest.raises(ImageError, match="over the limit of 9,999"):
        open_image(path, max_pixels=9999)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="is a folder"):
        open_image(tmp_path)


def test_pad_and_crop_round_trip():
    x = torch.rand(1, 3, 5, 7)
    padded, size = pad_to_multiple(x, 4, value=1.0)
    assert padded.shape == (1, 3, 8, 8)
    assert torch.all(padded[..., 5:, :] == 1.0)
    assert torch.equal(crop_to(padded, size), x)


def test_save_refuses_overwrite_and_is_atomic(tmp_path):
    path = tmp_path / "out.png"
    img = tensor_to_image(torch.rand(1, 3, 4, 4))
    save_image(img, path, text={"k": "v"})
    assert read_png_text(path) == {"k": "v"}
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        save_image(img, path)
    assert path.read_bytes() == before
    # A failure while writing leaves the old file and no temporary file behind.
    with pytest.raises(RuntimeError):
        with atomic_write(path, overwrite=True) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_image(tensor_to_image(torch.rand(1, 3, 2, 2)), tmp_path / "p.png")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_unsupported_output_suffix(tmp_path):
    with pytest.raises(ImageError, match="cannot write '.xyz'"):
        save_image(tensor_to_image(torch.rand(1, 3, 2, 2)), tmp_path / "o.xyz")


def test_tensor_to_image_refuses_nan():
    x = torch.rand(1, 3, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tensor_to_image(x)
