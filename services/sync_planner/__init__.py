"""The sync planner: manifests of selfplay data per game, prefetch and safe retention."""
