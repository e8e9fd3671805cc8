"""One error type for user mistakes: the CLI prints its message as one line, never a traceback."""


class QazlmError(Exception):
    """A problem the user can fix (bad file, bad config key, ...). The message names the file and the fix."""
