"""Where alerts go: Slack incoming webhooks, PagerDuty Events API v2, and a signed JSON webhook.

Each destination turns one alert (or a group of alerts of one kind, sent as one
message with a count) into an HTTP request. URLs and keys are secrets: they are
``SecretStr`` here and never appear in logs or errors (:meth:`Destination.redactor`
removes them from anything a receiver answers).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timezone
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from spendstream.alerting.digest import DEFAULT_MAX_PER_HOUR
from spendstream.alerting.redact import Redactor
from spendstream.schemas.alert import Alert

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SIGNATURE_HEADER = "X-Spendstream-Signature"
TIMESTAMP_HEADER = "X-Spendstream-Timestamp"
_PD_SEVERITY = {"info": "info", "warning": "warning", "error": "error", "critical": "critical"}
_EMOJI = {"firing": ":rotating_light:", "resolved": ":white_check_mark:"}


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    body: bytes
    headers: dict[str, str]


class Destination(BaseModel):
    """One place alerts are delivered to; ``kind`` picks the format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: Literal["slack", "pagerduty", "webhook"]
    url: SecretStr | None = None              # Slack webhook URL / generic webhook URL / PagerDuty override
    routing_key: SecretStr | None = None      # PagerDuty integration key
    secret: SecretStr | None = None           # HMAC key for the generic webhook
    max_per_minute: int = Field(default=30, ge=1)
    max_per_hour: int = Field(default=DEFAULT_MAX_PER_HOUR, ge=1)  # Slack and webhooks: beyond it, one digest

    def requests(self, alerts: Sequence[Alert]) -> list[Request]:
        """The HTTP requests that deliver ``alerts`` (all of one kind and state)."""
        if self.kind == "slack":
            return [self._post(self._url(), slack_message(alerts))]
        if self.kind == "pagerduty":
            # PagerDuty deduplicates by key: one event per alert, trigger or resolve.
            url = self.url.get_secret_value() if self.url else PAGERDUTY_EVENTS_URL
            key = self.routing_key.get_secret_value() if self.routing_key else ""
            return [self._post(url, pagerduty_event(alert, key)) for alert in alerts]
        body = json.dumps({"alerts": [json.loads(a.model_dump_json()) for a in alerts], "count": len(alerts)},
                          sort_keys=True).encode()
        return [Request(self._url(), body, {"Content-Type": "application/json", **self._signature(body)})]

    def problem(self) -> str | None:
        """Why no request to this destination can succeed as configured (a missing URL or key, a URL
        that is not http(s)), or None. Safe to log: it never quotes a secret."""
        if self.kind in ("slack", "webhook") and self.url is None:
            return "no url is configured"
        if self.kind == "pagerduty" and self.routing_key is None:
            return "no routing_key is configured"
        if self.url is not None:
            problem = url_problem(self.url.get_secret_value())
            return self.redactor().redact(problem) if problem else None
        return None

    def redactor(self) -> Redactor:
        """Removes this destination's URL (and its parts), routing key and HMAC secret from text."""
        return Redactor.for_secrets(
            urls=[self.url.get_secret_value()] if self.url else [],
            keys=[s.get_secret_value() for s in (self.routing_key, self.secret) if s is not None])

    def _url(self) -> str:
        if self.url is None:
            raise ValueError(f"destination {self.name!r} needs a url")
        return self.url.get_secret_value()

    @staticmethod
    def _post(url: str, payload: dict) -> Request:
        return Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _signature(self, body: bytes) -> dict[str, str]:
        if self.secret is None:
            return {}
        timestamp = str(int(time.time()))
        return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: "sha256=" + sign(self.secret.get_secret_value(),
                                                                               timestamp, body)}


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be posted to (not http or https, no host), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the url is malformed"
    if not parts.scheme:
        return "the url does not start with http:// or https://"
    if parts.scheme not in ("http", "https"):
        # A short scheme is a typo worth showing ("htps"); a long one may be a pasted secret.
        shown = f" '{parts.scheme}'" if parts.scheme.isalnum() and len(parts.scheme) <= 8 else ""
        return f"the url's scheme{shown} is not http or https"
    if not parts.hostname:
        return "the url has no host"
    return None


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``<timestamp>.<body>``: what a receiver recomputes to trust a webhook."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def slack_message(alerts: Sequence[Alert]) -> dict:
    """A Block Kit message a person can read at a glance: what, where, how much, since when."""
    first = alerts[0]
    kinds = sorted({(a.kind, a.state) for a in alerts})
    if len(alerts) == 1:
        title = f"{_EMOJI.get(first.state, '')} {first.kind.replace('_', ' ')} {first.state}: {first.subject}"
    elif len(kinds) == 1:
        title = f"{_EMOJI.get(first.state, '')} {len(alerts)} {first.kind.replace('_', ' ')} alerts {first.state}"
    else:  # a digest: the hour's budget of messages is spent or about to be
        counts = ", ".join(f"{sum(1 for a in alerts if (a.kind, a.state) == k)} {k[0].replace('_', ' ')} {k[1]}"
                           for k in kinds)
        title = f":bell: digest of {len(alerts)} alerts: {counts}"
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    for alert in alerts[:10]:
        fields = [f"*Severity*\n{alert.severity}", f"*Window*\n{alert.window_start:%H:%M}–{alert.window_end:%H:%M} UTC"]
        if alert.observed is not None:
            fields.append(f"*Observed*\n{alert.observed.normalize():f}")
        if alert.expected is not None:
            fields.append(f"*Expected*\n{alert.expected.normalize():f}")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{alert.subject}*\n{alert.message}"},
                       "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
    if len(alerts) > 10:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                          "text": f"…and {len(alerts) - 10} more"}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"spendstream · {first.dedup_key}"}]})
    return {"text": title, "blocks": blocks}


def pagerduty_event(alert: Alert, routing_key: str) -> dict:
    """An Events API v2 trigger (firing) or resolve (resolved), deduplicated by the alert's key."""
    event = {"routing_key": routing_key, "dedup_key": alert.dedup_key,
             "event_action": "trigger" if alert.state == "firing" else "resolve"}
    if alert.state == "firing":
        event["payload"] = {
            "summary": f"{alert.kind.replace('_', ' ')}: {alert.subject} — {alert.message}"[:1024],
            "source": "spendstream", "severity": _PD_SEVERITY[alert.severity], "component": alert.subject,
            # when it happened: when it was seen (a window's end may be in the future: a budget's midnight)
            "group": alert.kind, "class": alert.kind,
            "timestamp": min(alert.created_at.replace(tzinfo=alert.created_at.tzinfo or timezone.utc),
                             alert.window_end).isoformat(),
            "custom_details": {"observed": str(alert.observed) if alert.observed is not None else None,
                               "expected": str(alert.expected) if alert.expected is not None else None,
                               "since": alert.window_start.isoformat(), "severity": alert.severity},
        }
    return event
