"""Runtime backends: one module per backend, options in ``options``, selection in ``registry``."""
