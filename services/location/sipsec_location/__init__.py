"""The sipsec location service: AOR -> contact bindings over gRPC (RFC 3261 §10)."""

from sipsec_location.config import LocationConfig
from sipsec_location.server import LocationServer, create_location_server
from sipsec_location.service import LocationService

__all__ = ["LocationConfig", "LocationServer", "LocationService", "create_location_server"]
