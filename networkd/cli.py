"""``networkd``: parse the Go daemon's flags and run the supervisor in the foreground."""

import sys
from typing import List, Optional

from networkd.config import Config, ConfigError, mask_secrets, parse_args, version_line
from networkd.lockfile import AlreadyRunning

EXIT_USAGE = 2
EXIT_LOCKED = 1  # another daemon holds the lock, or a start-up resource is missing
EXIT_CONFIG = 78  # the worker accounts cannot be used (networkd.users): do not restart


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config, want_version = parse_args(args)
    except ConfigError as exc:
        print(f"networkd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if want_version:
        print(version_line())
        return 0
    assert config is not None

    def reload_config() -> Config:
        new, _ = parse_args(args)
        assert new is not None
        return new

    # Imported late: -version must not need anything but the standard library.
    from networkd import log as logsetup
    from networkd.supervisor import StartupError, Supervisor
    from networkd.users import UserError

    hide_command_line(args)
    logsetup.setup(config, "supervisor")
    try:
        return Supervisor(config, reload_config).run()
    except (AlreadyRunning, StartupError) as exc:
        print(f"networkd: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except ConfigError as exc:
        print(f"networkd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UserError as exc:
        print(f"networkd: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def hide_command_line(args: List[str]) -> None:
    """Keep the flags (an -etcd.password above all) out of the workers and of ``ps``.

    multiprocessing hands the supervisor's ``sys.argv`` to every process it starts
    (``spawn.get_preparation_data`` -> ``prepare()`` sets it in the child), so it would
    sit in every worker's memory; workers get their own Config instead. The process
    title replaces ``/proc/<pid>/cmdline``, which every local user (a DNS replica's too)
    can read, with the flags minus secrets.
    """
    del sys.argv[1:]
    try:
        import setproctitle

        setproctitle.setproctitle(" ".join(["networkd: supervisor", *mask_secrets(args)]))
    except ImportError:  # pragma: no cover - a dependency; the title is cosmetic
        pass


if __name__ == "__main__":
    sys.exit(main())
