"""Kafka plumbing: client settings, the embedded broker, producers that survive restarts, dead letters,
the emulator, the results reader and service heartbeats.
"""
