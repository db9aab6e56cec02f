"""Upload throttles shared by the REST API and the HTML upload form.

Both paths count against the same budgets: one per user (the API's ScopedRateThrottle and
`UploadUserThrottle` share its cache key) and one per client IP address, so neither many requests from one account nor many accounts from one address get
past them. Rates are ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` entries:

* ``classification_create``: per user (authenticated), e.g. ``"120/min"``;
* ``classification_create_ip``: per client IP, whoever is logged in.

The client IP is DRF's ``get_ident``: ``REMOTE_ADDR``, or the address ``NUM_PROXIES`` hops back in
``X-Forwarded-For`` when the app sits behind that many trusted proxies. With ``NUM_PROXIES`` unset
DRF would trust the whole (client-controlled) header, so the settings always set it.

The counters live in the default cache; with several web processes that cache must be shared
(Redis), or each process counts on its own.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle


class _SharedRateThrottle(SimpleRateThrottle):
    """Reads its rate from the rate table of DRF's ScopedRateThrottle (which the API view also
    uses for the per-user budget), so one table governs the API and the form alike."""

    cost = 1  # budget units this request takes: one per image it uploads

    def __init__(self, cost: int = 1) -> None:
        super().__init__()
        self.cost = max(1, int(cost))

    def get_rate(self) -> str | None:
        return ScopedRateThrottle.THROTTLE_RATES.get(self.scope)

    def allow_request(self, request: Any, view: Any) -> bool:
        """DRF's sliding window, with a request of ``cost`` images counted ``cost`` times: a batch of
        20 images spends what 20 single uploads would."""
        if self.cost == 1:
            return super().allow_request(request, view)
        if self.rate is None or (key := self.get_cache_key(request, view)) is None:
            return True
        self.key, self.now = key, self.timer()
        self.history = [t for t in self.cache.get(key, []) if t > self.now - self.duration]
        if len(self.history) + self.cost > self.num_requests:
            return self.throttle_failure()
        self.history[:0] = [self.now] * self.cost
        self.cache.set(key, self.history, self.duration)
        return True


class UploadUserThrottle(_SharedRateThrottle):
    """The HTML form's twin of the API's ScopedRateThrottle(scope="classification_create")."""

    scope = "classification_create"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        if not request.user.is_authenticated:
            return None  # anonymous uploads are refused before this matters; the IP throttle still counts
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class UploadIPThrottle(_SharedRateThrottle):
    scope = "classification_create_ip"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


UPLOAD_THROTTLES = (UploadUserThrottle, UploadIPThrottle)


def upload_throttle_wait(request: HttpRequest, cost: int = 1) -> float | None:
    """For the HTML view: None when the upload may go ahead, else seconds to wait.

    Every throttle is asked (and so records the request), like DRF's own check_throttles.
    """
    waits = []
    for throttle_class in UPLOAD_THROTTLES:
        throttle = throttle_class(cost)
        if not throttle.allow_request(request, None):
            waits.append(throttle.wait() or 1.0)
    return max(waits) if waits else None
