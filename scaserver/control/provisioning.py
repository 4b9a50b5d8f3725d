"""The ``prov.resync`` method (rpc.md 3.6, provisioning.md 4.5) over the ``ProvisioningControl``
seam: a ``check-sync`` NOTIFY to every registered contact of a device's lines."""

from __future__ import annotations

from scaserver.control.jsonrpc import JsonValue, NotFoundError
from scaserver.control.registry import Arguments, Param, Registry, Scope
from scaserver.control.seams import ProvisioningControl


def register_provisioning(registry: Registry, provisioning: ProvisioningControl) -> None:
    """Add ``prov.resync``."""

    @registry.register(
        "prov.resync",
        Param("mac", doc="the device's MAC address (12 hex digits, separators allowed)"),
        scope=Scope.ADMIN,
        doc="Asks a provisioned handset to re-read its configuration (NOTIFY check-sync).",
    )
    async def prov_resync(args: Arguments) -> JsonValue:
        outcomes = await provisioning.resync(args.text("mac"))
        if outcomes is None:
            raise NotFoundError("Device not found")
        return [{"contact": outcome.contact, "status": outcome.status} for outcome in outcomes]
