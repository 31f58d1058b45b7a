"""Catalogue data: one TOML file per named problem (loaded by :mod:`sdetoolkit.catalogue`)."""
