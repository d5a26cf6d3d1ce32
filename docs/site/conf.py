"""Sphinx configuration of the course's static site.

Used by :func:`bnlab.build.site.build_site` (``make site``), which runs Sphinx with this folder as the
configuration directory and a temporary source folder holding copies of the stored notebooks. Nothing here
reaches the network: the notebooks are never executed, MathJax 2 is served from the site's own ``_static``
(copied there from the ``jupyter-server-mathjax`` package) and the theme's assets are all bundled.
"""

project = "bnlab"
author = "the bnlab authors"
copyright = "the bnlab authors"
html_title = "bnlab — batch normalization, end to end"

extensions = ["myst_nb"]
root_doc = "notebooks/00_start_here"  # the lesson map; build_site writes index.html pointing to it
exclude_patterns = ["**/.ipynb_checkpoints"]

# -- notebooks: shown as stored ------------------------------------------------------------------------------
nb_execution_mode = "off"  # the lectures are executed by `bnlab build lectures`, never here
nb_ipywidgets_js = {}  # no widget state is stored; the default would load require.js from a CDN
nb_render_markdown_format = "myst"  # text/markdown outputs hold tables (and may hold math)
nb_output_stderr = "show"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # links such as 05_inference.ipynb#a-section resolve to the heading's anchor
# Sphinx wraps every math node in \( \) or \[ \]; MathJax 2 is told to look only for those (below), so the
# per-section "ignore" classes myst-parser adds for MathJax 3/4 are not needed.
myst_update_mathjax = False

# -- math: a local MathJax 2.7 -------------------------------------------------------------------------------
# A relative mathjax_path is relative to the built site's _static folder.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processEscapes": False, "processEnvironments": False, "processRefs": False},
    # The package ships only the STIX-Web web fonts (no image fonts); never look for locally installed fonts.
    # MathJax's fallback face "MathJax_Blank" has src url('about:blank'), which Chromium refuses with a console
    # error on every page; a local() source that never matches is the same missing font, without a request.
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None,
                 "styles": {"@font-face": {"font-family": "MathJax_Blank", "src": "local('MathJax_Blank')"}}},
    "messageStyle": "none",
}

# -- HTML ----------------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["bnlab-site.css"]
html_favicon = "_static/favicon.svg"  # (without one, browsers ask for /favicon.ico and get a 404)
# pydata-sphinx-theme reads the mode from the page; left empty it logs an error on every page
html_context = {"default_mode": "light"}
html_theme_options = {
    "home_page_in_toc": True,
    "use_download_button": True,  # the .ipynb of each page, from the site itself
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
html_show_sphinx = False
