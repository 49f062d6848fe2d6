"""Data contracts shared by the collector and the simulator (which must not import each other)."""
