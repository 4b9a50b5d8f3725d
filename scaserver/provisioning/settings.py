"""``[provisioning]`` (provisioning.md section 4), structured straight from the table: what the
handset profiles endpoint serves, to whom, and where uploads go."""

from __future__ import annotations

import attrs

from scaserver.provisioning.access import DEFAULT_REALM


@attrs.frozen
class ProvisioningSettings:
    """``[provisioning]`` (provisioning.md section 4): handset profiles served under
    ``path_prefix`` on the ``[http]`` listener.

    ``sip_host``/``sip_port``/``sip_transport``: where the phones register (empty/0: the
    advertised SIP address); ``base_url``: how phones reach the provisioning server (empty:
    ``http://`` + the ``[http]`` listen address + ``path_prefix``); ``default_username`` and
    ``default_password``: site credentials for devices without their own; ``allow_from``:
    networks allowed to fetch (empty = any); ``upload_dir``: where phone uploads go (empty:
    uploads refused).  ``base_url`` is required when ``[http]`` listens on a wildcard address
    (the phones cannot be told to fetch from 0.0.0.0).  ``require_credentials``: a profile that
    carries SIP passwords is refused (403) to a device without provisioning credentials
    (its own or the site default); false serves it to anyone who asks for the MAC.
    """

    enabled: bool = True
    path_prefix: str = "/prov"
    realm: str = DEFAULT_REALM
    sip_host: str = ""
    sip_port: int = 0
    sip_transport: str = "udp"
    outbound_proxy: str = ""
    base_url: str = ""
    default_username: str = ""
    default_password: str = ""
    allow_from: tuple[str, ...] = ()
    upload_dir: str = ""
    upload_max_bytes: int = 1024 * 1024
    upload_keep: int = 5
    serve_overrides: bool = False
    static_dir: str = ""
    unknown_mac_limit: int = 20
    registration_expires: int = 600
    resync_periodic: int = 3600
    firmware_path: str = "sip.ld"
    require_credentials: bool = True
