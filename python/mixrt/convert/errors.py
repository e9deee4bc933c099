# errors.py: the one exception type of the converter (unsupported or inconsistent input), whose
# message is always one line, and `naming`, which makes the refusals raised while reading a source
# name that source. Each refusal's message is checked by tests/test_convert.py and
# tests/test_convert_damaged.py.
from __future__ import annotations

from contextlib import contextmanager


def one_line(text: str) -> str:
    """text with every character that is not printable (line breaks, NUL, other controls)
    escaped as Python writes it, so that a name read from a damaged file cannot break the line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConversionError(ValueError):
    """The source cannot be converted; the message names the file, the field, the expected and
    the found, in one line."""

    def __init__(self, message: object):
        super().__init__(one_line(str(message)))


@contextmanager
def naming(source):
    """Refusals raised inside the block name `source` (a path, or a file name such as
    config.json): a message that does not mention it gets the prefix `source: `."""
    try:
        yield
    except ConversionError as error:
        if str(source) in str(error):
            raise
        raise ConversionError(f"{source}: {error}") from error
