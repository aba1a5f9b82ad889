"""The one exception type that data-ingest code raises for problems a user can cause.

A ``DataError`` means "your input is wrong, here is which file/path/class": a missing
folder, a truncated IDX file, a download whose checksum does not match, an empty class
folder.  Its message is a single sentence that names the offending thing, so a CLI can
print it without a traceback::

    from components.data.errors import DataError

    try:
        raw = load_source("image_folder", path="/data/pets", image_size=64, channels=3)
    except DataError as err:
        sys.exit(f"error: {err}")

It subclasses ``ValueError`` so callers that already catch bad-value errors keep working.
"""

from __future__ import annotations


class DataError(ValueError):
    """A user-fixable problem with input data; the message names the file, path or class."""
