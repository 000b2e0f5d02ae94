"""spotwatch: an on-instance EC2 Spot interruption daemon.

Layers, and the one direction imports flow in:
    config     pure settings: schema, layering, validation (imports nothing of ours)
    detection  IMDS client -> watcher -> notices (imports config)
    response   plan -> hooks, ECS, instance, hibernate (imports detection, config)
    service    CLI, daemon, state, systemd, telemetry (imports everything below)
    simulator  an IMDS stand-in for rehearsals and tests (stdlib only, imports nothing of ours)
"""

__version__ = "0.1.0"
