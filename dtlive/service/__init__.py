"""What every long-running dtlive service needs: a graceful stop, a watchdog, heap housekeeping, process facts.
"""
