"""The override uploads' parser (provisioning.md section 6: defusedxml, any encoding)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from scaserver.edge.provisioning import UnsafeUpload, changed_parameters

ENTITY = (
    '<!DOCTYPE PHONE_CONFIG [<!ENTITY x "expanded">]><PHONE_CONFIG><ALL reg.1.label="&x;"/></PHONE_CONFIG>'
)


def test_parameter_names_of_a_plain_override_in_any_encoding() -> None:
    text = '<?xml version="1.0" encoding="{}"?><PHONE_CONFIG><ALL up.b="1" up.a="2"/></PHONE_CONFIG>'
    for encoding in ("UTF-8", "UTF-16"):
        assert changed_parameters(text.format(encoding).encode(encoding)) == ["up.a", "up.b"]


def test_a_utf16_internal_entity_is_refused_where_the_standard_parser_would_expand_it() -> None:
    document = f'<?xml version="1.0" encoding="UTF-16"?>{ENTITY}'.encode("utf-16")
    assert b"<!ENTITY" not in document  # invisible to a byte search
    all_element = ET.fromstring(document).find("ALL")
    assert all_element is not None and all_element.attrib["reg.1.label"] == "expanded"
    with pytest.raises(
        UnsafeUpload, match=r"^XML with a document type declaration \(<!DOCTYPE PHONE_CONFIG>\)$"
    ):
        changed_parameters(document)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (ENTITY.encode(), r"^XML with a document type declaration"),
        (b'<!DOCTYPE a SYSTEM "http://192.0.2.1/x.dtd"><a/>', r"^XML with a document type declaration"),
        (b"<PHONE_CONFIG>", r"^not well-formed XML \(no element found"),
        (b"", r"^not well-formed XML"),
    ],
)
def test_refusals_carry_a_one_line_reason(body: bytes, reason: str) -> None:
    with pytest.raises(UnsafeUpload, match=reason) as caught:
        changed_parameters(body)
    assert "\n" not in str(caught.value)
