"""Sphinx configuration for the fromage_optax documentation.

Build locally (from the repository root):

    python -m pip install -e ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import fromage_optax

project = "fromage_optax"
author = "fromage_optax developers"
copyright = "fromage_optax developers"
release = fromage_optax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# docs/results/ holds the benchmarks' outputs: pages include or link them, they are no pages.
exclude_patterns = ["_build", "results/**", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Keep optax's alias in signatures instead of expanding it into a long union.
autodoc_type_aliases = {"optax.ScalarOrSchedule": "optax.ScalarOrSchedule"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"fromage_optax {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
