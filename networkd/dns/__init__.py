"""The DNS server of SPEC section 4: wire format, local zone, cache, forwarding, replicas."""
