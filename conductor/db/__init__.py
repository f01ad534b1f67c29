# SPDX-License-Identifier: Apache-2.0
"""Persistent state: SQL tables, migrations and the API over them."""
