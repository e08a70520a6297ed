"""The HTTP transport of the registry client: one session, timeouts, retries, sane errors.

What is retried (with exponential backoff, honouring ``Retry-After`` up to a cap, and
within a bounded number of attempts and a bounded total time):

* a request that could not be sent or answered: connection refused or reset, timeouts;
* an answer with a transient status: 429 and 5xx;
* a transfer that failed after the answer began: :class:`TransientError`, raised by the
  callers of :meth:`Transport.retrying` for a body cut short or reset while it was read, and
  for bytes that do not hash to the digest that named them.

When the transport gives up, the error is one line naming the registry, the operation and
the last cause.  Error bodies from a registry are only ever quoted, short and sanitised;
credentials are never part of a message (they live in headers, which are never printed).

This is the only module that imports ``requests``, and only the registry client imports it.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import requests

from pkgtool.errors import PkgtoolError, RegistryError
from pkgtool.oci.manifest import looks_like_html

INSECURE_ENV = "PKGTOOL_INSECURE_REGISTRIES"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Error bodies are only ever quoted, never trusted: read a little, show less.
MAX_ERROR_BODY = 64 * 1024
MAX_ERROR_TEXT = 200
# However many attempts are left, a transfer is not retried past this much wall time.
DEFAULT_MAX_TOTAL_SECONDS = 600.0

T = TypeVar("T")


class TransientError(PkgtoolError):
    """A failure worth another attempt: the transfer broke, or its bytes did not verify.

    ``cause`` is the short reason shown if the last attempt fails too, raised then as
    ``final`` (a digest mismatch stays a :class:`DigestMismatchError`); ``retry_after`` is the
    server's ``Retry-After`` when it sent one.
    """

    def __init__(self, cause: str, *, retry_after: str | None = None,
                 final: type[PkgtoolError] = RegistryError) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after
        self.final = final


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: ``retries`` more attempts after the first, waits of
    ``backoff * 2**n`` seconds (at least what ``Retry-After`` asks, at most ``max_backoff``),
    and never past ``max_total`` seconds from the first attempt."""

    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_total: float = DEFAULT_MAX_TOTAL_SECONDS

    @property
    def attempts(self) -> int:
        return max(0, self.retries) + 1

    def delay(self, attempt: int, retry_after: str | None) -> float:
        delay: float = max(0.0, self.backoff) * (2 ** attempt)
        if retry_after:
            asked = parse_retry_after(retry_after)
            if asked is not None:
                delay = max(delay, asked)
        # A hostile or confused Retry-After must not stall us for an hour.
        return min(delay, max(0.0, self.max_backoff))


