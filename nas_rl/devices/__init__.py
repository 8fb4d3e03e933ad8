"""Device backends: one device that converts, benchmarks and describes (this computer's CPU, a phone over adb)."""
