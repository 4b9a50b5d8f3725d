"""The JSON-RPC control plane (rpc.md): pure envelope, method registry and sca.*/ul.* methods.

No Twisted here: transports live in ``scaserver.edge.http`` and ``scaserver.edge.rpcdgram``;
the engines are reached only through the Protocols of ``scaserver.control.seams``.
"""
