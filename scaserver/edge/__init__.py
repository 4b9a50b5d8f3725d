"""The only Twisted code: UDP and TCP transports, the stack that runs the core's actions and
owns its timers, the database thread pool and write-behind queue, the HTTP site (JSON-RPC,
metrics, provisioning), the RPC datagram socket and the push gateway client."""
