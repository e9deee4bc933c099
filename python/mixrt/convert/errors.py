# errors.py: the one exception type of the converter (unsupported or inconsistent input).
# Each refusal's message is checked by tests/test_convert.py.


class ConversionError(ValueError):
    """The source cannot be converted; the message names the field, the expected and the found."""
