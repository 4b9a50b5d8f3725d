"""Profile generators: pure functions ``(device, site, templates) -> bytes`` (provisioning.md §6).

Files:

* Polycom master (section 1.2): ``polycom-master.cfg.tmpl``; the generic ``000000000000.cfg``
  lists ``[PHONE_MAC_ADDRESS]-sca.cfg``, a device's ``<mac>.cfg`` its own ``<mac>-sca.cfg``.
* Polycom application file ``<mac>-sca.cfg`` (sections 2.1, 5.1): ``polycom-sca.cfg.tmpl``.
* Cisco flat profile ``<mac>.xml`` / ``spa<mac>.xml`` (sections 2.2, 5.2):
  ``cisco-mpp.xml.tmpl`` and ``cisco-spa.xml.tmpl``.

The templates (top-level ``polycom-profiles/``, shipped inside the package and read with
``importlib.resources``) are well-formed XML whose attribute values
(Polycom) or element texts (Cisco) are ``string.Template`` text.  They are parsed once with
``xml.etree.ElementTree``; rendering expands them into a new tree and serializes it, so
passwords and display names with ``&``, ``<`` or ``"`` are escaped by the serializer, never
by string concatenation (section 6).  ``template_overrides`` are applied last.
"""

from __future__ import annotations

import enum
import importlib.resources
import re
import string
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

import attrs

from scaserver.provisioning.mac import ZERO_MAC
from scaserver.sca.line import canonical_aor
from scaserver.store.provisioning import Device, DeviceLine, Family, Vendor

#: The package resource ``polycom-profiles/``.
TEMPLATE_DIR: Final[Traversable] = importlib.resources.files("scaserver") / "polycom-profiles"

EACH_LINE: Final = "scaserver-each-line"
EACH_KEY: Final = "scaserver-each-key"
_PLACEHOLDER: Final = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_PARAMETER_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class ProfileError(Exception):
    """A device that cannot be rendered (wrong family for the file, bad template)."""


