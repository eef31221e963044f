"""nbtrain: train neural networks from a notebook the way experts do."""

import importlib

from nbtrain.errors import ConfigError, DataError, LeakageError, NbtrainError, StageError, TestSetLockedError

__version__ = "0.1.0"
__all__ = ["Pipeline", "load", "models", "NbtrainError", "StageError", "LeakageError", "TestSetLockedError", "DataError",
           "ConfigError", "loguniform", "uniform", "intrange", "choice", "__version__"]

# Loaded on first use: `import nbtrain` (and the ledger alone) stays quick, torch comes with Pipeline.
_LAZY = {"Pipeline": ("nbtrain.pipeline", "Pipeline"), "models": ("nbtrain.models", None),
         "load": ("nbtrain.bundle", "load"),
         # a sweep's search space (pipe.sweep): nbtrain.sweep_space
         **{name: ("nbtrain.sweep_space", name) for name in ("loguniform", "uniform", "intrange", "choice")}}


def load_ipython_extension(ipython):
    """`%load_ext nbtrain`: the magics live in nbtrain.jupyter, imported only here."""
    from nbtrain.jupyter import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython):
    from nbtrain.jupyter import unload_ipython_extension as unload
    unload(ipython)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'nbtrain' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
