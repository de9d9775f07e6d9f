"""The state manager: provisioning, schema and epoch, snapshots, validation, state API."""
