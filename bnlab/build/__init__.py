"""Everything the course generates from its sources: executed lectures, exercise masters, student versions,
shipped experiment results and the static site (``bnlab build lectures|masters|exercises|cache|site``)."""
