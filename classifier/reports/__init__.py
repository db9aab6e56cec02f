"""Evaluation reports of model bundles, for staff: import (`services`) and display data (`selectors`).

A bundle's ``report/`` folder (written by ``python -m ml evaluate`` / ``ml export``) is copied into
an `EvaluationReport` row: report.json and the text files (``*.md``, ``*.txt``, ``*.yaml``, ``*.csv``) as JSON, the known PNG figures through
Django storage. The admin shows it (classifier/admin/reports.py).
"""