class Transport:
    """An HTTP session plus the retry policy and timeouts; safe to use from several threads
    (``requests.Session`` pools connections per host) and shared by sibling clients."""

    def __init__(self, *, policy: RetryPolicy, timeout: float, connect_timeout: float,
                 pool_size: int = 16) -> None:
        self.policy = policy
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        session = requests.Session()
        # Our own retry loop decides what is transient; the adapter's must stay off.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = "pkgtool"
        self.session = session

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ retries

    def retrying(self, registry: str, operation: str, attempt: Callable[[int], T]) -> T:
        """Run ``attempt(n)`` until it returns, retrying on :class:`TransientError`.

        ``attempt`` gets the attempt number (0 first), so that it can resume where the last
        one stopped.  Any other error ends the loop at once.
        """
        policy = self.policy
        started = time.monotonic()
        for n in range(policy.attempts):
            try:
                return attempt(n)
            except TransientError as exc:
                wait = policy.delay(n, exc.retry_after)
                out_of_time = time.monotonic() - started + wait > policy.max_total
                if n + 1 >= policy.attempts or out_of_time:
                    tries = f"{n + 1} attempt{'s' if n else ''}"
                    raise exc.final(
                        f"registry {registry}: {operation}: {exc.cause} (gave up after {tries})"
                    ) from None
                time.sleep(wait)
        raise AssertionError("unreachable")  # the loop always returns or raises

    # ------------------------------------------------------------------ requests

    def send(
        self,
        method: str,
        url: str,
        *,
        registry: str,
        operation: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        data: bytes | BinaryIO | None = None,
        auth_pair: tuple[str, str] | None = None,
        retry: bool = True,
    ) -> requests.Response:
        """Send one request, retrying connection faults and transient statuses.

        The answer's body is not read (``stream=True``); the caller closes the response.
        With ``retry`` off, a transient fault is raised as :class:`TransientError` for the
        caller's own :meth:`retrying` loop (uploads restart their whole session).
        """
        start = data.tell() if data is not None and not isinstance(data, bytes) else None

        def attempt(n: int) -> requests.Response:
            if start is not None and n:
                # A retried upload must send the body from its beginning again.
                assert data is not None and not isinstance(data, bytes)
                data.seek(start)
            try:
                response = self.session.request(
                    method, url, headers=headers, params=params, data=data, stream=True,
                    timeout=(self.connect_timeout, self.timeout), auth=auth_pair,
                )
            except requests.exceptions.SSLError as exc:
                raise RegistryError(
                    f"registry {registry}: TLS failed ({operation}): {reason(exc)}; "
                    f"for a plain-HTTP registry add it to ${INSECURE_ENV}"
                ) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientError(f"cannot connect: {reason(exc)}") from None
            except requests.RequestException as exc:
                raise RegistryError(f"registry {registry}: {operation}: {reason(exc)}") from None
            if response.status_code in RETRY_STATUSES:
                response.close()
                status = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
                raise TransientError(status, retry_after=response.headers.get("Retry-After"))
            return response

        return self.retrying(registry, operation, attempt) if retry else attempt(0)

    # ------------------------------------------------------------------ answers

    def read_bounded(
        self, response: requests.Response, limit: int, *, registry: str, operation: str, what: str,
        truncate: bool = False,
    ) -> bytes:
        """The whole body, refusing more than ``limit`` bytes (or cutting it there).

        A body that breaks off while it is read is a :class:`TransientError`.
        """
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                total += len(chunk)
                if total > limit:
                    if truncate:
                        parts.append(chunk)
                        break
                    raise RegistryError(f"registry {registry}: {operation}: {what} is over the {limit}-byte limit")
                parts.append(chunk)
        except requests.RequestException as exc:
            raise TransientError(f"reading the answer failed after {total} bytes ({reason(exc)})") from None
        return b"".join(parts)[: limit if truncate else None]

    def expect(self, response: requests.Response, ok: tuple[int, ...], *, registry: str, operation: str) -> None:
        """Raise a one-line error quoting the registry's answer unless the status is ``ok``."""
        if response.status_code in ok:
            return
        detail = self._error_detail(response, registry=registry)
        response.close()
        raise RegistryError(f"registry {registry}: {operation}: HTTP {response.status_code}{detail}")

    def _error_detail(self, response: requests.Response, *, registry: str) -> str:
        try:
            body = self.read_bounded(response, MAX_ERROR_BODY, registry=registry, operation="error",
                                     what="error", truncate=True)
        except PkgtoolError:
            return ""
        if content_type(response) == "text/html" or looks_like_html(body):
            return " (an HTML page: is this really a registry?)"
        return f" ({short_error(body)})" if body.strip() else ""


# --------------------------------------------------------------------------- pure helpers


def content_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def parse_retry_after(value: str) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date)."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def short_error(body: bytes) -> str:
    """A registry's error answer as one short line: ``CODE: message`` when it is the
    distribution JSON error format, else the start of the text, sanitised."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list) and doc["errors"]:
        first = doc["errors"][0]
        if isinstance(first, dict):
            text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
            return printable(text)
    return printable(body.decode("utf-8", "replace"))


def printable(text: str) -> str:
    """``text`` on one line, control characters blanked, at most :data:`MAX_ERROR_TEXT` long."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat[:MAX_ERROR_TEXT] + ("…" if len(flat) > MAX_ERROR_TEXT else "")


_REASONS = (
    ("connection refused", "connection refused"),
    ("name or service not known", "unknown host"),
    ("temporary failure in name resolution", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network is unreachable"),
    ("connection reset", "connection reset"),
    ("incompleteread", "the answer was cut short"),
    ("protocolerror", "the connection broke"),
    ("remotedisconnected", "connection closed by the server"),
    ("connection aborted", "connection closed by the server"),
    ("timed out", "timed out"),
    ("certificate verify failed", "certificate verify failed"),
    ("wrong version number", "the server does not speak TLS"),
)


def reason(exc: BaseException) -> str:
    """A short, lowercase cause for a requests exception (they nest urllib3's verbosely)."""
    text = str(exc).lower().replace(" ", "")
    spaced = str(exc).lower()
    for needle, short in _REASONS:
        if needle in spaced or needle.replace(" ", "") in text:
            return short
    return printable(str(exc))[:120] or type(exc).__name__
