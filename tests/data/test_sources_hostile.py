"""Issue 11, items 6, 7 and 9: image folders with symlink loops, lists naming FIFOs and devices, huge images.

The cases that hung on main run in a child process with a timeout, so a regression fails instead of
hanging the suite.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from eca_deploy.data.sources import load_dataset
from eca_deploy.errors import DataError
from hostile import fifo, huge_flat_jpeg, huge_flat_png, image, image_folder, list_file, symlink_loops

IMGSZ = 16


def _in_child(code: str, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter (stdout returned); a hang becomes a test failure."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parents[2])  # this checkout's eca_deploy
    assert done.returncode == 0, done.stderr
    return done.stdout


def _count(folder: Path) -> int:
    data = load_dataset(folder, IMGSZ)
    return sum(len(x) for x, _ in data.batches(8))


def test_a_loop_link_does_not_repeat_images(tmp_path):
    symlink_loops(tmp_path / "data", loops=1)  # main: 4 files became 164 samples
    assert _count(tmp_path / "data") == 4


def test_two_loop_links_finish_with_each_image_once(tmp_path):
    symlink_loops(tmp_path / "data", loops=2)  # main: never finished, 1.5 GiB in a minute
    out = _in_child(f"""
        from eca_deploy.data.sources import load_dataset
        data = load_dataset({str(tmp_path / 'data')!r}, 16)
        print(len(data), sorted(p.name for p in data.files))
    """, timeout=60)
    assert out.strip() == "4 ['img0.png', 'img1.png', 'img2.png', 'img3.png']"


def test_each_real_file_is_taken_once_under_its_shortest_name(tmp_path):
    files = image_folder(tmp_path / "data")
    (tmp_path / "data" / "sub").mkdir()
    (tmp_path / "data" / "sub" / "again.png").symlink_to(files[0])
    (tmp_path / "data" / "alias").symlink_to(tmp_path / "data" / "sub", target_is_directory=True)
    data = load_dataset(tmp_path / "data", IMGSZ)
    assert sorted(p.relative_to(tmp_path / "data").as_posix() for p in data.files) == \
        ["img0.png", "img1.png", "img2.png", "img3.png"]


def test_imagefolder_class_linking_back_to_the_root_adds_no_image(tmp_path, capsys):
    for name in ("ant", "bee"):
        image_folder(tmp_path / "data" / name, count=2)
    (tmp_path / "data" / "zloop").symlink_to(tmp_path / "data", target_is_directory=True)
    data = load_dataset(tmp_path / "data", IMGSZ)
    assert data.class_names == ["ant", "bee", "zloop"] and len(data) == 4  # an empty class, keeping its label
    assert "zloop (label 2)" in capsys.readouterr().err


def test_a_list_naming_dev_zero_and_a_fifo_reads_only_regular_files(tmp_path):
    real = [image(tmp_path / f"r{i}.png", seed=i) for i in range(2)]
    pipe = fifo(tmp_path / "pipe.png")
    listing = list_file(tmp_path / "list.txt", [real[0], "/dev/zero", pipe, real[1], tmp_path])
    out = _in_child(f"""
        from eca_deploy.data.sources import load_dataset
        data = load_dataset({str(listing)!r}, 16)
        n = sum(len(x) for x, _ in data.batches(4))
        print(n)
        for path, reason in data.skipped:
            print(path, "|", reason)
    """, timeout=60)
    lines = out.strip().splitlines()
    assert lines[0] == "2"
    assert lines[1:] == ["/dev/zero | not a regular file: a character device",
                         f"{pipe} | not a regular file: a FIFO", f"{tmp_path} | not a regular file: a folder"]


@pytest.mark.slow
def test_quantize_lists_the_skipped_fifo(digits, tmp_path):
    """The CLI says which entries were skipped (and still calibrates on the rest)."""
    pipe = fifo(tmp_path / "pipe.png")
    images = sorted((digits.calib_dir / "0").iterdir())[:4] + sorted((digits.calib_dir / "1").iterdir())[:4]
    listing = list_file(tmp_path / "list.txt", [*images, pipe])
    out = _in_child(f"""
        from eca_deploy.cli.main import main
        raise SystemExit(main(["quantize", "--onnx", {str(digits.onnx)!r}, "--calib-data", {str(listing)!r},
                               "--output", {str(tmp_path / 'm.int8.onnx')!r}, "--no-calib-cache"]))
    """, timeout=300)
    assert f"skipped 1 unreadable file (first: {pipe}: not a regular file: a FIFO)" in out


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_calib_data_that_is_a_device_or_fifo_is_one_line(tmp_path, special):
    source = fifo(tmp_path / "list.txt") if special == "fifo" else Path(special)
    with pytest.raises(DataError, match="is not a regular file"):
        load_dataset(source, IMGSZ)


def _load_in_a_child(folder: Path) -> tuple[str, list, int]:
    """(first batch's shape, skipped files, peak MiB) of load_dataset(folder) in a fresh process, whose peak
    memory is the decode's alone; its stderr must be empty (no warning on the user's screen)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from eca_deploy.data.sources import load_dataset
        data = load_dataset({str(folder)!r}, 224)
        batches = [x for x, _ in data.batches(4)]
        peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))  # this process only
        print(batches[0].shape, int(peak.split()[1]) // 1024)
        print(data.skipped)
    """)], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert done.returncode == 0 and done.stderr == ""
    first, skipped = done.stdout.splitlines()
    shape, peak_mib = first.rsplit(" ", 1)
    return shape, skipped, int(peak_mib)


def test_a_13000_pixel_image_is_decoded_small_and_quietly(tmp_path):
    """main decoded it in full twice (peak 1001 MiB) with a DecompressionBombWarning on stderr."""
    huge_flat_jpeg(tmp_path / "data" / "huge.jpg")
    image(tmp_path / "data" / "small.png")
    shape, skipped, peak_mib = _load_in_a_child(tmp_path / "data")
    assert shape == "(2, 3, 224, 224)" and skipped == "[]"
    assert peak_mib < 300  # full decode: 169 MB grey + 507 MB as RGB; draft at 1/8: under 3 MB


def test_a_13000_pixel_png_is_refused_before_it_is_decoded_and_named(tmp_path):
    """main decoded it in full (1186 MiB peak, 546 MiB without it): Pillow has no reduced decode for PNG."""
    huge_flat_png(tmp_path / "data" / "huge.png")
    image(tmp_path / "data" / "small.png")
    shape, skipped, peak_mib = _load_in_a_child(tmp_path / "data")
    assert shape == "(1, 3, 224, 224)" and "huge.png" in skipped
    assert "13000x13000 PNG is too large to decode (169 MP, limit 67 MP for formats other than JPEG)" in skipped
    assert peak_mib < 400  # the interpreter with numpy and Pillow: ~100 MiB; main: 1186


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_reduced_decoding_gives_the_same_pixels_within_rounding(tmp_path, monkeypatch, suffix):
    """The reduced decode (DCT scaling for JPEG, reduce() for PNG) stays next to the full decode and resize."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from eca_deploy.data import preprocess as pre

    path = tmp_path / f"photo{suffix}"
    photo = Image.fromarray(load_sample_image("china.jpg"))
    photo.resize((photo.width * 4, photo.height * 4), Image.BICUBIC).save(path)  # 2560x1708
    full = pre.preprocess_file(path, 224)
    monkeypatch.setattr(pre, "LARGE_IMAGE_PIXELS", 1000)  # treat the photo as large
    with Image.open(path) as opened:
        assert 256 <= min(pre.decode(opened, 224).size) <= 1708 // 2  # decoded at half the size or less
    reduced = pre.preprocess_file(path, 224)
    assert reduced.shape == full.shape
    assert np.abs(reduced - full).mean() < 0.02  # normalised units: about one 8-bit level
