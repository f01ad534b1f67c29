"""Persistent state: SQL tables, migrations and the API over them."""
