"""Devices and processes: meshes, placements, several processes as one runtime."""
