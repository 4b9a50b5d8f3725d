"""The full method table of this release (rpc.md section 3), assembled from its parts.

``rpc/openrpc.json`` lists exactly these methods and parameters (a test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable

from scaserver.control.parking import register_parking
from scaserver.control.provisioning import register_provisioning
from scaserver.control.registry import Registry
from scaserver.control.sca import register_sca
from scaserver.control.seams import (
    LocationControl,
    NoParking,
    NoProvisioning,
    ParkingControl,
    ProvisioningControl,
    ScaControl,
)
from scaserver.control.system import ServerInfo, register_core, register_system
from scaserver.control.usrloc import register_usrloc


def build_registry(
    *,
    sca: ScaControl,
    location: LocationControl,
    server: ServerInfo,
    clock: Callable[[], float],
    parking: ParkingControl | None = None,
    provisioning: ProvisioningControl | None = None,
) -> Registry:
    """Every method: ``system.*``, ``core.*``, ``sca.*``, ``ul.*``, ``ts.*``, ``pushreg.*`` and
    ``prov.resync``;
    ``clock`` gives epoch seconds; without ``parking`` the ``ts``/``pushreg`` tables are empty."""
    registry = Registry()
    register_system(registry)
    register_core(registry, server, clock)
    register_sca(registry, sca, clock)
    register_usrloc(registry, location, clock)
    register_parking(registry, parking or NoParking(), location, clock)
    register_provisioning(registry, provisioning or NoProvisioning())
    return registry
