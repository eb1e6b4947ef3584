"""One exception type for problems the user can fix; the CLI prints it as one line."""


class SynaugError(Exception):
    """A user-facing error: bad input, bad config, missing file.

    The CLI catches it, prints ``synaug: error: <message>`` on one line and exits 2.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
