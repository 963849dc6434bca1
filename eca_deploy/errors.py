"""One exception family. Each carries a one-line message meant for the user.

The CLI prints ``str(error)`` on stderr and exits 2 (bad input) or the error's
``exit_code``; ``--verbose`` shows the traceback.
"""

import re
import sys
import unicodedata


class EcaDeployError(Exception):
    """Base class: a problem the user can fix, described in one line."""

    exit_code = 2


class UsageError(EcaDeployError):
    """A flag or argument whose value cannot be used (a malformed spec, a count below 1, ...)."""


class ModelNotFoundError(EcaDeployError):
    """Unknown model name."""


class CheckpointError(EcaDeployError):
    """A weights file that is missing, unreadable, unsafe or does not fit the model."""


class ExportError(EcaDeployError):
    """Export, simplification or post-export verification failed."""


class OnnxFileError(EcaDeployError):
    """A file that is missing or is not a valid ONNX model."""


class OutputError(EcaDeployError):
    """An output location that cannot be written, or would overwrite an input."""


class ManifestError(EcaDeployError):
    """A manifest beside an artifact that is not JSON, or not the object of fields eca-deploy writes."""


class DataError(EcaDeployError):
    """Calibration / evaluation data that is missing, empty or unusable."""


class QuantizationError(EcaDeployError):
    """A model that cannot be quantized as asked."""


class MissingDependencyError(EcaDeployError):
    """An optional dependency (tensorrt, pycuda, timm, a GPU) is not available."""


class EngineError(EcaDeployError):
    """A TensorRT engine that cannot be built or does not fit this machine."""


class ParityError(EcaDeployError):
    """A candidate failed its accuracy tolerances (exit code 1, not bad input)."""

    exit_code = 1


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr for something the user should know that does not stop the run; said once per
    process, though stages reopen the same data or artifact."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"eca-deploy: warning: {message}", file=sys.stderr)


def plural(n: int, noun: str) -> str:
    """'1 artifact', '2 artifacts': a count and its noun for a message."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name where the message is empty."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def missing_dependency(what: str, install: str) -> MissingDependencyError:
    """The one wording used for every absent optional dependency."""
    return MissingDependencyError(f"{what} is not installed: {install}")


# Unicode categories that do not print as themselves: controls (Cc: newline, ESC of terminal escape sequences),
# format characters (Cf: the bidirectional overrides U+202A-202E and isolates U+2066-2069, U+200E/F marks,
# zero-width characters), line / paragraph separators and lone surrogates (an undecodable file name's bytes).
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


class _VisibleTable(dict):
    """A str.translate table mapping every hidden character to a space, filled on first sight of each code
    point (the Unicode database decides, so new format characters are covered without a list to keep)."""

    def __missing__(self, code: int) -> int:
        self[code] = 32 if unicodedata.category(chr(code)) in HIDDEN_CATEGORIES else code
        return self[code]


_VISIBLE = _VisibleTable()
_SPACES = re.compile(r" {2,}")


def visible_text(value, keep_newlines: bool = False) -> str:
    """``value`` as text that shows what it says: every hidden character (see HIDDEN_CATEGORIES) becomes a
    space, runs of spaces they leave collapse to one. Text from outside (file names, probed tools' output,
    saved results) goes through here before it reaches a terminal or a report; ``keep_newlines`` keeps
    line structure for output that is parsed line by line afterwards."""
    text = str(value)
    if not keep_newlines:
        return _SPACES.sub(" ", text.translate(_VISIBLE)) if not text.isprintable() else text
    return "\n".join(visible_text(line) for line in text.split("\n"))
