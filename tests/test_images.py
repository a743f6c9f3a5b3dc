"""Image decoding at load: truncated files, decompression bombs, 16-bit and float modes, EXIF orientation."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lfpc.agent.env import CropEnvironment
from lfpc.data.benchmarks import load_hrbench
from lfpc.data.records import DatasetError, load_jsonl
from lfpc.vision.images import ImageError, decode_image, load_image, set_max_image_pixels


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (with a valid CRC) but holds a 1 x 1 image."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def dataset(folder: Path, image_name: str) -> Path:
    row = {"id": "q1", "image_path": image_name, "question": "Which?", "options": ["a", "b"], "answer": "A"}
    path = folder / "data.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return path


def test_truncated_image_is_refused_at_load_naming_file_line_and_field(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (200, 300, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:2000])  # the header is intact, the pixels are not
    path = dataset(tmp_path, "cut.jpg")
    with pytest.raises(DatasetError, match=rf"^{path}:1: field 'image_path': cannot read image .*cut.jpg: .*truncated"):
        load_jsonl(path)


@pytest.mark.parametrize("claimed", [(400, 300), (100_000, 100_000)])  # over the limit; over PIL's own 2x guard
def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, pixel_limit, claimed):
    pixel_limit(100_000)
    (tmp_path / "big.png").write_bytes(png_claiming(*claimed))
    path = dataset(tmp_path, "big.png")
    with pytest.raises(DatasetError, match=rf"^{path}:1: field 'image_path': image .*big.png has .*(over|twice) the "
                                           r"limit of 100,000 pixels \(raise max_image_pixels"):
        load_jsonl(path)


def test_hrbench_base64_bomb_is_a_dataset_error(tmp_path, pixel_limit):
    pixel_limit(100_000)
    header = ["index", "image", "question", "A", "B", "C", "D", "answer", "category", "cycle_category"]
    row = ["0", base64.b64encode(png_claiming(100_000, 100_000)).decode(), "Q?", "a", "b", "c", "d", "A", "single", ""]
    path = tmp_path / "hr_bench_4k.tsv"
    path.write_text("\t".join(header) + "\n" + "\t".join(row) + "\n")
    with pytest.raises(DatasetError, match=r"row 1 .*field 'image': not a usable image \(image in the base64 field "
                                           r"has over twice the limit of 100,000 pixels"):
        load_hrbench(path, tmp_path / "cache")


def test_pixel_limit_must_be_positive():
    with pytest.raises(ValueError, match="max_image_pixels must be a positive integer, got 0"):
        set_max_image_pixels(0)


def test_sixteen_bit_and_float_images_are_scaled_to_eight_bits(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    decoded = np.asarray(decode_image(tmp_path / "gray16.png"))
    assert np.abs(decoded[..., 0].astype(int) - np.rint(ramp / 257)).max() <= 1
    assert decoded[0, 0, 0] == 0 and decoded[-1, -1, 0] == 255
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "half.tiff")
    assert np.asarray(decode_image(tmp_path / "half.tiff")).mean() == 128


def test_exif_orientation_is_applied_to_sizes_boxes_and_crops(tmp_path):
    stored = np.zeros((800, 1200, 3), dtype=np.uint8)
    stored[:, :600] = (255, 0, 0)  # left half of the stored pixels red: the top half once rotated for viewing
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    path = dataset(tmp_path, "rotated.jpg")
    rows = json.loads(path.read_text())
    rows["boxes"] = [[100, 900, 300, 1100]]  # beyond 800 px high: only valid in the viewer's frame
    path.write_text(json.dumps(rows) + "\n")
    [sample] = load_jsonl(path)
    assert sample.image_size == (800, 1200) and load_image(sample.image_path).size == (800, 1200)
    env = CropEnvironment(sample, display_size=(800, 1200), crop_max_tokens=256, mode="gt")
    crop = np.asarray(env.step('<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 9, 9]}}'
                               "</tool_call>").image)
    top = np.asarray(env.global_image())[:600].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[1] < 50  # the viewer's top half is red
    assert crop.reshape(-1, 3).mean(0)[0] < 50  # B1 lies in the bottom (black) half of the viewed image


def test_decode_error_names_the_source():
    with pytest.raises(ImageError, match="cannot read image in the row: "):
        decode_image(io.BytesIO(b"not an image"), "in the row")
