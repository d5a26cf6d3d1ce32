"""Everything the course generates from its sources: executed lectures, exercise masters, student versions,
shipped experiment results and the static site (``bnlab build lectures|masters|exercises|cache|site|all``).

Modules
-------
notebooks   the percent format (lectures and exercise masters), writing notebooks, building the lectures and
            the start page's lesson map
cache       the experiments' shipped default-grid runs
site        the static HTML site (Sphinx and myst-nb, imported only when it is built)
cli         the ``bnlab build`` command

The exercise masters and student versions are built by :mod:`bnlab.grading.authoring` and
:mod:`bnlab.grading.assign`, which add and strip the exercise markup. CONTRIBUTING.md draws the pipelines.
"""
