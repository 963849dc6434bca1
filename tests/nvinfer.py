"""DeepStream's Gst-nvinfer config as nvinfer reads it: its known keys (tests/packaging/data) and a GKeyFile-like
reader, for the tests of `deepstream` and `pipeline --deepstream`."""

from __future__ import annotations

import configparser
from pathlib import Path

KEYS_FILE = Path(__file__).parent / "packaging" / "data" / "gstnvinfer_property_keys.txt"
NVINFER_KEYS = {line.strip() for line in KEYS_FILE.read_text().splitlines() if line.strip() and line[0] != "#"}


def read_config(path: Path) -> dict[str, str]:
    """The [property] group as GKeyFile sees it: one group, case-sensitive keys, '#' comments, no duplicates."""
    parser = configparser.ConfigParser(delimiters=("=",), comment_prefixes=("#",), interpolation=None, strict=True)
    parser.optionxform = str
    parser.read_string(path.read_text())
    assert parser.sections() == ["property"]
    return dict(parser["property"])
