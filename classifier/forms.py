"""HTML forms. They only collect input; checking an image's bytes is the service's job."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.core.files.uploadedfile import UploadedFile

from classifier.models import Classification

# What the file picker offers. The service decides from the decoded bytes, not from these.
ACCEPTED_TYPES = ",".join(
    [
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
        "image/avif",
        "image/heic",
        "image/heif",
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
        ".heic",
        ".heif",
    ]
)


def max_files_per_upload() -> int:
    # Django itself refuses requests with more files than this (TooManyFilesSent -> 400).
    return int(getattr(settings, "DATA_UPLOAD_MAX_NUMBER_FILES", None) or 20)


class MultipleFileInput(forms.ClearableFileInput):
    # Django 5 refuses `multiple` on a plain FileInput unless the widget says it can carry a list.
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """A file field whose cleaned value is the list of uploaded files.

    Per-file problems (empty, not an image, too large) are not raised here: the view hands every
    file to `classification_create`, which refuses bad ones one by one, so good files survive.
    """

    widget = MultipleFileInput

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"multiple": True, "accept": ACCEPTED_TYPES}))
        super().__init__(**kwargs)

    def to_python(self, data: Any) -> list[UploadedFile]:
        if not data:
            return []
        files = list(data) if isinstance(data, list | tuple) else [data]
        return [f for f in files if isinstance(f, UploadedFile)]

    def validate(self, value: list[UploadedFile]) -> None:
        if not value and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        files = self.to_python(data)
        self.validate(files)
        limit = max_files_per_upload()
        if len(files) > limit:
            raise forms.ValidationError(
                f"You selected {len(files)} files; upload at most {limit} at a time.", code="too_many"
            )
        return files


class UploadForm(forms.Form):
    images = MultipleImageField(
        label="Images",
        help_text="You can select several files at once.",  # the formats and limits are in the line below the box
        error_messages={"required": "Choose at least one image to classify."},
    )


def _time_zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


class DemoForm(forms.Form):
    """One image for the demo on the home page; the bytes are checked by classifier.demo."""

    image = forms.FileField(
        label="Image",
        allow_empty_file=True,  # refused with the upload's own message ("The file is empty...")
        widget=forms.ClearableFileInput(attrs={"accept": ACCEPTED_TYPES}),
        error_messages={"required": "Choose an image to try."},
    )


class HistoryFilterForm(forms.Form):
    """History filters. Dates are days in the browser's time zone (``tz``, filled in by app.js;
    UTC without JavaScript). An invalid field is ignored; the valid ones still filter."""

    q = forms.CharField(required=False, max_length=100, label="File name")
    label = forms.ChoiceField(required=False, label="Top class")
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *Classification.Status.choices], label="Status"
    )
    date_from = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))
    tz = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    def __init__(self, *args: Any, labels: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["label"].choices = [("", "Any class"), *((label, label) for label in labels or [])]

    def clean_tz(self) -> str:
        name = self.cleaned_data.get("tz") or ""
        return name if _time_zone(name) is not None else ""

    def filters(self) -> dict[str, Any]:
        """The filters for `classification_list`; empty or invalid values mean 'no filter'."""
        if not self.is_bound:
            return {}
        self.is_valid()  # fills cleaned_data with the fields that are valid
        data = self.cleaned_data
        filters: dict[str, Any] = {
            key: data[key].strip() for key in ("q", "label", "status") if data.get(key) and data[key].strip()
        }
        zone = _time_zone(data.get("tz") or "") or ZoneInfo("UTC")
        if data.get("date_from"):
            filters["created_after"] = datetime.combine(data["date_from"], time.min, tzinfo=zone)
        if data.get("date_to"):  # the whole "to" day is included
            filters["created_before"] = datetime.combine(data["date_to"] + timedelta(days=1), time.min, tzinfo=zone)
        return filters


class SignUpForm(UserCreationForm):
    # UserCreationForm runs AUTH_PASSWORD_VALIDATORS on the password.
    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username",)
