"""The time-series kind: its data source (windows, frequencies: data), Pipeline (pipeline), bundle
format (bundle), forecasting networks (models) and naive forecasts (naive). Imports nothing until
one of them is used."""
