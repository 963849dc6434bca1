"""A corpus of hostile inputs, generated on the fly by the tests that use them (no binary blobs in git).

Each helper builds one case of issue 11 under a folder the test owns and returns what the test needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# Strings that try to inject HTML, a heading, a javascript: link and a table cell into a rendered report.
INJECTIONS = (
    "x<img src=x onerror=alert(1)>.onnx",
    "m.onnx\n# Injected heading\n[click](javascript:alert(1))",
    "a|b`code`*bold*![img](http://evil/x.png)",
    "<script>alert(1)</script>\r\n- item",
)


def image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, mode: str = "RGB") -> Path:
    """A small real image (noise, so every decoder path is exercised) in the format its suffix names."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    return path


def image_folder(root: Path, count: int = 4) -> list[Path]:
    return [image(root / f"img{i}.png", seed=i) for i in range(count)]


def symlink_loops(root: Path, loops: int = 1) -> list[Path]:
    """Four images and ``loops`` links back up the tree (``loop -> .``, ``sub/back -> ..``): os.walk with
    followlinks=True never finishes on two of them."""
    files = image_folder(root)
    (root / "loop").symlink_to(".", target_is_directory=True)
    if loops > 1:
        (root / "sub").mkdir()
        (root / "sub" / "back").symlink_to("..", target_is_directory=True)
    return files


def fifo(path: Path) -> Path:
    """A named pipe: opening it for reading blocks until a writer comes, i.e. forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def list_file(path: Path, entries: list[str | Path]) -> Path:
    """A `path label` list naming ``entries`` (labels 0, 1, ... in turn)."""
    path.write_text("".join(f"{entry} {i % 2}\n" for i, entry in enumerate(entries)))
    return path


def huge_flat_jpeg(path: Path, side: int = 13000) -> Path:
    """A side x side grey JPEG: 2 MB on disk, inside Pillow's decompression-warning band."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (side, side), 128).save(path, quality=50)
    return path


def huge_flat_png(path: Path, side: int = 13000) -> Path:
    """A side x side grey PNG written row by row (zlib streaming): 170 KB on disk, 169 MB decoded, never held
    in memory here; Pillow has no reduced decode for PNG."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(9)
    row = b"\x00" + bytes([128]) * side  # filter type 0, then the row's grey levels
    idat = b"".join(pack.compress(row) for _ in range(side)) + pack.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
