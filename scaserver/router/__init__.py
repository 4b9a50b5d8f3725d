"""The router of scaserver, the transaction user of its SIP stack: what arrives is checked,
run through the transaction layer and handed to the engine whose job it is
(:mod:`scaserver.router.router`)."""
