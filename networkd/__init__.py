"""networkd: the per-node network daemon of a LAIN cluster."""

__version__ = "3.0.0"
