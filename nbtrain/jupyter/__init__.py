"""The IPython extension: `%load_ext nbtrain` registers %%train and %nbtrain. Loading twice is harmless."""

from nbtrain.jupyter.magics import NbtrainMagics


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(NbtrainMagics)  # registering again replaces the same magics


def unload_ipython_extension(ipython) -> None:
    magics = ipython.magics_manager.magics
    for kind, name in (("cell", "train"), ("line", "train"), ("line", "nbtrain")):
        magics[kind].pop(name, None)
