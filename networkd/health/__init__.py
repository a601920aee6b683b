"""VIP health checks (SPEC section 9): verdicts, probes, local check files, notify hooks.

Run by the unprivileged ``checker`` worker (``networkd/workers/checker.py``); the elector
reads its ``state.health`` and makes a node whose check does not pass FAILING: not
eligible, an owner releases (break before make), it never contends.
"""
