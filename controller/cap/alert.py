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
import unicodedata
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
    "SignatureError",
    "ack_xml",
    "map_priority",
    "match_area",
    "parse_cap",
    "verify_signature",
]

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
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
    audio: list[tuple[str, bytes]]  # (mime type, bytes) from derefUri resources

    def text(self) -> str:
        parts = [p.strip() for p in (self.headline, self.description, self.instruction) if p]
        return ". ".join(parts)


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
        areas = []
        for a in el.findall(_N + "area"):
            desc = _text(a, "areaDesc", True, f"{where}/area")
            codes = [(_text(g, "valueName") or "", _text(g, "value") or "")
                     for g in a.findall(_N + "geocode")]
            areas.append(CapArea(desc or "", codes))
        audio = []
        for r in el.findall(_N + "resource"):
            mime = _text(r, "mimeType", True, f"{where}/resource") or ""
            deref = _text(r, "derefUri")
            if mime.startswith("audio/") and deref:
                try:
                    audio.append((mime, base64.b64decode(deref, validate=False)))
                except ValueError:
                    raise CapError(f"{where}/resource: derefUri is not base64") from None
        infos.append(CapInfo(
            language=_text(el, "language") or "en-US",
            event=_text(el, "event", True, where) or "",
            urgency=_enum(_text(el, "urgency", True, where), URGENCY, "urgency"),
            severity=_enum(_text(el, "severity", True, where), SEVERITY, "severity"),
            certainty=_enum(_text(el, "certainty", True, where), CERTAINTY, "certainty"),
            headline=_text(el, "headline"), description=_text(el, "description"),
            instruction=_text(el, "instruction"),
            expires=_time(_text(el, "expires"), "expires"),
            onset=_time(_text(el, "onset"), "onset"), areas=areas, audio=audio,
        ))
        if not el.findall(_N + "category"):
            raise CapError(f"<category> is required in <{where}>")
    if msg_type in ("Alert", "Update") and not infos:
        raise CapError(f"a {msg_type} needs at least one <info>")
    signed = root.find("{" + DSIG_NS + "}Signature") is not None
    return CapAlert(identifier or "", sender or "", sent, status, msg_type,  # type: ignore[arg-type]
                    scope, references, infos, signed)


def map_priority(info: CapInfo, rules: list[dict[str, Any]] | None = None) -> str:
    for rule in rules or DEFAULT_PRIORITY_RULES:
        if all(rule[k] == "*" or getattr(info, k) in rule[k]
               for k in ("urgency", "severity", "certainty")):
            return str(rule["priority"])
    return "normal"


def _fold(s: str) -> str:
    s = unicodedata.normalize("NFD", s.lower().replace("đ", "d"))
    s = "".join(ch for ch in s if unicodedata.category(ch) != "Mn")
    for prefix in ("tinh ", "huyen ", "xa ", "thon ", "phuong ", "thi tran "):
        s = s.removeprefix(prefix)
    return " ".join(s.split())


def match_area(area: CapArea, areas: dict[str, tuple[str, str]]) -> str | None:
    """Our area id for a CAP area: a geocode naming one of our ids (valueName ``LOA`` or any
    value equal to an id), else an exact name match of areaDesc (accents and the kind word
    ignored: "Xã Hướng Đạo" = "huong dao"). ``areas``: id -> (name, kind)."""
    for name, value in area.geocodes:
        if value in areas and name.upper() in ("LOA", "LOA-AREA", "VN-LOA", ""):
            return value
    for _name, value in area.geocodes:
        if value in areas:
            return value
    wanted = _fold(area.desc)
    hits = [aid for aid, (aname, _kind) in areas.items() if _fold(aname) == wanted]
    return hits[0] if len(hits) == 1 else None


def ack_xml(alert: CapAlert, sender: str, sent: datetime, note: str, msg_type: str = "Ack") -> str:
    """A CAP Ack (or Error) answering ``alert``, with ``note`` summarising delivery."""
    from xml.sax.saxutils import escape

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<alert xmlns="{CAP_NS}">\n'
        f"  <identifier>{escape(alert.identifier)}-{msg_type.lower()}</identifier>\n"
        f"  <sender>{escape(sender)}</sender>\n"
        f"  <sent>{_cap_time(sent)}</sent>\n"
        f"  <status>{alert.status}</status>\n"
        f"  <msgType>{msg_type}</msgType>\n"
        "  <scope>Public</scope>\n"
        f"  <note>{escape(note)}</note>\n"
        f"  <references>{escape(alert.ref)}</references>\n"
        "</alert>\n"
    )
