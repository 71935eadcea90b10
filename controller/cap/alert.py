"""OASIS CAP 1.2 ingest: parse safely, validate, map onto our areas and priorities.

Parsing uses defusedxml: DTDs, entity declarations and external references are refused, so
an entity-expansion bomb or an XXE cannot run; documents over ``MAX_CAP_BYTES`` are refused
before parsing.

An enveloped XML-DSig ``<Signature>`` (CAP 1.2 §3.3.2.1) is verified with signxml against
the issuers' certificates the operator trusts (:func:`verify_signature`). Only a signature
over the whole ``<alert>`` counts, and the alert is then read from the bytes that were
verified, so nothing outside the signature can change what airs.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

__all__ = [
    "CAP_NS",
    "DEFAULT_PRIORITY_RULES",
    "MAX_CAP_BYTES",
    "CapAlert",
    "CapArea",
    "CapError",
    "CapInfo",
    "CapResource",
    "SignatureError",
    "ack_xml",
    "error_xml",
    "heading",
    "map_priority",
    "parse_cap",
    "verify_signature",
]

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
#: a headline longer than this is not read as an emergency's first words (it would delay
#: them); the event is, and the headline follows with the rest
LEAD_MAX_CHARS = 160
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
MAX_CAP_BYTES = 512 * 1024
_N = "{" + CAP_NS + "}"

STATUS = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
SCOPES = ("Public", "Restricted", "Private")
URGENCY = ("Immediate", "Expected", "Future", "Past", "Unknown")
SEVERITY = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
CERTAINTY = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")

#: first matching rule wins; "*" matches anything. Configurable (LOA_CAP_PRIORITY_RULES).
DEFAULT_PRIORITY_RULES: list[dict[str, Any]] = [
    {"urgency": ["Immediate", "Expected"], "severity": ["Extreme", "Severe"],
     "certainty": ["Observed", "Likely"], "priority": "emergency"},
    {"urgency": ["Immediate", "Expected", "Future"], "severity": ["Extreme", "Severe", "Moderate"],
     "certainty": "*", "priority": "priority"},
    {"urgency": "*", "severity": "*", "certainty": "*", "priority": "normal"},
]


class CapError(ValueError):
    pass


class SignatureError(CapError):
    pass


def verify_signature(data: bytes, trusted_pem: list[bytes]) -> tuple[bytes, str]:
    """Verify the alert's enveloped XML-DSig against each trusted certificate in turn.

    Returns the verified alert (serialised from what the signature covers) and the signer's
    subject. Raises SignatureError when there is no signature, when it does not verify
    against any trusted certificate, or when it covers anything but the whole alert.
    Call only after :func:`parse_cap` accepted ``data`` (no DTD, no entities, size limit)."""
    from cryptography import x509
    from lxml import etree
    from signxml import XMLVerifier
    from signxml.exceptions import InvalidInput, InvalidSignature

    if not trusted_pem:
        raise SignatureError("no trusted signer certificates are configured")
    errors = []
    for pem in trusted_pem:
        try:
            result = XMLVerifier().verify(data, x509_cert=pem.decode())
        except (InvalidSignature, InvalidInput) as exc:
            errors.append(str(exc))
            continue
        if isinstance(result, list):  # several references: only the whole alert counts
            raise SignatureError("the signature covers more than the <alert>")
        signed = result.signed_xml
        if signed is None or etree.QName(signed).localname != "alert" or \
                etree.QName(signed).namespace != CAP_NS:
            raise SignatureError("the signature does not cover the whole <alert>")
        subject = x509.load_pem_x509_certificate(pem).subject.rfc4514_string()
        return etree.tostring(signed), subject
    raise SignatureError("the signature does not verify against any trusted certificate"
                         + (f" ({errors[0]})" if errors else ""))


@dataclass
class CapArea:
    desc: str
    geocodes: list[tuple[str, str]] = field(default_factory=list)
    #: each a closed ring of (lat, lon) points (WGS 84), as CAP writes them
    polygons: list[list[tuple[float, float]]] = field(default_factory=list)
    #: each (lat, lon, radius in km)
    circles: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def has_shape(self) -> bool:
        return bool(self.polygons or self.circles)


@dataclass
class CapResource:
    """An ``<resource>``: its bytes inline (``derefUri``) or where to fetch them (``uri``)."""

    desc: str
    mime: str
    uri: str | None = None
    data: bytes | None = None
    size: int | None = None
    #: SHA-1 of the file, hex (CAP 1.2 §3.2.3 ``<digest>``)
    digest: str | None = None

    @property
    def is_audio(self) -> bool:
        return self.mime.lower().startswith("audio/")


@dataclass
class CapInfo:
    language: str
    event: str
    urgency: str
    severity: str
    certainty: str
    headline: str | None
    description: str | None
    instruction: str | None
    expires: datetime | None
    onset: datetime | None
    areas: list[CapArea]
    resources: list[CapResource] = field(default_factory=list)

    def text(self) -> str:
        """Everything it says, headline first (what TTS reads when it airs in one part)."""
        return _sentences(self.headline, self.description, self.instruction) or self.event

    def lead(self) -> str:
        """What is said first, at once: the headline (CAP asks for under 160 characters),
        else the event."""
        headline = (self.headline or "").strip()
        return headline if 0 < len(headline) <= LEAD_MAX_CHARS else self.event.strip()

    def rest(self) -> str:
        """What follows the lead: description and instruction (and a headline too long
        to be the lead)."""
        headline = self.headline if self.lead() != (self.headline or "").strip() else None
        return _sentences(headline, self.description, self.instruction)

    @property
    def recording(self) -> CapResource | None:
        """The first audio resource, if the info carries one."""
        return next((r for r in self.resources if r.is_audio), None)


def _sentences(*parts: str | None) -> str:
    kept = [p.strip().rstrip(".") for p in parts if p and p.strip()]
    return ". ".join(kept) + "." if kept else ""


@dataclass
class CapAlert:
    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    scope: str
    references: list[str]
    infos: list[CapInfo]
    signed: bool

    @property
    def ref(self) -> str:
        return f"{self.sender},{self.identifier},{_cap_time(self.sent)}"


def _cap_time(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds")


def _text(el: Element, name: str, required: bool = False, where: str = "alert") -> str | None:
    child = el.find(_N + name)
    value = child.text.strip() if child is not None and child.text else None
    if required and not value:
        raise CapError(f"<{name}> is required in <{where}>")
    return value


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise CapError(f"<{name}> is not a CAP date-time: {value!r}") from None
    if dt.tzinfo is None:
        raise CapError(f"<{name}> must carry a time-zone offset: {value!r}")
    return dt


def _enum(value: str | None, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise CapError(f"<{name}> must be one of {', '.join(allowed)}, not {value!r}")
    return value


def parse_cap(data: bytes) -> CapAlert:
    """Parse and validate a CAP 1.2 alert; raises CapError with a clear message."""
    if len(data) > MAX_CAP_BYTES:
        raise CapError(f"the document is {len(data)} bytes; the limit is {MAX_CAP_BYTES}")
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise CapError(f"refused unsafe XML ({type(exc).__name__}): DTDs, entities and "
                       "external references are not allowed") from None
    except ParseError as exc:
        raise CapError(f"malformed XML: {exc}") from None
    if root.tag != _N + "alert":
        ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else "(none)"
        raise CapError(f"not a CAP 1.2 alert: root <{root.tag.split('}')[-1]}> in namespace "
                       f"{ns}; expected <alert> in {CAP_NS}")
    identifier = _text(root, "identifier", True)
    sender = _text(root, "sender", True)
    sent = _time(_text(root, "sent", True), "sent")
    status = _enum(_text(root, "status", True), STATUS, "status")
    msg_type = _enum(_text(root, "msgType", True), MSG_TYPES, "msgType")
    scope = _enum(_text(root, "scope", True), SCOPES, "scope")
    references = (_text(root, "references") or "").split()
    if msg_type in ("Update", "Cancel", "Ack", "Error") and not references:
        raise CapError(f"a {msg_type} must name the alert(s) it refers to in <references>")
    infos = []
    for i, el in enumerate(root.findall(_N + "info")):
        where = f"info[{i}]"
        areas = [_area(a, f"{where}/area[{j}]") for j, a in enumerate(el.findall(_N + "area"))]
        resources = [_resource(r, f"{where}/resource[{j}]")
                     for j, r in enumerate(el.findall(_N + "resource"))]
        infos.append(CapInfo(
            language=_text(el, "language") or "en-US",
            event=_text(el, "event", True, where) or "",
            urgency=_enum(_text(el, "urgency", True, where), URGENCY, "urgency"),
            severity=_enum(_text(el, "severity", True, where), SEVERITY, "severity"),
            certainty=_enum(_text(el, "certainty", True, where), CERTAINTY, "certainty"),
            headline=_text(el, "headline"), description=_text(el, "description"),
            instruction=_text(el, "instruction"),
            expires=_time(_text(el, "expires"), "expires"),
            onset=_time(_text(el, "onset"), "onset"), areas=areas, resources=resources,
        ))
        if not el.findall(_N + "category"):
            raise CapError(f"<category> is required in <{where}>")
    if msg_type in ("Alert", "Update") and not infos:
        raise CapError(f"a {msg_type} needs at least one <info>")
    signed = root.find("{" + DSIG_NS + "}Signature") is not None
    return CapAlert(identifier or "", sender or "", sent, status, msg_type,  # type: ignore[arg-type]
                    scope, references, infos, signed)


def _area(a: Element, where: str) -> CapArea:
    desc = _text(a, "areaDesc", True, where) or ""
    codes = [(_text(g, "valueName") or "", _text(g, "value") or "")
             for g in a.findall(_N + "geocode")]
    polygons = [_polygon(p.text or "", f"{where}/polygon") for p in a.findall(_N + "polygon")]
    circles = [_circle(c.text or "", f"{where}/circle") for c in a.findall(_N + "circle")]
    return CapArea(desc, codes, polygons, circles)


def _point(pair: str, where: str) -> tuple[float, float]:
    try:
        lat_s, lon_s = pair.split(",")
        lat, lon = float(lat_s), float(lon_s)
    except ValueError:
        raise CapError(f"{where}: {pair!r} is not a 'lat,lon' pair") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise CapError(f"{where}: {pair!r} is outside WGS 84 (lat -90..90, lon -180..180)")
    return lat, lon


def _polygon(text: str, where: str) -> list[tuple[float, float]]:
    """CAP 1.2 §3.2.4: space-separated 'lat,lon' pairs, at least four, first = last."""
    points = [_point(p, where) for p in text.split()]
    if len(points) < 4 or points[0] != points[-1]:
        raise CapError(f"{where}: a polygon needs at least four points, the first repeated "
                       f"last (got {len(points)})")
    return points


def _circle(text: str, where: str) -> tuple[float, float, float]:
    """CAP 1.2 §3.2.4: 'lat,lon radius', the radius in kilometres."""
    parts = text.split()
    if len(parts) != 2:
        raise CapError(f"{where}: a circle is 'lat,lon radius_km', not {text.strip()!r}")
    lat, lon = _point(parts[0], where)
    try:
        radius = float(parts[1])
    except ValueError:
        raise CapError(f"{where}: radius {parts[1]!r} is not a number of km") from None
    if not 0 <= radius <= 20_000:
        raise CapError(f"{where}: radius {radius} km is out of range")
    return lat, lon, radius


def _resource(r: Element, where: str) -> CapResource:
    desc = _text(r, "resourceDesc", True, where) or ""
    mime = _text(r, "mimeType", True, where) or ""
    size_s, deref = _text(r, "size"), _text(r, "derefUri")
    try:
        size = int(size_s) if size_s else None
    except ValueError:
        raise CapError(f"{where}: <size> {size_s!r} is not a whole number of bytes") from None
    data = None
    if deref:
        try:
            data = base64.b64decode("".join(deref.split()), validate=True)
        except ValueError:
            raise CapError(f"{where}: <derefUri> is not base64") from None
    digest = _text(r, "digest")
    return CapResource(desc, mime, _text(r, "uri"), data, size,
                       digest.lower() if digest else None)


def map_priority(info: CapInfo, rules: list[dict[str, Any]] | None = None) -> str:
    for rule in rules or DEFAULT_PRIORITY_RULES:
        if all(rule[k] == "*" or getattr(info, k) in rule[k]
               for k in ("urgency", "severity", "certainty")):
            return str(rule["priority"])
    return "normal"


def ack_xml(alert: CapAlert, sender: str, sent: datetime, note: str, msg_type: str = "Ack") -> str:
    """A CAP Ack (or Error) answering ``alert``, with ``note`` summarising delivery."""
    return _reply(f"{alert.identifier}-{msg_type.lower()}", alert.status, alert.ref, sender,
                  sent, note, msg_type)


def error_xml(data: bytes, sender: str, sent: datetime, note: str) -> str:
    """A CAP Error refusing ``data``, which may not even be a valid alert: its
    ``<references>`` names as much of the refused alert (sender, identifier, sent) as can
    be read safely, and ``<note>`` says why it was refused."""
    fields = heading(data)
    ident = fields.get("identifier") or \
        "unreadable-" + hashlib.sha256(data).hexdigest()[:16]
    ref = ",".join(fields.get(k, "") for k in ("sender", "identifier", "sent")) \
        if "identifier" in fields and "sender" in fields else None
    status = fields.get("status") if fields.get("status") in STATUS else "Actual"
    return _reply(f"{ident}-error", status or "Actual", ref, sender, sent, note, "Error")


def heading(data: bytes) -> dict[str, str]:
    """What can be read safely of a document that may not be a valid alert: identifier,
    sender, sent, status, msgType (single tokens only) and the first block's event or
    headline, for the log of what was received and for a CAP Error's references."""
    fields: dict[str, str] = {}
    try:
        root = fromstring(data[:MAX_CAP_BYTES], forbid_dtd=True, forbid_entities=True,
                          forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError):
        return fields
    for name in ("identifier", "sender", "sent", "status", "msgType"):
        value = _text(root, name)
        if value and "," not in value and not any(ch.isspace() for ch in value):
            fields[name] = value[:512]
    info = root.find(_N + "info")
    if info is not None:
        said = _text(info, "headline") or _text(info, "event")
        if said:
            fields["event"] = said[:512]
    return fields


def _reply(identifier: str, status: str, references: str | None, sender: str, sent: datetime,
           note: str, msg_type: str) -> str:
    from xml.sax.saxutils import escape

    refs = f"  <references>{escape(references)}</references>\n" if references else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<alert xmlns="{CAP_NS}">\n'
        f"  <identifier>{escape(identifier)}</identifier>\n"
        f"  <sender>{escape(sender)}</sender>\n"
        f"  <sent>{_cap_time(sent)}</sent>\n"
        f"  <status>{status}</status>\n"
        f"  <msgType>{msg_type}</msgType>\n"
        "  <scope>Public</scope>\n"
        f"  <note>{escape(note)}</note>\n"
        f"{refs}"
        "</alert>\n"
    )
