from __future__ import annotations

from pathlib import Path

import pytest

from controller.cap.alert import CapArea, CapError, map_priority, match_area, parse_cap
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


def test_areas_match_by_geocode_or_by_name_without_accents() -> None:
    areas = {"vn-vp-tamduong-huongdao": ("Hướng Đạo", "commune"), "hd-v01": ("Thôn Đồng Bông", "village")}
    assert match_area(CapArea("x", [("LOA", "hd-v01")]), areas) == "hd-v01"
    assert match_area(CapArea("Xã Hướng Đạo"), areas) == "vn-vp-tamduong-huongdao"
    assert match_area(CapArea("xa huong dao"), areas) == "vn-vp-tamduong-huongdao"
    assert match_area(CapArea("Los Angeles County"), areas) is None


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
