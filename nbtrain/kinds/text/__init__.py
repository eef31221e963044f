"""The text kind: its data source (data), Pipeline (pipeline), bundle format (bundle), default
transformer (models) and TF-IDF baseline (baseline). Imports nothing: transformers loads only
inside the functions that load a model."""
