from __future__ import annotations

from pathlib import Path

import pytest

from controller.cap.alert import CapError, error_xml, map_priority, parse_cap
from controller.cap.areas import fold_name, in_circle, in_polygon
from tests.capsig import make_issuer, sign_xml

SPEC = sorted((Path(__file__).parents[1] / "fixtures" / "cap").glob("a*.xml"))


@pytest.mark.parametrize("path", SPEC, ids=[p.stem for p in SPEC])
def test_the_cap_1_2_specification_examples_parse(path: Path) -> None:
    alert = parse_cap(path.read_bytes())
    assert alert.identifier and alert.sender and alert.infos
    assert alert.infos[0].areas and alert.infos[0].event


def test_spec_examples_map_to_the_expected_priorities() -> None:
    by = {p.stem: parse_cap(p.read_bytes()) for p in SPEC}
    assert map_priority(by["a2-severe-thunderstorm"].infos[0]) == "emergency"
    assert map_priority(by["a3-earthquake-update"].infos[0]) == "normal"
    assert by["a3-earthquake-update"].msg_type == "Update"
    assert by["a3-earthquake-update"].references == [
        "trinet@caltech.edu,TRI13970876.1,2003-06-11T20:30:00-07:00"]
    assert [i.language for i in by["a4-amber-multilingual"].infos] == ["en-US", "es-US"]


def err(xml: str | bytes) -> str:
    with pytest.raises(CapError) as exc:
        parse_cap(xml.encode() if isinstance(xml, str) else xml)
    return str(exc.value)


def test_malformed_xml() -> None:
    assert "malformed" in err("<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>")


def test_entity_expansion_bomb_is_refused_unexpanded() -> None:
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{"&lol" + str(i - 1) + ";" if i > 1 else "&lol;"}'
                      f'{("&lol" + str(i - 1) + ";") * 9 if i > 1 else "&lol;" * 9}">'
                      for i in range(1, 10))
            + ']><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&lol9;</alert>')
    assert "unsafe XML" in err(bomb)


def test_external_entity_is_refused() -> None:
    xxe = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           '<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>')
    assert "unsafe XML" in err(xxe)


def test_wrong_namespace() -> None:
    xml = SPEC[1].read_text().replace("cap:1.2", "cap:1.1")
    assert "namespace" in err(xml)


def test_missing_required_fields_and_bad_enums() -> None:
    xml = SPEC[1].read_text()
    assert "<sender> is required" in err(xml.replace("<sender>KSTO@NWS.NOAA.GOV</sender>", ""))
    assert "msgType" in err(xml.replace("<msgType>Alert</msgType>", "<msgType>Shout</msgType>"))
    assert "urgency" in err(xml.replace("<urgency>Immediate</urgency>", "<urgency>Now</urgency>"))
    assert "references" in err(xml.replace("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>"))


def test_oversized_document() -> None:
    assert "limit" in err(b"<a>" + b" " * 600_000 + b"</a>")


def test_names_compare_without_accents_case_or_the_kind_word() -> None:
    assert fold_name("Xã Hướng Đạo") == fold_name("xa huong dao") == "huong dao"
    assert fold_name("Thôn Đồng Bông") == "dong bong"


def test_polygons_and_circles_contain_what_they_should() -> None:
    west = [(21.335, 105.555), (21.358, 105.555), (21.358, 105.565), (21.335, 105.565),
            (21.335, 105.555)]
    assert in_polygon(21.3393, 105.5601, west)  # hd-c01
    assert not in_polygon(21.3405, 105.568, west)  # hd-c06, 300 m east of the edge
    # a concave shape (an L): the notch is outside
    ell = [(0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2), (0, 0)]
    assert in_polygon(0.5, 1.5, ell) and not in_polygon(1.5, 1.5, ell)
    # hd-c15 and hd-c14 are 0.6 km apart
    assert in_circle(21.3682, 105.5814, (21.3682, 105.5814, 0.3))
    assert not in_circle(21.3629, 105.5803, (21.3682, 105.5814, 0.3))
    assert in_circle(21.3629, 105.5803, (21.3682, 105.5814, 0.7))


