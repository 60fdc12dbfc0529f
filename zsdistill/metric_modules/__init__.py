"""Metric scripts that `evaluate.load` reads by file path, shipped with the package so that they load offline."""
