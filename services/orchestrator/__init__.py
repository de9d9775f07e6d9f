"""The orchestrator: registry of instances from beacons, and supervisor of `ringmaster up`."""