def _with_area(extra: str) -> bytes:
    xml = SPEC[1].read_text()
    return xml.replace("</areaDesc>", "</areaDesc>" + extra, 1).encode()


def test_polygon_circle_and_resource_are_parsed_and_checked() -> None:
    alert = parse_cap(_with_area(
        "<polygon>21.335,105.555 21.358,105.555 21.358,105.565 21.335,105.555</polygon>"
        "<circle>21.3682,105.5814 0.3</circle>"))
    area = alert.infos[0].areas[0]
    assert area.polygons[0][0] == (21.335, 105.555) and area.circles == [(21.3682, 105.5814, 0.3)]
    assert "at least four points" in err(_with_area("<polygon>1,2 3,4 1,2</polygon>"))
    assert "first repeated" in err(_with_area("<polygon>1,2 3,4 5,6 7,8</polygon>"))
    assert "outside WGS 84" in err(_with_area("<circle>95,105 1</circle>"))
    assert "radius" in err(_with_area("<circle>21,105 far</circle>"))
    res = ("<resource><resourceDesc>ghi âm</resourceDesc><mimeType>audio/mpeg</mimeType>"
           "<size>1234</size><uri>http://example.org/a.mp3</uri>"
           "<digest>ABCDEF0123456789ABCDEF0123456789ABCDEF01</digest></resource>")
    xml = SPEC[1].read_text().replace("<area>", res + "<area>", 1).encode()
    r = parse_cap(xml).infos[0].recording
    assert r is not None and r.uri == "http://example.org/a.mp3" and r.size == 1234
    assert r.digest == "abcdef0123456789abcdef0123456789abcdef01"
    bad = xml.replace(b"<uri>http://example.org/a.mp3</uri>", b"<derefUri>@@@</derefUri>")
    assert "derefUri" in err(bad)


def test_a_cap_error_names_what_it_refuses_as_far_as_it_can_be_read() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    xml = error_xml(SPEC[1].read_bytes(), "loa@test", now, "cap_expired: it expired")
    back = parse_cap(xml.encode())
    assert back.msg_type == "Error" and back.sender == "loa@test"
    assert back.references == ["KSTO@NWS.NOAA.GOV,KSTO1055887203,2003-06-17T14:57:00-07:00"]
    assert "<note>cap_expired: it expired</note>" in xml
    # not even XML: still a valid Error, with nothing to reference
    junk = error_xml(b"\x00\xffnot xml", "loa@test", now, "cap_invalid: malformed")
    assert "<msgType>Error</msgType>" in junk and "<references>" not in junk
    assert "unreadable-" in junk


# --- XML-DSig (CAP 1.2 §3.3.2.1): enveloped signatures by a trusted issuer -------------------

def test_a_signed_alert_verifies_only_against_a_trusted_issuer_and_unaltered() -> None:
    from controller.cap.alert import SignatureError, verify_signature

    key, cert = make_issuer("Đài KTTV tỉnh Vĩnh Phúc")
    _, stranger = make_issuer("someone else")
    alert = SPEC[1].read_bytes()  # A.2, severe thunderstorm
    signed = sign_xml(alert, key, cert)
    assert parse_cap(signed).signed
    body, signer = verify_signature(signed, [stranger, cert])
    assert signer == "CN=Đài KTTV tỉnh Vĩnh Phúc"
    assert parse_cap(body).identifier == parse_cap(alert).identifier
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(signed, [stranger])
    tampered = signed.replace(b"SEVERE THUNDERSTORM", b"ALL CLEAR, GO OUTSIDE")
    assert tampered != signed
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(tampered, [cert])
    with pytest.raises(SignatureError, match="no trusted"):
        verify_signature(signed, [])
