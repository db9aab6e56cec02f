"""Heatmaps after the answer: ``Classification.heatmaps_requested`` and ``Explanation.heatmaps_status``.

Rows from before were stored with their maps in one go: those with maps are ``ready``, the others
(bundles without an explain method) ``unavailable``.
"""

from django.db import migrations, models


def status_from_maps(apps, schema_editor):
    Explanation = apps.get_model("classifier", "Explanation")
    Explanation.objects.filter(heatmaps={}).update(heatmaps_status="unavailable")
    for row in Explanation.objects.exclude(heatmaps={}).only("pk", "heatmaps").iterator():
        if not (row.heatmaps or {}).get("maps"):
            Explanation.objects.filter(pk=row.pk).update(heatmaps_status="unavailable")


class Migration(migrations.Migration):
    dependencies = [("classifier", "0005_explanations")]

    operations = [
        migrations.AddField(
            model_name="classification",
            name="heatmaps_requested",
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name="explanation",
            name="heatmaps_status",
            field=models.CharField(
                choices=[
                    ("pending", "Being computed"),
                    ("ready", "Ready"),
                    ("not_requested", "Not requested"),
                    ("unavailable", "Unavailable"),
                ],
                default="ready",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="explanation",
            name="heatmaps_requested_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(status_from_maps, migrations.RunPython.noop),
    ]
