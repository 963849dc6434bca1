"""Calibration and evaluation data: image folders, ImageFolder trees, `path label` lists and .npy tensors.

Shared by calibration and by the parity harness. Every source becomes a
:class:`Dataset` that yields preprocessed float32 NCHW batches (plus int64 labels
where the source has them). Subsets are deterministic (``count`` files chosen by
``seed``), and ``data_hash`` identifies the chosen files' bytes together with the
preprocessing settings, so a calibration cache can tell whether it still applies.
"""

from __future__ import annotations

import hashlib
import os
import stat
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image

from ..artifacts import sha256_file
from ..errors import DataError, first_line, warn
from ..progress import progress
from .pixels import FLOAT_NCHW, InputFormat, input_format as format_named
from .preprocess import DEFAULT_DATA_CONFIG, DataConfig, pixels_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class Dataset(ABC):
    """A fixed, ordered selection of samples; ``batches`` decodes and preprocesses them lazily."""

    labels: np.ndarray | None
    class_names: list[str] | None
    data_hash: str
    imgsz: int
    description: str

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []  # (path, reason), filled while batches are read

    @property
    def num_classes(self) -> int | None:
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _sample(self, index: int, fmt: InputFormat) -> np.ndarray | None:
        """One sample in ``fmt`` ([3, imgsz, imgsz] float32 by default), or None after recording why it was
        skipped."""

    def batches(self, batch_size: int, desc: str | None = None,
                input_format: str = FLOAT_NCHW) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Full batches of usable samples (the last one may be short) in ``input_format`` (data.pixels);
        unreadable files are skipped."""
        fmt = format_named(input_format)
        if batch_size < 1:
            raise DataError(f"batch size must be a positive integer, got {batch_size}")
        self.skipped.clear()
        bar = progress(total=len(self), desc=desc, unit="img")
        arrays: list[np.ndarray] = []
        labels: list[int] = []
        used = 0
        try:
            for index in range(len(self)):
                sample = self._sample(index, fmt)
                bar.update(1)
                if sample is None:
                    continue
                arrays.append(sample)
                if self.labels is not None:
                    labels.append(int(self.labels[index]))
                if len(arrays) == batch_size:
                    used += len(arrays)
                    yield self._stack(arrays, labels)
                    arrays, labels = [], []
            if arrays:
                used += len(arrays)
                yield self._stack(arrays, labels)
        finally:
            bar.close()
        if used == 0:
            first = f" (first: {Path(self.skipped[0][0]).name}: {self.skipped[0][1]})" if self.skipped else ""
            raise DataError(f"no usable image in {self.description}: all {len(self)} files were unreadable{first}")

    @abstractmethod
    def sample_digests(self) -> list[str]:
        """One content digest per sample: two selections share a sample where they share a digest."""

    def shared_samples(self, other: "Dataset") -> int:
        """How many of ``other``'s samples have the content of one of these (the same files under any name)."""
        mine = set(self.sample_digests())
        return sum(digest in mine for digest in other.sample_digests())

    def _stack(self, arrays: list[np.ndarray], labels: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        return np.stack(arrays), (np.asarray(labels, dtype=np.int64) if self.labels is not None else None)


class ImageDataset(Dataset):
    def __init__(self, files: list[Path], labels: np.ndarray | None, class_names: list[str] | None,
                 imgsz: int, description: str, settings: str, config: DataConfig = DEFAULT_DATA_CONFIG):
        super().__init__()
        self.files = files
        self.config = config
        self.labels = labels
        self.class_names = class_names
        self.imgsz = imgsz
        self.description = description
        self.data_hash = _hash_files(files, labels, settings)

    def __len__(self) -> int:
        return len(self.files)

    def sample_digests(self) -> list[str]:
        return [_file_digest(path) for path in self.files]

    def _sample(self, index: int, fmt: InputFormat) -> np.ndarray | None:
        path = self.files[index]
        other = not_regular(path)
        if other:  # a FIFO or /dev/zero would block or never end
            self.skipped.append((str(path), other))
            return None
        try:
            decoded = pixels_file(path, self.imgsz, self.config)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # Pillow raises OSError for truncated/unknown files, SyntaxError for some broken headers.
            self.skipped.append((str(path), first_line(exc)))
            return None
        return fmt.from_pixels(decoded, self.config)


class ArrayDataset(Dataset):
    """A .npy of already-preprocessed float32 [N, 3, H, W] tensors, memory-mapped, never fully loaded."""

    def __init__(self, path: Path, array: np.ndarray, indices: np.ndarray, imgsz: int, settings: str):
        super().__init__()
        self.array = array
        self.indices = indices
        self.labels = None
        self.class_names = None
        self.imgsz = imgsz
        self.description = str(path)
        digest = hashlib.sha256(settings.encode())
        digest.update(_file_digest(path).encode())
        digest.update(indices.astype(np.int64).tobytes())
        self.data_hash = digest.hexdigest()

    def __len__(self) -> int:
        return len(self.indices)

    def sample_digests(self) -> list[str]:
        return [hashlib.sha256(np.ascontiguousarray(self.array[i]).tobytes()).hexdigest() for i in self.indices]

    def _sample(self, index: int, fmt: InputFormat) -> np.ndarray | None:
        if fmt.name != FLOAT_NCHW:  # normalised floats are not the bytes they came from
            raise DataError(f"{self.description} holds preprocessed float tensors; a model that takes "
                            f"{fmt.describe} needs images (an image folder or list)")
        return np.asarray(self.array[self.indices[index]], dtype=np.float32)


def load_dataset(source: str | os.PathLike, imgsz: int = 224, count: int | None = None, seed: int = 0,
                 config: DataConfig = DEFAULT_DATA_CONFIG, exclude: int | None = None) -> Dataset:
    """Open ``source`` (image folder, ImageFolder root, `path label` list, or .npy) as a :class:`Dataset`.

    ``count`` picks that many samples at random with ``seed`` (kept in file order); None takes all.
    ``config`` is the model's preprocessing (mean, std, resize ratio, interpolation).
    ``exclude`` first sets aside the samples ``load_dataset(source, count=exclude, seed=seed)`` would pick
    (the calibration images), so the result holds only images that selection did not use (maybe none).
    """
    source = Path(source)
    if count is not None and count < 1:
        raise DataError(f"image count must be a positive integer, got {count}")
    if not source.exists():
        raise DataError(f"data not found: {source}")  # not only calibration: parity's --data and --val-data too
    if not source.is_dir() and not_regular(source):
        raise DataError(f"data {source} is {not_regular(source)}; give an image folder, a list or a .npy")
    settings = f"{config.settings}|imgsz={imgsz}|count={count}|seed={seed}|exclude={exclude}"
    if source.is_file() and source.suffix.lower() == ".npy":
        return _load_npy(source, imgsz, count, seed, settings, exclude)
    files, labels, classes = _discover(source)
    chosen = _choose(len(files), count, seed, exclude)
    files = [files[i] for i in chosen]
    labels = labels[chosen] if labels is not None else None
    return ImageDataset(files, labels, classes, imgsz, str(source), settings, config)


def _discover(source: Path) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    """(image files, labels, class names) of an image file, a list or a folder."""
    if source.is_file():
        if source.suffix.lower() in IMAGE_SUFFIXES:
            files, labels, classes = [source], None, None
        else:
            files, labels = _read_list(source)
            classes = None
    else:
        files, labels, classes = _scan_folder(source)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {source}")
    return files, labels, classes


def source_files(source: str | os.PathLike | None) -> list[Path]:
    """Every file reading ``source`` may touch (the list file and each image, or the .npy): what no output may
    overwrite. Nothing is decoded or hashed."""
    if source is None:
        return []
    source = Path(source)
    if not source.exists() or (not source.is_dir() and not_regular(source)):
        return [source]  # load_dataset says what is wrong with it
    if source.is_file() and source.suffix.lower() == ".npy":
        return [source]
    try:
        return [source, *_discover(source)[0]]
    except DataError:  # an empty folder or a bad list: load_dataset says so when the data is read
        return [source]


def _scan_folder(root: Path) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    """ImageFolder (no images at the top, two or more class folders holding images) or a recursive image folder.

    Labels are the class folders' sorted ranks, torchvision's numbering: an empty class folder keeps its
    rank (dropping it would shift every later label), and is named in a warning.

    Each real folder is visited once and each real file taken once, however many links lead to them:
    a ``loop -> .`` link must neither repeat the images nor make the walk endless.
    """
    top_images = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    if not top_images:
        seen = _Seen({_identity(root)}, set())  # a class folder linking back to the root holds no new image
        per_class = [(d.name, _images_under(d, seen)) for d in class_dirs]
        if sum(1 for _, files in per_class if files) >= 2:
            empty = [f"{name} (label {i})" for i, (name, files) in enumerate(per_class) if not files]
            if empty:
                warn(f"{root}: {len(empty)} class folder{'s' if len(empty) > 1 else ''} without images: "
                     f"{', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}; every class keeps its label")
            files = [f for _, fs in per_class for f in fs]
            labels = np.concatenate([np.full(len(fs), i, dtype=np.int64) for i, (_, fs) in enumerate(per_class)])
            return files, labels, [name for name, _ in per_class]
    return _images_under(root, _Seen(set(), set())), None, None


class _Seen(NamedTuple):
    folders: set[tuple[int, int]]  # (device, inode) of every real folder walked
    files: set[tuple[int, int]]  # ... and of every real file taken


def _identity(path: Path | os.DirEntry) -> tuple[int, int] | None:
    try:
        info = path.stat()  # follows links: the identity of what the link leads to
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _images_under(folder: Path, seen: _Seen) -> list[Path]:
    """Image files under ``folder``, links followed, breadth first so the shortest path to a file names it."""
    found: list[Path] = []
    queue = deque([folder])
    while queue:
        directory = queue.popleft()
        identity = _identity(directory)
        if identity is None or identity in seen.folders:
            continue
        seen.folders.add(identity)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir():
                queue.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith("."):
                file_identity = _identity(entry)
                if file_identity is not None and file_identity in seen.files:
                    continue
                if file_identity is not None:
                    seen.files.add(file_identity)
                found.append(Path(entry.path))  # a broken link stays: decoding reports it as unreadable
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file to read (a FIFO, a device, ...), or None (missing files included:
    reading them reports the error)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    for test, kind in ((stat.S_ISREG, None), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind and f"not a regular file: {kind}"
    return "not a regular file"


def _read_list(path: Path) -> tuple[list[Path], np.ndarray | None]:
    """Lines of `path label` (or bare `path`), relative paths taken from the list's folder; # comments allowed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the image list {path}: {first_line(exc)}") from exc
    files: list[Path] = []
    labels: list[int] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, _, tail = line.rpartition(" ")
        if head and tail.lstrip("-").isdigit():
            file, label = head.strip(), int(tail)
            if label < 0:
                raise DataError(f"{path}:{number}: labels must be non-negative integers, got {label}")
            labels.append(label)
        else:
            file = line
        files.append(Path(file) if Path(file).is_absolute() else path.parent / file)
        if labels and len(labels) != len(files):
            raise DataError(f"{path}:{number}: some lines have a label and some do not")
    if not files:
        raise DataError(f"the image list {path} names no files")
    return files, (np.asarray(labels, dtype=np.int64) if labels else None)


def label_problem(labels: np.ndarray | None, data: "Dataset", num_classes: int, source: str) -> str | None:
    """Why ``labels`` cannot be the model's class indices, or None. ImageFolder labels are folder ranks, so
    the folder count must be the class count; a `path label` list names class indices itself, so they only
    have to exist in the model."""
    if labels is None:
        return None
    folders = data.class_names
    if folders is not None and len(folders) != num_classes:
        return (f"{source} has {len(folders)} classes but the model outputs {num_classes}; labels would not "
                "match (use one folder per model class)")
    if int(labels.max(initial=0)) >= num_classes:
        return (f"{source} has label {int(labels.max())} but the model outputs {num_classes} classes (labels are "
                "class indices from 0)")
    return None


def _load_npy(path: Path, imgsz: int, count: int | None, seed: int, settings: str,
              exclude: int | None) -> ArrayDataset:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npy array: {first_line(exc)}") from exc
    if array.ndim != 4 or array.shape[1] != 3 or array.shape[2:] != (imgsz, imgsz):
        raise DataError(f"{path} holds an array of shape {list(array.shape)}; expected preprocessed "
                        f"[N, 3, {imgsz}, {imgsz}] tensors")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{path} holds {array.dtype} values; expected preprocessed float32 tensors")
    if array.shape[0] == 0:
        raise DataError(f"{path} holds no samples")
    return ArrayDataset(path, array, _choose(array.shape[0], count, seed, exclude), imgsz, settings)


def _pick(total: int, count: int | None, seed: int) -> np.ndarray:
    if count is None or count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


def _choose(total: int, count: int | None, seed: int, exclude: int | None = None) -> np.ndarray:
    """Indices of ``count`` samples picked with ``seed``, from those left after setting ``exclude`` aside."""
    if exclude is None:
        return _pick(total, count, seed)
    rest = np.setdiff1d(np.arange(total), _pick(total, exclude, seed))
    return rest[_pick(len(rest), count, seed)]


def _file_digest(path: Path) -> str:
    other = not_regular(path)
    if other:  # never read: /dev/zero would be hashed forever
        return f"{other}:{path.name}"
    try:
        return sha256_file(path)
    except OSError as exc:  # unreadable files still get a stable identity; decoding reports them
        return f"unreadable:{path.name}:{exc.errno}"


def _hash_files(files: list[Path], labels: np.ndarray | None, settings: str) -> str:
    digest = hashlib.sha256(settings.encode())
    for i, path in enumerate(files):
        # os.fsencode: a file name need not be UTF-8 (its undecodable bytes are surrogates in the str)
        digest.update(os.fsencode(path.name))
        digest.update(f"|{_file_digest(path)}|{labels[i] if labels is not None else ''}\n".encode())
    return digest.hexdigest()


def skipped_files(data: Dataset | None) -> list[dict]:
    """The unreadable files a pass over ``data`` skipped, as the manifest records them."""
    return [{"path": p, "reason": r} for p, r in data.skipped] if data is not None else []
