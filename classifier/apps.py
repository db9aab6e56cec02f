from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class ClassifierConfig(AppConfig):
    name = "classifier"
    verbose_name = "Image classifier"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        checks.register(check_job_deadlines)


def check_job_deadlines(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """The sweeper treats a job running longer than CLASSIFICATION_STUCK_AFTER_SECONDS as dead;
    that is only true if the task's hard time limit would have stopped it before then."""
    stuck_after = settings.CLASSIFICATION_STUCK_AFTER_SECONDS
    hard_limit = settings.CLASSIFY_TIME_LIMIT
    errors = []
    if stuck_after <= hard_limit:
        errors.append(
            checks.Error(
                f"CLASSIFICATION_STUCK_AFTER_SECONDS ({stuck_after}) must be larger than CLASSIFY_TIME_LIMIT "
                f"({hard_limit}), or the sweeper re-queues jobs that are still running.",
                id="classifier.E001",
            )
        )
    if not 0 < settings.CLASSIFY_SOFT_TIME_LIMIT < hard_limit:
        errors.append(
            checks.Error(
                "CLASSIFY_SOFT_TIME_LIMIT must be positive and below CLASSIFY_TIME_LIMIT.", id="classifier.E002"
            )
        )
    return errors
