"""Continuous evaluation: model versions (champion/challenger), user feedback, live accuracy and
drift, the operations page and streaming CSV exports.

* `models`: ModelVersion (one row per bundle version), Feedback (one per user and job),
  ShadowPrediction (what a challenger bundle said about a job; never shown to users).
* `services`: registering and linking versions, feedback writes, the challenger run.
* `selectors`: live evaluation, champion against challenger, drift, operations figures.
* `stats`: the statistics (Wilson interval, McNemar's exact test, chi-square, PSI) on plain arrays.
* `plots`: matplotlib (Agg) PNGs for the admin pages; `exports`: streaming CSV.
* `api`, `views`, `admin`: the REST endpoints, the result-page form, the staff pages.
"""
