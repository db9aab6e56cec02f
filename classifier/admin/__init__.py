"""Django admin: classifications (prediction history, the model bundle in use) and evaluation reports."""

from classifier.admin import classifications, reports  # noqa: F401  (register the ModelAdmins)
from classifier.evaluation import admin as evaluation  # noqa: F401  (model versions, feedback, operations)
