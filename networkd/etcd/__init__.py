"""etcd v3 access: connection (``client``), validation (``validate``), the pure cluster
state (``state``) and the range-read-then-watch loop (``reader``)."""
