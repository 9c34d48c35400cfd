"""The source of truth: event types and the per-issue append-only event log."""
