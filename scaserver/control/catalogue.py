"""The full method table of this release (rpc.md section 3), assembled from its parts.

``rpc/openrpc.json`` lists exactly these methods and parameters (a test holds the two equal).
"""

from __future__ import annotations

from collections.abc import Callable

from scaserver.control.directory import DirectoryControl, NoDirectory, register_directory
from scaserver.control.parking import register_park, register_parking, register_pushreg_wake, register_uac
from scaserver.control.provisioning import register_provisioning
from scaserver.control.registry import Registry
from scaserver.control.sca import register_sca
from scaserver.control.seams import (
    LocationControl,
    NoParking,
    NoProvisioning,
    NoStatistics,
    ParkingControl,
    ProvisioningControl,
    ScaControl,
    StatisticsControl,
)
from scaserver.control.security import NoSecurity, SecurityControl, register_security
from scaserver.control.statistics import register_statistics
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
    statistics: StatisticsControl | None = None,
    security: SecurityControl | None = None,
    directory: DirectoryControl | None = None,
) -> Registry:
    """Every method: ``system.*``, ``core.*``, ``sca.*``, ``ul.*``, ``ts.*``, ``park.*``,
    ``pushreg.*``, ``uac.*``, ``prov.resync``, ``stats.get_statistics``, ``sec.*`` and
    ``directory.reload``; ``clock`` gives epoch seconds; without ``parking`` the parking and
    mid-registrar tables are empty, without ``statistics`` nothing is counted."""
    registry = Registry()
    register_system(registry)
    register_core(registry, server, clock)
    register_sca(registry, sca, clock)
    register_usrloc(registry, location, clock)
    parked = parking or NoParking()
    register_parking(registry, parked, location, clock)
    register_park(registry, parked, clock)
    register_pushreg_wake(registry, parked)
    register_uac(registry, parked, clock)
    register_statistics(registry, statistics or NoStatistics())
    register_provisioning(registry, provisioning or NoProvisioning())
    register_security(registry, security or NoSecurity())
    register_directory(registry, directory or NoDirectory())
    return registry
