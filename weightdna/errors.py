"""Errors a user can cause. The CLI prints these without a traceback and exits non-zero."""


class WeightDNAError(Exception):
    """Base class: something the user asked for or gave cannot be done; the message says why
    and what to do instead."""


class InvalidInputError(WeightDNAError, ValueError):
    """An argument or a piece of data has the wrong shape, type or value."""


class ModelFileError(WeightDNAError):
    """A model or .dna file is missing, unreadable, corrupt or of an unknown kind."""


class OutputExistsError(WeightDNAError):
    """An output file exists and overwriting it was not asked for (use --force)."""


class OutputError(WeightDNAError, OSError):
    """An output cannot be written: a read-only folder, a full disk, a missing permission.
    Still an OSError, so code that caught the OSError of a failed write keeps working."""


class MissingDependencyError(WeightDNAError):
    """An optional package needed for this operation is not installed."""


class CorruptFileError(ModelFileError):
    """A .dna file is damaged or malformed: a length, offset, checksum or field is wrong."""
