"""Sphinx configuration of the sklearn-slimtrain documentation.

Build with ``make docs`` (warnings are errors).  The build makes no network access:
no intersphinx, and sphinx-gallery links only into these pages.  MathJax is loaded by
the reader's browser when a page is viewed.
"""

import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # import the checkout, also without an installed package

import torch

import sklearn_slimtrain

# The examples run in this process.  Their networks are tiny (widths 16-64, batches of
# 16-32 rows), where torch's intra-op threads only add overhead, and on a busy machine
# (CI, a laptop running tests) they oversubscribe the cores: one thread is faster.
torch.set_num_threads(1)

project = "sklearn-slimtrain"
author = "sklearn-slimtrain developers"
copyright = "sklearn-slimtrain developers"
release = sklearn_slimtrain.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

# `x` (single backticks) is code, as in scikit-learn's docstrings
default_role = "literal"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
# auto_examples/ and generated/ are written by the build (sphinx-gallery, autosummary)
# and are part of the site: they are git-ignored, not excluded here.
exclude_patterns = ["_build", "_templates", "Thumbs.db", ".DS_Store"]

# --- API reference ---------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types
# numpydoc would add an autosummary table of every member, inherited ones included
# (scikit-learn's and torch's), without stub pages for them: the class template lists
# the members instead.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False


# --- Markdown pages (MyST) -----------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# --- No network during the build ---------------------------------------------------
# No intersphinx (it downloads other projects' inventories), so sphinx-gallery links the
# examples' code only to these pages.
intersphinx_mapping = {}

# --- Gallery -------------------------------------------------------------------------
# Every file listed here is a gallery example and is executed at each build; any other
# Python file under examples/ (helper scripts, optional integrations) stays out.
GALLERY_EXAMPLES = [
    "plot_peaks.py",
    "plot_pde_surrogate.py",
    "plot_grid_search.py",
    "streaming_partial_fit.py",
    "custom_module.py",
    "demo_peaks.py",
    "plot_autoencoder.py",
    "plot_stik_fixed_features.py",
]
_names = "|".join(re.escape(name) for name in GALLERY_EXAMPLES)

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # matched against the file's path (execution) and its bare name (collection)
    "filename_pattern": rf"(^|[\\/])({_names})$",
    "ignore_pattern": rf"^(?!(.*[\\/])?({_names})$)",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("sklearn_slimtrain",),
    "backreferences_dir": os.path.join("generated", "backreferences"),
    "remove_config_comments": True,
    "download_all_examples": False,
    "plot_gallery": "True",
    "abort_on_example_error": False,
    "min_reported_time": 1,
}

# --- HTML ------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn-slimtrain {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False


def _skip_member(app, what, name, obj, skip, options):
    """Leave scikit-learn's metadata-routing methods to scikit-learn's documentation."""
    if name == "get_metadata_routing" or re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
