"""One incident per subject until it resolves: hysteresis and a minimum duration, as a pure state machine.

A detector decides, every pass, whether a subject is *hot* (over its threshold), *very
hot* (far over it) or *calm* (back under a lower threshold). :class:`Hysteresis` turns those
into at most two messages per incident:

- a subject hot on ``fire_after`` consecutive passes (or very hot once) opens an incident and
  fires it; one hot pass alone (a blip) only leaves it ``pending``, forgotten at the next pass
  that is not hot;
- while it fires, hot passes update it (peak, dollars) and send nothing: re-fires are the
  same incident, with the same ``dedup_key``. One exception: a hot pass whose severity is
  worse than the incident's *escalates* it, and its trigger is sent again, under the same
  key, at the new severity. A night abuse that opens at $3 in ten minutes (``warning``) and
  grows past the paging line reaches on-call; a destination that already has the trigger
  is not sent it again (:func:`~spendstream.alerting.delivery.store_new_alerts`);
- it resolves after enough consecutive calm passes, under that same key: ``resolve_after`` at
  least, and as many as it had hot passes while open, up to ``resolve_after_max``. A subject
  that was hot for half an hour or more must be calm for half an hour before it is told over;
  one that was hot for ten minutes, for ``resolve_after`` passes. A spike that dips and comes
  back, or a model switch calm between busy hours, is one incident (one trigger, one resolve),
  not one per wave; the price is a later resolve for the long ones (retry storms pass
  ``resolve_after_max=3``: :data:`spendstream.detect.retry_storm.HYSTERESIS` says why, and why a storm on a key
  that went silent waits ``patient_after`` passes). A pass
  that is neither hot nor calm (between the thresholds) keeps it firing and starts the calm
  count again.

The state survives restarts in ``detector_incidents`` (:mod:`spendstream.detect.state`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

Transition = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Incident:
    kind: str
    subject: str
    state: Literal["pending", "firing"]
    opened_at: datetime        # start of the first hot window: when it began, as far as the windows tell
    severity: str
    hot_passes: int = 1        # hot passes while open (pending or firing): how long it has been hot
    calm_passes: int = 0
    peak: float = 0.0          # the largest observed value while open (detector's unit)
    wasted_usd: float = 0.0    # dollars the detector attributes to the incident so far
    root: str = ""             # the dedup key of the incident this one is part of (detect/correlate.py); "": its own

    @property
    def dedup_key(self) -> str:
        return f"{self.kind}:{self.subject}:{self.opened_at:%Y-%m-%dT%H:%M}"


@dataclass(frozen=True, slots=True)
class Hysteresis:
    fire_after: int = 2
    resolve_after: int = 3
    resolve_after_max: int = 6  # passes: at the detectors' 5-minute passes, half an hour calm closes any incident
    patient_after: int | None = None  # the calm passes a patient pass needs (None: resolve_after_max)

    def calm_needed(self, incident: Incident, *, patient: bool = False) -> int:
        """The consecutive calm passes that resolve ``incident``: as many as its hot passes, within the bounds
        (``patient``: the most, or ``patient_after``)."""
        if patient:
            return self.resolve_after_max if self.patient_after is None else self.patient_after
        return max(self.resolve_after, min(incident.hot_passes, self.resolve_after_max))

    def step(self, current: Incident | None, *, kind: str, subject: str, hot: bool, very_hot: bool, calm: bool,
             onset: datetime, severity: str, observed: float = 0.0, wasted_usd: float = 0.0, patient: bool = False
             ) -> tuple[Incident | None, Transition | None]:
        """The subject's incident after this pass, and the message it sends (``firing``, ``resolved``) if any.

        ``onset`` is where this pass's window starts (kept as the incident's start when it opens);
        ``wasted_usd`` is added to the incident's dollars while it is open. ``patient``: this calm pass is calm only
        because the detector let go of a slower window that would have held it, or saw too little traffic to tell;
        it resolves after the most calm passes (``patient_after``), whatever its hot ones (its lull must outlast the
        longest wave the wait absorbs).
        """
        if current is None:
            if very_hot or (hot and self.fire_after <= 1):
                return Incident(kind, subject, "firing", onset, severity, 1, 0, observed, wasted_usd), "firing"
            if hot:
                return Incident(kind, subject, "pending", onset, severity, 1, 0, observed, wasted_usd), None
            return None, None
        grown = replace(current, peak=max(current.peak, observed), wasted_usd=current.wasted_usd + wasted_usd)
        if current.state == "pending":
            if not (hot or very_hot):
                return None, None  # a single hot pass: a blip, not an incident
            passes = current.hot_passes + 1
            if very_hot or passes >= self.fire_after:
                return replace(grown, state="firing", hot_passes=passes, severity=worse(current.severity, severity)
                               ), "firing"
            return replace(grown, hot_passes=passes), None
        if calm and not hot:
            calm_passes = current.calm_passes + 1
            if calm_passes >= self.calm_needed(current, patient=patient):
                return None, "resolved"
            return replace(grown, calm_passes=calm_passes), None
        if hot or very_hot:
            grown = replace(grown, hot_passes=current.hot_passes + 1)
        if (hot or very_hot) and worse(current.severity, severity) != current.severity:
            return replace(grown, calm_passes=0, severity=severity), "firing"  # escalated: the trigger again
        return replace(grown, calm_passes=0), None


_ORDER = ("info", "warning", "error", "critical")


def worse(a: str, b: str) -> str:
    """The worse of two severities."""
    return a if _ORDER.index(a) >= _ORDER.index(b) else b
