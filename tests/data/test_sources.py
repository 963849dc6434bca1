"""Each data source on real image files: ImageFolder, recursive folder, `path label` list, .npy; subsets; bad data."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from eca_deploy.data.preprocess import preprocess
from eca_deploy.data.sources import load_dataset
from eca_deploy.errors import DataError

IMGSZ = 32


def _crops(n: int, seed: int = 0) -> list[Image.Image]:
    """Real photo crops of varied sizes (the two photos scikit-learn ships)."""
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    crops = []
    for i in range(n):
        photo = photos[i % 2]
        w, h = int(rng.integers(40, 200)), int(rng.integers(40, 200))
        x, y = int(rng.integers(0, photo.width - w)), int(rng.integers(0, photo.height - h))
        crops.append(photo.crop((x, y, x + w, y + h)))
    return crops


@pytest.fixture
def image_folder(tmp_path) -> tuple[Path, dict[str, list[Image.Image]]]:
    """ImageFolder with classes written out of order and mixed formats: PNG, BMP, WEBP (lossless)."""
    classes = {"zebra": _crops(3, 1), "ant": _crops(4, 2), "mole": _crops(2, 3)}
    for name, crops in classes.items():
        for i, crop in enumerate(crops):
            folder = tmp_path / "data" / name / ("nested" if i == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            suffix, kwargs = [(".png", {}), (".bmp", {}), (".webp", {"lossless": True})][i % 3]
            crop.save(folder / f"{name}_{i}{suffix}", **kwargs)
    return tmp_path / "data", classes


def _all(dataset, batch_size=4):
    xs, ys = [], []
    for x, y in dataset.batches(batch_size):
        xs.append(x)
        if y is not None:
            ys.append(y)
    return np.concatenate(xs), (np.concatenate(ys) if ys else None)


def test_image_folder_gives_sorted_class_labels(image_folder):
    root, classes = image_folder
    data = load_dataset(root, IMGSZ)
    assert data.class_names == ["ant", "mole", "zebra"] and data.num_classes == 3
    x, y = _all(data)
    assert x.shape == (9, 3, IMGSZ, IMGSZ) and x.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(y), [4, 2, 3])
    # The decoded pixels are the saved ones (all three formats are lossless), class by class.
    expected = [preprocess(c, IMGSZ) for name in ("ant", "mole", "zebra") for c in classes[name]]
    for got in x:
        assert min(np.abs(got - e).max() for e in expected) < 1e-5


def test_plain_folder_is_recursive_and_unlabeled(tmp_path):
    crops = _crops(5)
    (tmp_path / "a" / "b").mkdir(parents=True)
    crops[0].save(tmp_path / "top.jpg", quality=95)
    for i, crop in enumerate(crops[1:]):
        crop.save(tmp_path / "a" / ("b" if i % 2 else "") / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset(tmp_path, IMGSZ)
    assert len(data) == 5 and data.labels is None and data.num_classes is None
    x, y = _all(data, batch_size=2)
    assert x.shape == (5, 3, IMGSZ, IMGSZ) and y is None


def test_list_file_with_labels(tmp_path):
    crops = _crops(4)
    (tmp_path / "imgs").mkdir()
    lines = ["# path label"]
    for i, crop in enumerate(crops):
        crop.save(tmp_path / "imgs" / f"photo {i}.png")  # a space in the name
        lines.append(f"imgs/photo {i}.png {7 - i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n\n")
    data = load_dataset(tmp_path / "list.txt", IMGSZ)
    x, y = _all(data)
    np.testing.assert_array_equal(y, [7, 6, 5, 4])
    assert data.num_classes == 8
    np.testing.assert_allclose(x[2], preprocess(crops[2], IMGSZ), atol=1e-6)


def test_npy_of_preprocessed_tensors(tmp_path):
    array = np.random.default_rng(0).standard_normal((10, 3, IMGSZ, IMGSZ)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    x, y = _all(load_dataset(tmp_path / "x.npy", IMGSZ, count=4, seed=1), batch_size=3)
    assert y is None and x.shape == (4, 3, IMGSZ, IMGSZ)
    matches = [int(np.argmin([np.abs(a - s).max() for a in array])) for s in x]
    assert len(set(matches)) == 4
    np.testing.assert_array_equal(x, array[matches])


def test_npy_of_the_wrong_shape_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 16, 16), dtype=np.float32))
    with pytest.raises(DataError, match=r"\[N, 3, 32, 32\]"):
        load_dataset(tmp_path / "x.npy", IMGSZ)


def test_subsets_are_deterministic_and_hashed(image_folder, tmp_path):
    root, _ = image_folder
    a, b = load_dataset(root, IMGSZ, count=5, seed=3), load_dataset(root, IMGSZ, count=5, seed=3)
    assert a.files == b.files and a.data_hash == b.data_hash and len(a) == 5
    others = [load_dataset(root, IMGSZ, count=5, seed=s) for s in range(4, 9)]
    assert any(o.files != a.files for o in others)
    assert all(o.data_hash != a.data_hash for o in others if o.files != a.files)
    assert load_dataset(root, IMGSZ, count=100).files == load_dataset(root, IMGSZ).files
    assert load_dataset(root, 64).data_hash != load_dataset(root, IMGSZ).data_hash
    # Same names, different bytes: a different hash.
    before = load_dataset(root, IMGSZ).data_hash
    victim = sorted(root.rglob("*.png"))[0]
    Image.open(victim).convert("L").convert("RGB").save(victim)
    assert load_dataset(root, IMGSZ).data_hash != before


def test_batches_are_full_until_the_last(image_folder):
    sizes = [len(x) for x, _ in load_dataset(image_folder[0], IMGSZ).batches(4)]
    assert sizes == [4, 4, 1]


def test_corrupt_images_are_skipped_and_counted(image_folder):
    root, _ = image_folder
    (root / "ant" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = root / "mole" / "truncated.png"
    good = sorted((root / "mole").rglob("*.png"))[0].read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    data = load_dataset(root, IMGSZ)
    assert len(data) == 11
    x, y = _all(data)
    assert len(x) == 9 and len(y) == 9
    assert sorted(Path(p).name for p, _ in data.skipped) == ["broken.jpg", "truncated.png"]


def test_missing_source_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nowhere", IMGSZ)


def test_empty_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path, IMGSZ)


def test_folder_of_non_images_is_a_data_error(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "weights.pth").write_bytes(b"\x00" * 16)
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path, IMGSZ)


def test_only_unreadable_images_fail_when_read(tmp_path):
    for i in range(3):
        (tmp_path / f"fake{i}.png").write_bytes(b"PNG? no")
    data = load_dataset(tmp_path, IMGSZ)
    with pytest.raises(DataError, match="no usable image.*all 3 files"):
        _all(data)
    assert len(data.skipped) == 3
