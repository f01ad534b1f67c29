# SPDX-License-Identifier: Apache-2.0
"""Sphinx configuration of the conductor documentation.

Build with ``tox -e docs``, or by hand::

    sphinx-build -W --keep-going -b html doc/source doc/build/html

Warnings are errors: a page that does not render cleanly fails the build.
"""

import os
import sys

# NOTE: autodoc imports the package; an installed conductor (tox installs
# it) wins, but a plain checkout works too.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                "..", "..")))

# NOTE: importing the package selects oslo.service's threading backend and
# refuses eventlet before any extension imports oslo libraries, so the
# modules autodoc imports take the same threading paths as the service.
import conductor  # noqa: E402,F401

# -- Project ---------------------------------------------------------------

project = "conductor"
author = "The conductor developers"
copyright = "The conductor developers"

# -- General ---------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "oslo_config.sphinxext",
]

master_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]
pygments_style = "sphinx"

# Document members in the order the source defines them, and show type
# hints in the description rather than in long signatures.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Show defaults as written (``lambda: False``), not as repr()s of objects.
autodoc_preserve_defaults = True

# -- HTML ------------------------------------------------------------------

html_theme = "alabaster"
html_title = "conductor documentation"
html_static_path = []
