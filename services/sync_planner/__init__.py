"""The sync planner: manifests of selfplay data per config, prefetch and safe retention."""
