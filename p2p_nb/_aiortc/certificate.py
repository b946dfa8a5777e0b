"""One DTLS certificate per app, and the fingerprint an SDP announces.

Why this module exists: the safety code is made from both ends' DTLS
fingerprints, and aiortc makes a new certificate for every
``RTCPeerConnection``; keeping one per app needs aiortc's private certificate
list. Unlike the other patches this one fails loudly if aiortc moves it (a
code that changes on every reconnect would teach users to ignore it), and
``tests/test_safety_code.py`` checks it against the installed aiortc."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from aiortc.rtcdtlstransport import RTCCertificate

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection


def sdp_fingerprint(sdp: str) -> str | None:
    """The DTLS certificate fingerprint an SDP announces (``sha-256 AB:CD:...``)."""
    for line in sdp.splitlines():
        if line.startswith("a=fingerprint:"):
            return line.split(":", 1)[1].strip().lower()
    return None


class StableCertificate:
    """One DTLS certificate for every connection an app makes.

    aiortc makes a new certificate per ``RTCPeerConnection``, so the
    fingerprints (and with them the safety code) would change on every
    reconnect, and users could not tell a reconnect from a man in the middle.
    With one certificate per app, a reconnect shows the same fingerprints and
    keeps its safety code; a new code means another certificate at the other
    end. aiortc's certificates last 30 days: a fresh one is made a day before.
    """

    RENEW_BEFORE = datetime.timedelta(days=1)

    def __init__(self) -> None:
        self._cert = RTCCertificate.generateCertificate()

    def current(self) -> RTCCertificate:
        now = datetime.datetime.now(datetime.UTC)
        if self._cert.expires - now < self.RENEW_BEFORE:
            self._cert = RTCCertificate.generateCertificate()
        return self._cert

    def apply(self, pc: RTCPeerConnection) -> None:
        """Make ``pc`` use the app's certificate (before any description is made).

        Reaches into aiortc's private ``__certificates`` list: raises
        ``RuntimeError`` if aiortc no longer has it, rather than silently
        falling back to a certificate per connection."""
        attr = "_RTCPeerConnection__certificates"
        certs = getattr(pc, attr, None)
        if not isinstance(certs, list) or not all(isinstance(c, RTCCertificate) for c in certs):
            raise RuntimeError(
                "aiortc's RTCPeerConnection no longer keeps its DTLS certificates in "
                f"{attr}: p2p_nb/_aiortc/certificate.py must be updated for this aiortc version"
            )
        setattr(pc, attr, [self.current()])
