"""Per-lecture computations behind figures and dashboards.

Each module (``forward`` for lecture 2, ...) holds the pure, tested data functions a lecture's figures,
checked cells and dashboards call, so the notebooks stay thin and every number they print is computed by
tested code.
"""
