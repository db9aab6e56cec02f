"""The inference runtime: model bundles (`bundle`), untrusted image bytes (`images`) and running a
bundle in a worker process (`predictor`, with torch's thread counts and fork guard in `threads`).
It imports no Django, so `ml/`, benchmarks and tests use it without a database; import the
submodules directly (this package imports nothing heavy)."""
