"""The errors nbtrain raises. Each message says what happened, what was received, and what to do."""


class NbtrainError(Exception):
    """Base class of every error nbtrain raises on purpose."""


class StageError(NbtrainError):
    """A verb was called before the verb it depends on."""


class LeakageError(NbtrainError):
    """The call would let validation or test rows shape what the model learns."""


class TestSetLockedError(NbtrainError):
    """The test split was already evaluated; a second look would make it part of model selection."""

    __test__ = False  # not a pytest test class, despite the name


class DataError(NbtrainError):
    """The data cannot be used as given (empty, malformed, unreadable, a corrupt ledger...)."""


class ConfigError(NbtrainError):
    """An argument or setting is not valid."""


class NbtrainWarning(UserWarning):
    """Something was handled on your behalf and you should know it (e.g. labels a model never saw)."""
