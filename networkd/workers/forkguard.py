"""Imported only by the multiprocessing fork server (a preload module), for its side effect.

The fork server and the workers it forks leave the supervisor's process group, so that a
signal to the group (Ctrl-C in a terminal, ``timeout``, ``kill -- -PGID``) reaches only the
supervisor, which then stops the workers in dependency order. The fork server also ignores
TERM and HUP: if it died, every worker would die with it (parent-death signal). It still
exits when the supervisor does (multiprocessing closes its "alive" pipe).

It also ignores the signals of ``networkd.signals`` (USR2, PIPE, ALRM, ...), which would
otherwise end it, and with it every worker. The workers it forks inherit SIG_IGN for them,
so ``systemctl kill -s USR2 networkd`` (every process of the unit) kills nothing, as with
the Go daemon.
"""

import os
import signal

from networkd import signals

os.setpgid(0, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
signals.ignore_all()
