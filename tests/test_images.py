"""tlkit.images: any image file as 8-bit RGB."""
import numpy as np
from PIL import Image

from tlkit.images import open_image


def test_open_image_converts_modes(tmp_path):
    Image.new("L", (9, 9), 128).save(tmp_path / "g.png")
    Image.new("RGBA", (9, 9), (255, 0, 0, 0)).save(tmp_path / "a.png")
    Image.new("CMYK", (9, 9), (0, 255, 0, 0)).save(tmp_path / "c.jpg")
    Image.fromarray(np.full((9, 9), 65535, np.uint16)).save(tmp_path / "i16.png")
    for f in ("g.png", "a.png", "c.jpg", "i16.png"):
        assert open_image(tmp_path / f).mode == "RGB"
    assert open_image(tmp_path / "a.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert open_image(tmp_path / "i16.png").getpixel((0, 0)) == (255, 255, 255)
