"""Alembic environment and versions of the run store, kept at the top level of the checkout.

A wheel ships this folder as the package `store.migrations` (setuptools' package-dir mapping in pyproject.toml),
so an installed store finds its scripts without the checkout; store.db.migrations_dir() locates it either way.
"""
