#!/usr/bin/python3
# Debian's interpreter on purpose: python3-libtorrent only imports there.
"""tests/interop/lt_peer.py (same roles, options and output), with
libtorrent on uTP only: no TCP in or out, uTP in and out. Used by
bench/utp.py.

  bench/lt_utp.py seed|leech ...   (see tests/interop/lt_peer.py)

lt_peer.py is imported, not copied: its settings() gains these keys last,
so they win over its own (it turns uTP off) and over --perf's
high_performance_seed preset, which stays in force otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "interop"))
import lt_peer  # noqa: E402

UTP_ONLY = {
    "enable_outgoing_tcp": False,
    "enable_incoming_tcp": False,
    "enable_outgoing_utp": True,
    "enable_incoming_utp": True,
}

_settings = lt_peer.settings


def settings(*args, **kw):
    s = _settings(*args, **kw)
    s.update(UTP_ONLY)
    return s


lt_peer.settings = settings

if __name__ == "__main__":
    sys.exit(lt_peer.main())
