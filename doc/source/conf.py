"""Sphinx configuration of the conductor documentation.

Build with ``tox -e docs``, or by hand::

    sphinx-build -W --keep-going -b html doc/source doc/build/html

Warnings are errors: a page that does not render cleanly fails the build.
"""

import os
import re
import sys

# NOTE: autodoc imports the package; an installed conductor (tox installs
# it) wins, but a plain checkout works too.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                "..", "..")))

# NOTE: what every entry point does first: select oslo.service's threading
# backend and refuse eventlet, so that the modules autodoc imports (futurist
# through conductor.periodics) take the same threading paths as in the
# service instead of importing eventlet when it happens to be installed.
import conductor.cmd  # noqa: E402,F401

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

# NOTE: a few docstrings under conductor/ still cite design notes that are
# not part of the repository ("(DESIGN.md section 6)"). Until they are
# reworded, leave those citations out of the rendered pages; nothing else
# in a docstring is changed. Remove this hook once no docstring matches.
_DESIGN_NOTE = re.compile(r"\s*\((?:see )?(?:DESIGN|PITFALLS)\.md[^)]*\)")


def _drop_design_note_citations(app, what, name, obj, options, lines):
    lines[:] = [_DESIGN_NOTE.sub("", line) for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _drop_design_note_citations)


# -- HTML ------------------------------------------------------------------

html_theme = "alabaster"
html_title = "conductor documentation"
html_static_path = []
