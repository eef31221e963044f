"""Training one run on several devices with PyTorch's own engine: DistributedDataParallel, launched by torchrun.

- launch: the notebook's side (`pipe.fit(devices=N)`): the run spec, torchrun as a subprocess, rank 0 followed.
- worker: torchrun's entry point, one process per device, running nbtrain.training.fit with a rank's engine.
- ranks: a rank's share of each batch and the decisions every rank agrees on.
- spec: the run spec on disk (never the test split); feed: what rank 0 tells the notebook.
- portable: export_run / import_run, a run spec with its train.py and torchrun commands, and back.
"""