class SipTransport(enum.Enum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


_POLYCOM_TRANSPORT: Final = {
    SipTransport.UDP: "UDPOnly",
    SipTransport.TCP: "TCPOnly",
    SipTransport.TLS: "TLS",
}
_CISCO_TRANSPORT: Final = {SipTransport.UDP: "UDP", SipTransport.TCP: "TCP", SipTransport.TLS: "TLS"}


@attrs.frozen
class SiteSettings:
    """Site-wide provisioning values (section 3 ``site_settings``).

    ``sip_host``/``sip_port``/``sip_transport``: scaserver's SIP address the phones register
    to; ``prov_base_url``: where phones fetch from (``https://prov.example.com``, with the
    path prefix if any); ``firmware_path``: Polycom ``APP_FILE_PATH``; ``shared_lines``: the
    ``[[sca.lines]]`` of the configuration, (AoR, appearances): the SCA engine treats them as
    shared, so the profiles do too (the configuration wins over the database's ``sca_line``,
    as it does in the engine); ``site_credentials``: the site has default provisioning
    credentials (``provisioning.default_username``/``default_password``).
    """

    sip_host: str
    prov_base_url: str
    sip_port: int = 5060
    sip_transport: SipTransport = SipTransport.UDP
    outbound_proxy: tuple[str, int] | None = None
    registration_expires: int = 600
    line_seize_expires: int = 15
    call_info_expires: int = 3600
    resync_periodic: int = 3600
    firmware_path: str = "sip.ld"
    shared_lines: tuple[tuple[str, int], ...] = ()
    site_credentials: bool = False


def with_shared_lines(device: Device, site: SiteSettings) -> Device:
    """``device`` with the lines of ``site.shared_lines`` marked shared, with their appearances."""
    configured = {canonical_aor(aor) or aor: appearances for aor, appearances in site.shared_lines}
    if not configured:
        return device
    placed: list[DeviceLine] = []
    for line in device.lines:
        appearances = configured.get(canonical_aor(line.line.aor) or line.line.aor)
        if appearances is None:
            placed.append(line)
        else:
            identity = attrs.evolve(line.line, shared=True, max_appearances=appearances)
            placed.append(attrs.evolve(line, line=identity))
    return attrs.evolve(device, lines=tuple(placed))


@attrs.frozen
class Capability:
    """What a model can show: registrations (Polycom ``reg.x``, Cisco extensions) and line keys."""

    registrations: int
    keys: int


#: Section 3's per-model table (to be confirmed per model on a handset, as the spec says).
CAPABILITIES: Final[Mapping[str, Capability]] = {
    "VVX300": Capability(6, 6),
    "VVX310": Capability(6, 6),
    "VVX400": Capability(12, 12),
    "VVX410": Capability(12, 12),
    "VVX411": Capability(12, 12),
    "VVX500": Capability(12, 12),
    "VVX600": Capability(16, 16),
    "SPA504G": Capability(4, 4),
    "SPA508G": Capability(8, 8),
    "SPA525G": Capability(5, 5),
    "CP-7841-3PCC": Capability(4, 4),
    "CP-8841-3PCC": Capability(5, 5),
    "CP-8851-3PCC": Capability(5, 5),
    "CP-8861-3PCC": Capability(5, 5),
}

#: Models not in the table: the family's largest known model.
FAMILY_DEFAULTS: Final[Mapping[Family, Capability]] = {
    Family.POLYCOM_SIP3: Capability(12, 12),
    Family.POLYCOM_UCS: Capability(16, 16),
    Family.CISCO_SPA: Capability(8, 8),
    Family.CISCO_MPP: Capability(5, 5),
    Family.YEALINK: Capability(16, 16),
}


def capability(device: Device) -> Capability:
    model = (device.model or "").upper()
    return CAPABILITIES.get(model, FAMILY_DEFAULTS[device.family])


def placement_errors(device: Device) -> list[str]:
    """Section 3 validation rules: positions within the model's registrations, each line's
    keys within the model's keys, no key used by two lines, no line placed twice."""
    cap = capability(device)
    errors: list[str] = []
    positions: set[int] = set()
    aors: set[str] = set()
    used: dict[int, int] = {}
    for placed in device.lines:
        if placed.position in positions:
            errors.append(f"position {placed.position} is used twice")
        positions.add(placed.position)
        if placed.line.aor in aors:
            errors.append(f"line {placed.line.aor} is placed twice")
        aors.add(placed.line.aor)
        if not 1 <= placed.position <= cap.registrations:
            errors.append(f"position {placed.position} is outside 1..{cap.registrations} of this model")
        if placed.line_keys < 1 or placed.calls_per_key < 1 or placed.first_key < 1:
            errors.append(f"position {placed.position}: keys and calls per key must be at least 1")
            continue
        if placed.keys.stop - 1 > cap.keys:
            errors.append(
                f"position {placed.position}: keys {placed.first_key}..{placed.keys.stop - 1} "
                f"exceed the model's {cap.keys} keys"
            )
        for key in placed.keys:
            if key in used:
                errors.append(f"key {key} is used by positions {used[key]} and {placed.position}")
            used.setdefault(key, placed.position)
    return errors


def device_capacity(device: Device, placed: DeviceLine) -> int:
    """Appearances the device can show for one line (section 3 capacity rule)."""
    if device.family is Family.CISCO_SPA:
        return 2 * placed.line_keys
    return placed.line_keys * placed.calls_per_key


def capacity_warnings(device: Device) -> list[str]:
    """Section 2.1 capacity rule: warn when a shared line can hand out more appearances than
    the device can show (a limit of 0 is unlimited)."""
    warnings: list[str] = []
    for placed in device.lines:
        if not placed.line.shared:
            continue
        capacity = device_capacity(device, placed)
        limit = placed.line.max_appearances
        if limit <= 0:
            warnings.append(
                f"{device.mac}: line {placed.line.aor} has no appearance limit; the server may hand out "
                f"indexes this phone cannot show (capacity {capacity}); set the line's limit to the "
                "smallest device capacity"
            )
        elif capacity < limit:
            warnings.append(
                f"{device.mac}: line {placed.line.aor} allows {limit} appearances but this phone shows "
                f"only {capacity} ({placed.line_keys} keys)"
            )
    return warnings


# -- templates ---------------------------------------------------------------------------------


@attrs.frozen
class Templates:
    """The parsed templates of ``polycom-profiles/``."""

    polycom_master: ET.Element
    polycom_sca: ET.Element
    cisco_mpp: ET.Element
    cisco_spa: ET.Element

    @classmethod
    def load(cls, directory: Traversable | Path = TEMPLATE_DIR) -> Templates:
        def parse(name: str) -> ET.Element:
            try:
                with (directory / name).open("rb") as source:
                    return ET.parse(source).getroot()
            except (OSError, ET.ParseError) as error:
                raise ProfileError(f"template {directory / name}: {error}") from None

        return cls(
            parse("polycom-master.cfg.tmpl"),
            parse("polycom-sca.cfg.tmpl"),
            parse("cisco-mpp.xml.tmpl"),
            parse("cisco-spa.xml.tmpl"),
        )


Values = Mapping[str, str | None]


def _expand(text: str, values: Values) -> str | None:
    """``text`` with its placeholders filled; None when it is a single placeholder whose value
    is None (the parameter is left out)."""
    whole = _PLACEHOLDER.fullmatch(text.strip())
    if whole is not None and values.get(whole.group(1) or whole.group(2)) is None:
        return None
    filled = {name: ("" if value is None else value) for name, value in values.items()}
    try:
        return string.Template(text).substitute(filled)
    except (KeyError, ValueError) as error:
        raise ProfileError(f"template placeholder {error} has no value") from None


def _serialize(root: ET.Element, comment: str | None, *, standalone: bool) -> bytes:
    ET.indent(root, space="  ")
    declaration = '<?xml version="1.0" encoding="UTF-8"{}?>\n'.format(
        ' standalone="yes"' if standalone else ""
    )
    parts = [declaration]
    if comment is not None:
        safe = comment.replace("--", "- -")
        parts.append(ET.tostring(ET.Comment(f" {safe} "), encoding="unicode") + "\n")
    parts.append(ET.tostring(root, encoding="unicode") + "\n")
    return "".join(parts).encode("utf-8")


def _banner(device: Device) -> str:
    model = f" ({device.model})" if device.model else ""
    return f"generated by scaserver for {device.mac}{model}; do not edit"


def _valid_overrides(device: Device) -> list[tuple[str, str]]:
    return [(name, value) for name, value in device.template_overrides if _PARAMETER_NAME.fullmatch(name)]


# -- Polycom -----------------------------------------------------------------------------------


def polycom_master(templates: Templates, site: SiteSettings, device: Device | None) -> bytes:
    """``000000000000.cfg`` (``device`` None) or ``<mac>.cfg`` (section 4.3)."""
    if device is not None and device.vendor is not Vendor.POLYCOM:
        raise ProfileError(f"{device.mac} is a {device.vendor.value} device, not polycom")
    mac = "[PHONE_MAC_ADDRESS]" if device is None else device.mac
    values = {"app_file_path": site.firmware_path, "config_files": f"{mac}-sca.cfg"}
    root = ET.Element(templates.polycom_master.tag)
    for name, text in templates.polycom_master.attrib.items():
        value = _expand(text, values)
        if value is not None:
            root.set(name, value)
    return _serialize(root, None, standalone=True)


def _polycom_line_values(placed: DeviceLine, site: SiteSettings) -> dict[str, str | None]:
    line = placed.line
    label = placed.label or line.display_name or line.auth_username
    proxy = site.outbound_proxy
    return {
        "type": "shared" if line.shared else "private",
        "address": line.aor.removeprefix("sips:").removeprefix("sip:"),
        "display_name": line.display_name or label,
        "label": label,
        "auth_username": line.auth_username,
        "auth_password": line.auth_password,
        "line_keys": str(placed.line_keys),
        "calls_per_key": str(placed.calls_per_key),
        "barge_in": "1" if placed.barge_in else "0",
        "sip_host": site.sip_host,
        "sip_port": str(site.sip_port),
        "sip_transport": _POLYCOM_TRANSPORT[site.sip_transport],
        "registration_expires": str(site.registration_expires),
        "line_seize_expires": str(site.line_seize_expires) if line.shared else None,
        "outbound_proxy_host": None if proxy is None else proxy[0],
        "outbound_proxy_port": None if proxy is None else str(proxy[1]),
        "outbound_proxy_transport": None if proxy is None else _POLYCOM_TRANSPORT[site.sip_transport],
    }


def _site_values(site: SiteSettings, transports: Mapping[SipTransport, str]) -> dict[str, str | None]:
    return {
        "sip_host": site.sip_host,
        "sip_port": str(site.sip_port),
        "sip_transport": transports[site.sip_transport],
        "line_seize_expires": str(site.line_seize_expires),
        "registration_expires": str(site.registration_expires),
        "resync_periodic": str(site.resync_periodic),
    }


def polycom_application(templates: Templates, site: SiteSettings, device: Device) -> bytes:
    """``<mac>-sca.cfg``: the device's registrations as Polycom parameters (sections 2.1, 5.1)."""
    if device.vendor is not Vendor.POLYCOM:
        raise ProfileError(f"{device.mac} is a {device.vendor.value} device, not polycom")
    lines = sorted(device.lines, key=lambda placed: placed.position)
    site_values = _site_values(site, _POLYCOM_TRANSPORT)
    root = ET.Element(templates.polycom_sca.tag)
    for group in templates.polycom_sca:
        element = ET.SubElement(root, group.tag)
        per_line = [(n, t) for n, t in group.attrib.items() if "x" in n.split(".")]
        once = [(n, t) for n, t in group.attrib.items() if "x" not in n.split(".")]
        for placed in lines:
            values = _polycom_line_values(placed, site)
            for name, text in per_line:
                value = _expand(text, values)
                if value is not None:
                    numbered = ".".join(str(placed.position) if s == "x" else s for s in name.split("."))
                    element.set(numbered, value)
        for name, text in once:
            value = _expand(text, site_values)
            if value is not None:
                element.set(name, value)
        if not element.attrib:
            root.remove(element)
    extra: dict[str, str] = {}
    for name, value in _valid_overrides(device):
        for element in root:
            if name in element.attrib:
                element.set(name, value)
                break
        else:
            extra[name] = value
    if extra:
        ET.SubElement(root, "overrides", extra)
    return _serialize(root, _banner(device), standalone=True)


# -- Cisco -------------------------------------------------------------------------------------


def _numbered(tag: str, n: int) -> str:
    if not tag.endswith("_n_"):
        raise ProfileError(f"template element {tag} inside a repeated block must end in _n_")
    return f"{tag[:-3]}_{n}_"


def _cisco_line_values(placed: DeviceLine, site: SiteSettings, spa: bool) -> dict[str, str | None]:
    line = placed.line
    user = line.aor.removeprefix("sips:").removeprefix("sip:").partition("@")[0]
    separate_auth = line.auth_username != user
    proxy_host, proxy_port = site.outbound_proxy or (site.sip_host, site.sip_port)
    shared_value = ("shared" if spa else "Yes") if line.shared else ("private" if spa else "No")
    return {
        "display_name": line.display_name or placed.label or user,
        "user_id": user,
        "auth_password": line.auth_password,
        "use_auth_id": "Yes" if separate_auth else "No",
        "auth_id": line.auth_username if separate_auth else None,
        "proxy": f"{proxy_host}:{proxy_port}",
        "sip_transport": _CISCO_TRANSPORT[site.sip_transport],
        "share_ext": shared_value,
        "shared_user_id": user if line.shared else None,
        "subscription_expires": str(site.call_info_expires) if line.shared else None,
    }


def _key_values(device: Device, key: int) -> dict[str, str | None]:
    for placed in device.lines:
        if key in placed.keys:
            label = placed.label or placed.line.display_name or placed.line.auth_username
            return {
                "extension": str(placed.position),
                "short_name": label,
                "share_call_appearance": "shared" if placed.line.shared else None,
            }
    return {"extension": "Disabled", "short_name": None, "share_call_appearance": None}


def cisco_profile_rule(site: SiteSettings, family: Family) -> str:
    """The canonical ``Profile_Rule`` of the family (section 1.3): ``$MA.xml`` / ``spa$MA.xml``."""
    base = site.prov_base_url.rstrip("/")
    return f"{base}/spa$MA.xml" if family is Family.CISCO_SPA else f"{base}/$MA.xml"


def cisco_profile(templates: Templates, site: SiteSettings, device: Device) -> bytes:
    """The flat profile of a Cisco SPA or MPP device (sections 2.2, 5.2)."""
    if device.vendor is not Vendor.CISCO:
        raise ProfileError(f"{device.mac} is a {device.vendor.value} device, not cisco")
    spa = device.family is Family.CISCO_SPA
    template = templates.cisco_spa if spa else templates.cisco_mpp
    lines = sorted(device.lines, key=lambda placed: placed.position)
    shared = [placed for placed in lines if placed.line.shared]
    globals_: dict[str, str | None] = {
        **_site_values(site, _CISCO_TRANSPORT),
        # A phone that authenticates its fetches keeps the Profile_Rule it was given, which
        # carries its credentials ("[--uid U --pwd P]URL"); the server knows only their HA1.
        "profile_rule": None
        if device.prov_username or site.site_credentials
        else cisco_profile_rule(site, device.family),
        "barge_in": "Yes" if any(placed.barge_in for placed in shared) else "No",
    }
    root = ET.Element(template.tag)

    def emit(source: ET.Element, tag: str, values: Values) -> None:
        value = _expand(source.text or "", values)
        if value is not None:
            ET.SubElement(root, tag, dict(source.attrib)).text = value

    def repeat(block: ET.Element, items: Sequence[tuple[int, Values]]) -> None:
        for n, values in items:
            for source in block:
                emit(source, _numbered(source.tag, n), values)

    for source in template:
        if source.tag == EACH_LINE:
            repeat(source, [(p.position, _cisco_line_values(p, site, spa)) for p in lines])
        elif source.tag == EACH_KEY:
            keys = range(1, capability(device).keys + 1)
            repeat(source, [(key, _key_values(device, key)) for key in keys])
        else:
            emit(source, source.tag, globals_)
    for name, value in _valid_overrides(device):
        found = root.find(name)
        if found is None:
            found = ET.SubElement(root, name, {"ua": "na"})
        found.text = value
    return _serialize(root, _banner(device), standalone=False)


# -- files -------------------------------------------------------------------------------------


class FileKind(enum.Enum):
    """Generated files of section 4.3."""

    POLYCOM_MASTER = "polycom-master"
    POLYCOM_APPLICATION = "polycom-application"
    CISCO_PROFILE = "cisco-profile"


@attrs.frozen
class Profile:
    body: bytes
    content_type: str
    warnings: tuple[str, ...] = ()


_RENDERERS: Final[Mapping[FileKind, Callable[[Templates, SiteSettings, Device], bytes]]] = {
    FileKind.POLYCOM_MASTER: polycom_master,
    FileKind.POLYCOM_APPLICATION: polycom_application,
    FileKind.CISCO_PROFILE: cisco_profile,
}


def render(kind: FileKind, templates: Templates, site: SiteSettings, device: Device) -> Profile:
    """The file ``kind`` for ``device``, with the capacity warnings of section 2.1."""
    device = with_shared_lines(device, site)
    body = _RENDERERS[kind](templates, site, device)
    warnings = () if kind is FileKind.POLYCOM_MASTER else tuple(capacity_warnings(device))
    return Profile(body, "application/xml", warnings)


def files_for(device: Device) -> list[tuple[str, FileKind]]:
    """The generated files a device fetches (section 4.3), by name."""
    if device.vendor is Vendor.POLYCOM:
        return [
            (f"{device.mac}.cfg", FileKind.POLYCOM_MASTER),
            (f"{device.mac}-sca.cfg", FileKind.POLYCOM_APPLICATION),
        ]
    if device.vendor is Vendor.CISCO:
        prefix = "spa" if device.family is Family.CISCO_SPA else ""
        return [(f"{prefix}{device.mac}.xml", FileKind.CISCO_PROFILE)]
    return []


def generic_master(templates: Templates, site: SiteSettings) -> bytes:
    """``000000000000.cfg`` (section 4.3)."""
    return polycom_master(templates, site, None)


__all__ = [
    "CAPABILITIES",
    "TEMPLATE_DIR",
    "ZERO_MAC",
    "Capability",
    "FileKind",
    "Profile",
    "ProfileError",
    "SipTransport",
    "SiteSettings",
    "Templates",
    "capability",
    "capacity_warnings",
    "cisco_profile",
    "cisco_profile_rule",
    "files_for",
    "generic_master",
    "placement_errors",
    "polycom_application",
    "polycom_master",
    "render",
    "with_shared_lines",
]
