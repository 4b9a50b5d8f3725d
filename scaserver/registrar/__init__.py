"""The registrar (RFC 3261 section 10.3) and location service, and the push mid-registrar
towards an upstream PBX (push-and-parking.md section 3): pure engines."""
