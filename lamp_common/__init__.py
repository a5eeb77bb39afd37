"""What every layer shares and nothing else: the user-error base class and the record of a run's result.

Imports nothing of ours and no torch, so the engine, the store, the worker and the dashboard can all depend on it
without depending on each other.
"""
