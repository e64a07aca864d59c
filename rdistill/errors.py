"""Errors a user can read: each names what is wrong and where (file, column, row, config key)."""


class RdistillError(Exception):
    """Base class for every error rdistill raises on purpose."""


class ConfigError(RdistillError):
    """A configuration key is unknown, has the wrong type, or conflicts with another."""


class DataError(RdistillError):
    """Input data is missing, malformed or inconsistent."""


class ArtifactError(RdistillError):
    """An expected artifact (dataset table, model, manifest) is missing or does not match."""
