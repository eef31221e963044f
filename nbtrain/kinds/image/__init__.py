"""The image kind: its data source (data), Pipeline (pipeline), bundle format (bundle) and default
model (models). Imports nothing: torchvision loads only when a module of the kind is used."""
