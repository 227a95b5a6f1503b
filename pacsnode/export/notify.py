"""Critical-finding alerts: the JSON a ``[[notify]]`` receiver gets, and its HTTP POST.

The payload names the study and the film and says what was found; the accession number is
the one value of the patient's record it carries, so that the receiver can open the study.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPException, responses
from pathlib import Path
from typing import Any, Final

from pacsnode.analysis.readout import Flag, ReadOut
from pacsnode.config.settings import NotifyTarget
from pacsnode.durable import write_durably

__all__ = [
    "NOTIFY_KIND",
    "PAYLOAD_FORMAT",
    "PostResult",
    "alert_file",
    "alert_payload",
    "post_alert",
    "read_accession_number",
    "screened_values",
    "write_alert",
]

log = logging.getLogger(__name__)

NOTIFY_KIND: Final = "notify"
"""The delivery kind of an alert, beside the result objects' ``seg``, ``sr``..."""

PAYLOAD_FORMAT: Final = "pacsnode.alert/1"
"""The payload's ``format``; changes that a receiver must know of get a new number."""

# 408 and 429 say "not now", not "never": the only 4xx worth trying again.
_RETRY_4XX: Final = frozenset({408, 429})
_BODY_CHARS: Final = 200
_SPACES: Final = re.compile(r"\s+")


@dataclass(frozen=True)
class PostResult:
    """How one POST went; the attributes the delivery loop reads of a C-STORE's too.

    Attributes
    ----------
    ok
        The receiver answered 2xx: it has the alert.
    status
        The HTTP status it answered, or None without an answer (refused, timed out).
    detail
        A sentence for the audit log and the administrator.
    retryable
        Worth trying again later: no answer, 5xx, 408 or 429; not another 4xx, nor a
        redirect (the URL is wrong, and a re-send will not change it).
    """

    ok: bool
    status: int | None
    detail: str
    retryable: bool = True


def alert_file(directory: Path, target: str) -> Path:
    """Where the alert for the receiver called ``target`` is written, beside the film's
    result objects."""
    return directory / f"notify-{target}.json"


def alert_payload(
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    accession_number: str | None,
    readout: ReadOut,
    flags: Sequence[Flag],
    results: Mapping[str, str],
    model_version: str,
) -> dict[str, Any]:
    """The JSON object POSTed to a receiver (see ``docs/node.md``).

    Parameters
    ----------
    study_instance_uid, series_instance_uid, sop_instance_uid
        Of the film read.
    accession_number
        The film's, or None when it has none.
    readout
        The film's read-out; its impression goes with the findings.
    flags
        The findings this receiver asked for (its ``on``).
    results
        The result objects made of the film: kind (``seg``, ``sr``...) to SOP Instance UID.
    model_version
        The model stack that read it.
    """
    return {
        "format": PAYLOAD_FORMAT,
        "study_instance_uid": study_instance_uid,
        "series_instance_uid": series_instance_uid,
        "sop_instance_uid": sop_instance_uid,
        "accession_number": accession_number,
        "findings": [
            {"kind": f.kind, "level": f.level, "severity": f.severity, "text": f.text}
            for f in flags
        ],
        "impression": readout.impression,
        "results": dict(results),
        "model_version": model_version,
    }


def write_alert(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as UTF-8 JSON to ``path`` durably: queued only once on disk."""
    text = json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    write_durably(path, text.encode("utf-8"))


def read_accession_number(film: Path) -> str | None:
    """The film's Accession Number (0008,0050), or None when it has none; the pixels are
    not read."""
    from pydicom import dcmread

    header = dcmread(film, stop_before_pixels=True, specific_tags=["AccessionNumber"])
    value = str(header.get("AccessionNumber") or "").strip()
    return value or None


def screened_values(path: Path) -> Iterable[str]:
    """The patient values an alert file holds (its accession number), for a
    :class:`~pacsnode.audit.PatientScreen`: a receiver may quote the payload back in an
    error. Never raises."""
    try:
        payload = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return ()
    value = payload.get("accession_number") if isinstance(payload, dict) else None
    return (value,) if isinstance(value, str) and value else ()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without the body and call it sent.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect)


def _opener_trusting(ca_certificates: Path) -> urllib.request.OpenerDirector:
    """An opener that verifies https receivers against ``ca_certificates`` (PEM) and their
    host name, and follows no redirect."""
    context = ssl.create_default_context(cafile=str(ca_certificates))
    return urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))


def post_alert(path: Path, target: NotifyTarget) -> PostResult:
    """POST the alert file at ``path`` to ``target``'s URL, once.

    Raises
    ------
    OSError
        The alert file cannot be read.
    """
    body = path.read_bytes()
    request = urllib.request.Request(target.url, data=body, method="POST")
    for name, value in target.headers:
        request.add_header(name, value)
    request.add_header("Content-Type", "application/json")
    opener = _OPENER
    if target.ca_certificates is not None:
        try:
            opener = _opener_trusting(target.ca_certificates)
        except OSError as error:  # ssl.SSLError too: the file went or changed since start
            reason = getattr(error, "strerror", None) or str(error)
            return PostResult(
                False,
                None,
                f"{target.name}: CA certificates {target.ca_certificates} cannot be loaded "
                f"({reason})",
            )
    try:
        with opener.open(request, timeout=target.timeout_seconds) as response:
            status = response.status
            response.read(_BODY_CHARS)  # a server may wait for its answer to be read
    except urllib.error.HTTPError as error:
        status = error.code
        detail = f"{target.name} answered HTTP {status} {_reason(status)}"
        text = _body(error)
        if text:
            detail += f": {text}"
        if 300 <= status < 400:
            detail += " (a redirect: give the final URL)"
        retryable = status >= 500 or status in _RETRY_4XX
        return PostResult(False, status, detail, retryable)
    except urllib.error.URLError as error:
        return PostResult(False, None, f"{target.name} not reached: {error.reason}")
    except (TimeoutError, ConnectionError, HTTPException, OSError) as error:
        reason = str(error) or type(error).__name__
        return PostResult(False, None, f"{target.name} not reached: {reason}")
    if 200 <= status < 300:
        return PostResult(True, status, f"{target.name} answered HTTP {status}", False)
    # 1xx from urllib should not happen; anything else unexpected is worth a retry.
    return PostResult(False, status, f"{target.name} answered HTTP {status} {_reason(status)}")


def _reason(status: int) -> str:
    return responses.get(status, "")


def _body(error: urllib.error.HTTPError) -> str:
    """The start of an error response's body, on one line."""
    try:
        raw = error.read(_BODY_CHARS * 4)
    except (OSError, HTTPException):
        return ""
    text = _SPACES.sub(" ", raw.decode("utf-8", "replace")).strip()
    return text if len(text) <= _BODY_CHARS else text[: _BODY_CHARS - 1] + "…"
