"""Errors about the user's input; the CLI prints them as one line and exits with status 2."""


class SuffixTuneError(ValueError):
    """Bad input: the message names the file, row, column, option or artifact, and says what would work."""


class ConfigError(SuffixTuneError):
    """An unknown name or an option combination that cannot work."""


class DataError(SuffixTuneError):
    """Bad data: missing column, unknown label, empty text or file."""


class RunFailed(RuntimeError):
    """The loss diverged or the predictions collapsed; the run record is written and marked failed."""


class ArtifactError(SuffixTuneError):
    """An artifact that is missing, malformed, or does not fit the given base model."""
