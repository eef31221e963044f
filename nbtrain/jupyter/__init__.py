"""The IPython extension: `%load_ext nbtrain` registers %%train and %nbtrain, and the input
transformer that runs %%train cells (nbtrain.jupyter.cells). Loading twice is harmless."""

from nbtrain.jupyter import cells
from nbtrain.jupyter.magics import NbtrainMagics


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(NbtrainMagics)  # registering again replaces the same magics
    cells.register(ipython)


def unload_ipython_extension(ipython) -> None:
    magics = ipython.magics_manager.magics
    for kind, name in (("cell", "train"), ("line", "train"), ("line", "nbtrain")):
        magics[kind].pop(name, None)
    cells.unregister(ipython)
