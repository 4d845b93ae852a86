"""Drives python-syncthing (PyPI `syncthing` 2.4.1) against a Syncthing REST API.

Usage: python_syncthing.py HOST PORT API_KEY FOLDER PEER_ID
Prints one JSON object: each call's name -> "ok" or the error it raised. The calls that
change nothing lasting run first; restart and shutdown are left to the caller.
"""
import json
import sys

import syncthing

host, port, key, folder, peer = sys.argv[1:6]
s = syncthing.Syncthing(key, host=host, port=int(port), timeout=30.0)

calls = [
    ("system.config", lambda: s.system.config()),
    ("system.set_config", lambda: s.system.set_config(s.system.config())),
    ("system.config_insync", lambda: s.system.config_insync()),
    ("system.connections", lambda: s.system.connections()),
    ("system.debug", lambda: s.system.debug()),
    ("system.enable_debug", lambda: s.system.enable_debug("model")),
    ("system.disable_debug", lambda: s.system.disable_debug("model")),
    ("system.discovery", lambda: s.system.discovery()),
    ("system.errors", lambda: s.system.errors()),
    ("system.show_error", lambda: s.system.show_error("from python-syncthing")),
    ("system.clear_errors", lambda: s.system.clear_errors()),
    ("system.clear", lambda: s.system.clear()),
    ("system.log", lambda: s.system.log()),
    ("system.pause", lambda: s.system.pause(peer)),
    ("system.resume", lambda: s.system.resume(peer)),
    ("system.ping", lambda: s.system.ping()),
    ("system.ping_post", lambda: s.system.ping(with_method="POST")),
    ("system.status", lambda: s.system.status()),
    ("system.upgrade", lambda: s.system.upgrade()),
    ("system.can_upgrade", lambda: s.system.can_upgrade()),
    ("system.version", lambda: s.system.version()),
    ("system.browse", lambda: s.system.browse("/tmp/")),
    ("database.browse", lambda: s.database.browse(folder)),
    ("database.browse_levels", lambda: s.database.browse(folder, levels=1)),
    ("database.completion", lambda: s.database.completion(peer, folder)),
    ("database.file", lambda: s.database.file(folder, "hello.txt")),
    ("database.ignores", lambda: s.database.ignores(folder)),
    ("database.set_ignores", lambda: s.database.set_ignores(folder, "*.tmp")),
    ("database.need", lambda: s.database.need(folder)),
    ("database.need_page", lambda: s.database.need(folder, page=1, perpage=10)),
    ("database.override", lambda: s.database.override(folder)),
    ("database.prio", lambda: s.database.prio(folder, "hello.txt")),
    ("database.scan", lambda: s.database.scan(folder)),
    ("database.scan_sub", lambda: s.database.scan(folder, sub="hello.txt")),
    ("database.status", lambda: s.database.status(folder)),
    ("stats.device", lambda: s.stats.device()),
    ("stats.folder", lambda: s.stats.folder()),
    ("misc.device_id", lambda: s.misc.device_id(peer)),
    ("misc.language", lambda: s.misc.language()),
    ("misc.random_string", lambda: s.misc.random_string(16)),
    ("misc.report", lambda: s.misc.report()),
    ("events", lambda: next(iter(s.events(limit=1)))),
]

results = {}
for name, call in calls:
    try:
        call()
        results[name] = "ok"
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        results[name] = f"{type(e).__name__}: {e}"
print(json.dumps(results, indent=1))
